// A small declarative schema for the Istio objects, and the walker that checks a YAML node tree against it while
// building the plain JS value. Structure (types, enums, ranges, unknown and missing fields) lives in the schema;
// rules that relate fields to each other live in each object schema's `rule`, which runs only when the object's
// own subtree is structurally valid (so one typo does not cascade into a page of follow-on errors).
import { isAlias, isMap, isPair, isScalar, isSeq, visit, type Alias, type Document, type LineCounter, type Node, type Pair, type YAMLMap } from "yaml";
import { parseDuration } from "../duration.js";
import { joinPath, offsetPosition, positionOf, pathOf, recordPosition, type Position } from "./locate.js";
import { suggest } from "./syntax.js";

type Message = string | undefined;

interface Common {
  required?: boolean;
  /** Accepted, but reported as a warning with this text. */
  deprecated?: string;
}
export interface StringSchema extends Common {
  type: "string";
  enum?: readonly string[];
  /** Enum input is matched case-insensitively and normalised to the enum's spelling. */
  caseInsensitive?: boolean;
  nonEmpty?: boolean;
  check?: (v: string) => Message;
}
export interface IntSchema extends Common {
  type: "int";
  min: number;
  max: number;
}
export interface NumberSchema extends Common {
  type: "number";
  min: number;
  max: number;
}
export interface BoolSchema extends Common {
  type: "bool";
}
export interface DurationSchema extends Common {
  type: "duration";
  /** Smallest accepted value in milliseconds (0 allows "0s"). */
  minMs: number;
}
export interface ArraySchema extends Common {
  type: "array";
  items: Schema;
  nonEmpty?: boolean;
  /** Scalar items must be distinct. */
  unique?: boolean;
}
export interface MapSchema extends Common {
  type: "map";
  values: Schema;
  key?: (k: string) => Message;
}
export interface ObjectSchema extends Common {
  type: "object";
  fields: Record<string, Schema>;
  /** Real Istio fields vmpilot does not implement: rejected with a clearer message than "unknown field". */
  unsupported?: readonly string[];
  rule?: (value: Record<string, any>, r: RuleContext) => void;
}
/** Accepted and dropped without looking inside (e.g. a Kubernetes `status`). */
export interface IgnoredSchema extends Common {
  type: "ignored";
}
export type Schema =
  | StringSchema
  | IntSchema
  | NumberSchema
  | BoolSchema
  | DurationSchema
  | ArraySchema
  | MapSchema
  | ObjectSchema
  | IgnoredSchema;

export interface RuleContext {
  /** Reports at `target[member]` (its value; its key with `{ key: true }`), or at `target` itself. */
  error(target: object, member: string | number | undefined, message: string, opts?: { key?: boolean }): void;
  warning(target: object, member: string | number | undefined, message: string, opts?: { key?: boolean }): void;
}

export interface RawProblem {
  severity: "error" | "warning";
  message: string;
  line: number;
  column: number;
  field?: string;
}

/** Limits that keep hostile input (alias bombs, enormous documents) from costing more than a bounded walk. */
export const MAX_ALIASES_PER_DOCUMENT = 100;
export const MAX_NODES_PER_DOCUMENT = 200_000;

const INVALID = Symbol("invalid");
const ABSENT = Symbol("absent");
/** Present in the input but deliberately not kept (IgnoredSchema). */
const DROPPED = Symbol("dropped");
type Out = unknown | typeof INVALID | typeof ABSENT | typeof DROPPED;

/** Stops the walk of one object: resource limits, unresolvable aliases. */
class WalkAborted extends Error {
  constructor(
    message: string,
    readonly at?: Position,
  ) {
    super(message);
  }
}

export class Walker implements RuleContext {
  errors = 0;
  private aliases = 0;
  private nodes = 0;
  private anchors?: AnchorIndex;

  constructor(
    private readonly doc: Document,
    private readonly lc: LineCounter,
    private readonly sink: (p: RawProblem) => void,
  ) {}

  pos(node: Node | null | undefined, fallback?: Position): Position {
    const start = node?.range?.[0];
    if (start === undefined) return fallback ?? { line: 1, column: 1 };
    return offsetPosition(this.lc, start);
  }

  report(severity: "error" | "warning", at: Position, message: string, field?: string): void {
    if (severity === "error") this.errors++;
    this.sink({ severity, message, line: at.line, column: at.column, ...(field ? { field } : {}) });
  }

  error(target: object, member: string | number | undefined, message: string, opts: { key?: boolean } = {}): void {
    this.report("error", positionOf(target, member, opts) ?? { line: 1, column: 1 }, message, pathOf(target, member));
  }

  warning(target: object, member: string | number | undefined, message: string, opts: { key?: boolean } = {}): void {
    this.report("warning", positionOf(target, member, opts) ?? { line: 1, column: 1 }, message, pathOf(target, member));
  }

  /**
   * Checks `node` against `schema` and returns the plain value, or undefined if it was invalid or absent (the
   * problems are already reported). Never throws: resource limits become an error on the node.
   */
  check(node: Node | null | undefined, schema: Schema, path: string, at: Position): unknown {
    try {
      const v = this.value(node, schema, path, at);
      return v === INVALID || v === ABSENT || v === DROPPED ? undefined : v;
    } catch (e) {
      if (!(e instanceof WalkAborted)) throw e;
      this.report("error", e.at ?? at, e.message, path);
      return undefined;
    }
  }

  /** `resolve`, reporting a failure as an error (at `at` unless it knows better) instead of throwing. */
  tryResolve(node: Node | null | undefined, at: Position, path: string): Node | null | undefined {
    try {
      return this.resolve(node);
    } catch (e) {
      if (!(e instanceof WalkAborted)) throw e;
      this.report("error", e.at ?? at, e.message, path || undefined);
      return undefined;
    }
  }

  /** The node an alias points to, counting alias uses so that an alias bomb costs a bounded walk. */
  resolve(node: Node | null | undefined): Node | null | undefined {
    if (++this.nodes > MAX_NODES_PER_DOCUMENT) throw new WalkAborted(`document too large: more than ${MAX_NODES_PER_DOCUMENT} nodes`);
    if (node && isAlias(node)) {
      if (++this.aliases > MAX_ALIASES_PER_DOCUMENT) throw new WalkAborted(`too many aliases in one document (more than ${MAX_ALIASES_PER_DOCUMENT})`, this.pos(node));
      this.anchors ??= new AnchorIndex(this.doc);
      const target = this.anchors.resolve(node);
      if (!target) {
        throw new WalkAborted(`unresolved alias *${node.source} (anchors belong to one document; define &${node.source} above this alias in the same document)`, this.pos(node));
      }
      return target;
    }
    return node;
  }

  private value(raw: Node | null | undefined, schema: Schema, path: string, at: Position): Out {
    const node = this.resolve(raw);
    const here = raw ? this.pos(raw, at) : at;
    if (node == null || (isScalar(node) && node.value === null)) {
      return ABSENT; // `field:` and `field: null` mean "not set", as in Kubernetes
    }
    if (schema.deprecated) this.report("warning", here, schema.deprecated, path);
    switch (schema.type) {
      case "ignored":
        return DROPPED;
      case "object":
        return this.object(node, schema, path, here);
      case "array":
        return this.array(node, schema, path, here);
      case "map":
        return this.map(node, schema, path, here);
      default:
        return this.scalar(node, schema, path, here);
    }
  }

  private fail(at: Position, message: string, path: string): typeof INVALID {
    this.report("error", at, message, path);
    return INVALID;
  }

  private scalar(node: Node, schema: Exclude<Schema, ObjectSchema | ArraySchema | MapSchema | IgnoredSchema>, path: string, at: Position): Out {
    if (!isScalar(node)) return this.fail(at, `${describePath(path)}: expected ${expected(schema)}, got ${nodeKind(node)}`, path);
    const v = node.value;
    switch (schema.type) {
      case "string": {
        if (typeof v !== "string") {
          const hint = typeof v === "number" || typeof v === "boolean" ? ` (quote it: "${String(v)}")` : "";
          return this.fail(at, `${describePath(path)}: expected a string, got ${typeName(v)}${hint}`, path);
        }
        let s = v;
        if (schema.enum) {
          const match = schema.enum.find((e) => (schema.caseInsensitive ? e.toUpperCase() === s.toUpperCase() : e === s));
          if (match === undefined) {
            const close = suggest(s, schema.enum);
            return this.fail(at, `${describePath(path)}: invalid value '${s}'${close ? ` (did you mean '${close}'?)` : ""}; allowed: ${schema.enum.join(", ")}`, path);
          }
          s = match;
        }
        if (schema.nonEmpty && s.length === 0) return this.fail(at, `${describePath(path)}: must not be empty`, path);
        const msg = schema.check?.(s);
        if (msg) return this.fail(at, `${describePath(path)}: ${msg}`, path);
        return s;
      }
      case "int":
      case "number": {
        if (typeof v !== "number" || !Number.isFinite(v) || (schema.type === "int" && !Number.isInteger(v))) {
          const hint = typeof v === "string" && /^-?\d+(\.\d+)?$/.test(v) ? " (remove the quotes)" : "";
          return this.fail(at, `${describePath(path)}: expected ${expected(schema)}, got ${typeName(v)} ${render(v)}${hint}`, path);
        }
        if (v < schema.min || v > schema.max) return this.fail(at, `${describePath(path)}: ${render(v)} is out of range ${schema.min}..${schema.max}`, path);
        return v;
      }
      case "bool":
        if (typeof v !== "boolean") return this.fail(at, `${describePath(path)}: expected true or false, got ${typeName(v)} ${render(v)}`, path);
        return v;
      case "duration": {
        if (typeof v !== "string") {
          const hint = typeof v === "number" ? ` (write a unit, e.g. "${v}s")` : "";
          return this.fail(at, `${describePath(path)}: expected a duration like "1.5s" or "500ms", got ${typeName(v)} ${render(v)}${hint}`, path);
        }
        const ms = parseDuration(v);
        if (ms === undefined) return this.fail(at, `${describePath(path)}: invalid duration '${v}' (use e.g. "1.5s", "500ms", "1m30s")`, path);
        if (!Number.isInteger(ms)) return this.fail(at, `${describePath(path)}: '${v}' is finer than millisecond precision`, path);
        if (ms < schema.minMs) return this.fail(at, `${describePath(path)}: must be at least ${schema.minMs}ms`, path);
        return v;
      }
    }
  }

  /**
   * The mapping's pairs with YAML merge keys (`<<: *base`, `<<: [*a, *b]`) expanded, as Kubernetes' YAML reader
   * does: the mapping's own keys win over merged ones, and earlier merged mappings over later ones. Merged pairs
   * keep their own positions, so problems point at where the value was actually written.
   */
  private pairs(node: YAMLMap, at: Position, path: string): Pair[] {
    const own: Pair[] = [];
    const merged: Pair[] = [];
    for (const pair of node.items as Pair[]) {
      const key = this.resolve(pair.key as Node);
      if (!(isScalar(key) && key.value === "<<" && key.type === "PLAIN")) {
        own.push(pair);
        continue;
      }
      const value = this.resolve(pair.value as Node);
      const sources = isSeq(value) ? value.items.map((i) => this.resolve(i as Node)) : [value];
      if (!sources.every((src) => isMap(src))) {
        this.fail(this.pos(pair.value as Node, at), `${describePath(path)}: merge key '<<' needs a mapping or a list of mappings`, joinPath(path, "<<"));
        continue;
      }
      for (const src of sources) merged.push(...this.pairs(src as YAMLMap, at, path));
    }
    if (merged.length === 0) return own;
    const keyOf = (p: Pair) => {
      const k = this.resolve(p.key as Node);
      return isScalar(k) ? String(k.value) : undefined;
    };
    const seen = new Set(own.map(keyOf));
    const out = [...own];
    for (const p of merged) {
      const k = keyOf(p);
      if (k !== undefined && seen.has(k)) continue;
      seen.add(k);
      out.push(p);
    }
    return out;
  }

  private array(node: Node, schema: ArraySchema, path: string, at: Position): Out {
    if (!isSeq(node)) return this.fail(at, `${describePath(path)}: expected a list, got ${nodeKind(node)}`, path);
    const out: unknown[] = [];
    const rec = recordPosition(out, at, path);
    const errorsBefore = this.errors;
    const seen = new Map<unknown, number>();
    node.items.forEach((item, i) => {
      const itemPath = joinPath(path, i);
      const itemAt = this.pos(item as Node, at);
      const v = this.value(item as Node, schema.items, itemPath, itemAt);
      if (v === ABSENT) {
        this.fail(itemAt, `${describePath(itemPath)}: empty list item`, itemPath);
        return;
      }
      if (v === INVALID || v === DROPPED) return;
      if (schema.unique && (typeof v === "string" || typeof v === "number")) {
        const first = seen.get(v);
        if (first !== undefined) {
          this.fail(itemAt, `${describePath(itemPath)}: duplicate value '${v}' (also at ${describePath(joinPath(path, first))})`, itemPath);
          return;
        }
        seen.set(v, i);
      }
      rec.values.set(out.length, itemAt);
      out.push(v);
    });
    if (this.errors > errorsBefore) return INVALID;
    if (schema.nonEmpty && out.length === 0) return this.fail(at, `${describePath(path)}: must not be empty`, path);
    return out;
  }

  private map(node: Node, schema: MapSchema, path: string, at: Position): Out {
    if (!isMap(node)) return this.fail(at, `${describePath(path)}: expected a mapping, got ${nodeKind(node)}`, path);
    const out: Record<string, unknown> = {};
    const rec = recordPosition(out, at, path);
    const errorsBefore = this.errors;
    for (const pair of this.pairs(node, at, path)) {
      const keyNode = this.resolve(pair.key as Node);
      const keyAt = this.pos(pair.key as Node, at);
      if (!isScalar(keyNode) || (typeof keyNode.value !== "string" && typeof keyNode.value !== "number")) {
        this.fail(keyAt, `${describePath(path)}: keys must be strings`, path);
        continue;
      }
      const key = String(keyNode.value);
      const entryPath = joinPath(path, key);
      const msg = schema.key?.(key);
      if (msg) {
        this.fail(keyAt, `${describePath(entryPath)}: ${msg}`, entryPath);
        continue;
      }
      const valueAt = pair.value ? this.pos(pair.value as Node, keyAt) : keyAt;
      const v = this.value(pair.value as Node, schema.values, entryPath, valueAt);
      if (v === INVALID || v === DROPPED) continue;
      if (v === ABSENT) {
        this.fail(valueAt, `${describePath(entryPath)}: missing value`, entryPath);
        continue;
      }
      // defineProperty: a key named `__proto__` must stay data, not rewire the prototype
      Object.defineProperty(out, key, { value: v, enumerable: true, writable: true, configurable: true });
      rec.keys.set(key, keyAt);
      rec.values.set(key, valueAt);
    }
    if (this.errors > errorsBefore) return INVALID;
    return out;
  }

  private object(node: Node, schema: ObjectSchema, path: string, at: Position): Out {
    if (!isMap(node)) return this.fail(at, `${describePath(path)}: expected a mapping, got ${nodeKind(node)}`, path);
    const out: Record<string, unknown> = {};
    const rec = recordPosition(out, at, path);
    const errorsBefore = this.errors;
    const known = Object.keys(schema.fields);
    const present = new Set<string>();
    const empty = new Map<string, Position>(); // `key:` with no value
    for (const pair of this.pairs(node, at, path)) {
      if (!isPair(pair)) continue;
      const keyNode = this.resolve(pair.key as Node);
      const keyAt = this.pos(pair.key as Node, at);
      if (!isScalar(keyNode) || typeof keyNode.value !== "string") {
        this.fail(keyAt, `${describePath(path)}: field names must be strings, got ${keyNode ? nodeKind(keyNode) : "nothing"}`, path);
        continue;
      }
      const key = keyNode.value;
      const fieldPath = joinPath(path, key);
      const fieldSchema = Object.prototype.hasOwnProperty.call(schema.fields, key) ? schema.fields[key] : undefined;
      if (!fieldSchema) {
        if (schema.unsupported?.includes(key)) {
          this.fail(keyAt, `${describePath(fieldPath)}: field '${key}' is not supported by vmpilot`, fieldPath);
        } else {
          const close = suggest(key, known);
          this.fail(keyAt, `unknown field '${key}' in ${describePath(path)}${close ? `; did you mean '${close}'?` : ""}`, fieldPath);
        }
        continue;
      }
      const valueAt = pair.value ? this.pos(pair.value as Node, keyAt) : keyAt;
      const v = this.value(pair.value as Node, fieldSchema, fieldPath, valueAt);
      rec.keys.set(key, keyAt);
      rec.values.set(key, valueAt);
      if (v !== ABSENT) present.add(key);
      else empty.set(key, keyAt);
      if (v !== INVALID && v !== ABSENT && v !== DROPPED) out[key] = v;
    }
    for (const [name, f] of Object.entries(schema.fields)) {
      if (f.required && !present.has(name)) {
        const keyAt = empty.get(name);
        if (keyAt) this.fail(keyAt, `${describePath(joinPath(path, name))}: required field has no value`, joinPath(path, name));
        else this.fail(at, `${describePath(path)}: missing required field '${name}'`, joinPath(path, name));
      }
    }
    if (this.errors > errorsBefore) return INVALID;
    schema.rule?.(out, this);
    return this.errors > errorsBefore ? INVALID : out;
  }
}

/**
 * Alias resolution in one pass over the document. yaml's own `Alias.resolve` walks the whole document on every
 * call, which turns a large document with many aliases into quadratic work.
 */
class AnchorIndex {
  private readonly order = new Map<Node, number>();
  private readonly byName = new Map<string, { at: number; node: Node }[]>();

  constructor(doc: Document) {
    let i = 0;
    visit(doc, {
      Node: (_key, node) => {
        if (isAlias(node)) this.order.set(node, i++);
        else if ((isScalar(node) || isMap(node) || isSeq(node)) && node.anchor) {
          const list = this.byName.get(node.anchor) ?? [];
          list.push({ at: i, node });
          this.byName.set(node.anchor, list);
          this.order.set(node, i++);
        }
      },
    });
  }

  /** The last node anchored `&source` before the alias, as YAML defines it. */
  resolve(alias: Alias): Node | undefined {
    const at = this.order.get(alias);
    const list = this.byName.get(alias.source);
    if (at === undefined || !list) return undefined;
    let lo = 0;
    let hi = list.length - 1;
    let found: Node | undefined;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (list[mid]!.at < at) {
        found = list[mid]!.node;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    return found;
  }
}

function describePath(path: string): string {
  return path || "document";
}

function expected(schema: Schema): string {
  switch (schema.type) {
    case "string":
      return schema.enum ? `one of ${schema.enum.join(", ")}` : "a string";
    case "int":
      return `an integer (${schema.min}..${schema.max})`;
    case "number":
      return `a number (${schema.min}..${schema.max})`;
    case "bool":
      return "true or false";
    case "duration":
      return 'a duration like "1.5s"';
    case "array":
      return "a list";
    case "map":
    case "object":
      return "a mapping";
    case "ignored":
      return "anything";
  }
}

function nodeKind(node: Node): string {
  if (isMap(node)) return "a mapping";
  if (isSeq(node)) return "a list";
  if (isScalar(node)) return `${typeName(node.value)} ${render(node.value)}`;
  return "an unsupported node";
}

function typeName(v: unknown): string {
  if (v === null) return "null";
  if (typeof v === "number") return Number.isInteger(v) ? "integer" : "number";
  if (typeof v === "bigint") return "integer";
  return typeof v;
}

function render(v: unknown): string {
  const s = typeof v === "string" ? JSON.stringify(v) : String(v);
  return s.length > 40 ? `${s.slice(0, 37)}...` : s;
}

// ---- schema builders (keep the kind modules readable) ----

export const str = (o: Omit<StringSchema, "type"> = {}): StringSchema => ({ type: "string", ...o });
export const int = (min: number, max: number, o: Omit<IntSchema, "type" | "min" | "max"> = {}): IntSchema => ({ type: "int", min, max, ...o });
export const num = (min: number, max: number, o: Omit<NumberSchema, "type" | "min" | "max"> = {}): NumberSchema => ({ type: "number", min, max, ...o });
export const bool = (o: Omit<BoolSchema, "type"> = {}): BoolSchema => ({ type: "bool", ...o });
export const duration = (minMs = 1, o: Omit<DurationSchema, "type" | "minMs"> = {}): DurationSchema => ({ type: "duration", minMs, ...o });
export const list = (items: Schema, o: Omit<ArraySchema, "type" | "items"> = {}): ArraySchema => ({ type: "array", items, ...o });
export const map = (values: Schema, o: Omit<MapSchema, "type" | "values"> = {}): MapSchema => ({ type: "map", values, ...o });
export const obj = (fields: Record<string, Schema>, o: Omit<ObjectSchema, "type" | "fields"> = {}): ObjectSchema => ({ type: "object", fields, ...o });
export const ignored = (): IgnoredSchema => ({ type: "ignored" });
export function req<S extends Schema>(s: S): S {
  return { ...s, required: true };
}

export const UINT32_MAX = 4_294_967_295;
export const INT32_MAX = 2_147_483_647;
