// Parsing one config file: multi-document YAML or JSON (JSON is YAML, so one parser gives positions for both),
// a JSON array of objects, or a Kubernetes `v1 List`. Every problem carries the line and column of the node it is
// about. A document with any error contributes no objects at all: half a document is never applied.
import { isMap, isScalar, isSeq, LineCounter, parseAllDocuments, type Document, type Node } from "yaml";
import { API_VERSIONS, KINDS, type Kind } from "../api.js";
import type { AnyConfig, ConfigProblem } from "../model.js";
import { destinationRuleSpec } from "./kinds/destinationRule.js";
import { gatewaySpec, sidecarSpec } from "./kinds/gateway.js";
import { serviceEntrySpec } from "./kinds/serviceEntry.js";
import { virtualServiceSpec } from "./kinds/virtualService.js";
import { workloadEntrySpec, workloadGroupSpec } from "./kinds/workload.js";
import { offsetPosition, positionOf, type Position } from "./locate.js";
import { ignored, map, obj, req, str, Walker, type ObjectSchema, type RawProblem, type Schema } from "./schema.js";
import * as syn from "./syntax.js";

export { positionOf, pathOf, type Position } from "./locate.js";
export { parseDuration } from "../duration.js";

export interface ParseResult {
  objects: AnyConfig[];
  problems: ConfigProblem[];
}

/** Files larger than this are rejected unread: config is small, and YAML parsing cost grows with size. */
export const MAX_FILE_BYTES = 4 * 1024 * 1024;
/** Deeper nesting than any Istio object needs; guards the recursive YAML composer against stack exhaustion. */
export const MAX_NESTING = 64;

const SPECS: Record<Kind, () => ObjectSchema> = {
  ServiceEntry: serviceEntrySpec,
  WorkloadEntry: workloadEntrySpec,
  WorkloadGroup: workloadGroupSpec,
  VirtualService: virtualServiceSpec,
  DestinationRule: destinationRuleSpec,
  Gateway: gatewaySpec,
  Sidecar: sidecarSpec,
};

const ENVELOPE_ONLY = objectSchema(ignored());
// Built once: the schemas are immutable descriptions.
const OBJECT_SCHEMAS = new Map<Kind, ObjectSchema>(KINDS.map((k) => [k, objectSchema(SPECS[k]())]));

function objectSchema(spec: Schema): ObjectSchema {
  return obj({
    apiVersion: req(str()),
    kind: req(str()),
    metadata: req(
      obj({
        name: req(str({ check: syn.dns1123Label })),
        namespace: str({ check: syn.dns1123Label }),
        labels: map(str({ check: syn.labelValue }), { key: syn.labelKey }),
        annotations: map(str(), { key: syn.labelKey }),
        // Server-populated Kubernetes fields, present when objects are exported with `kubectl get -o yaml`.
        uid: ignored(),
        resourceVersion: ignored(),
        generation: ignored(),
        creationTimestamp: ignored(),
        managedFields: ignored(),
      }),
    ),
    spec: req(spec),
    status: ignored(),
  });
}

/** Parse one file's text (multi-document YAML, or JSON; a JSON array or a v1 `List` of items is fine too). Never throws. */
export function parseDocuments(file: string, text: string): ParseResult {
  try {
    return parse(file, text);
  } catch (e) {
    // Only a bug can get here; report it against the file rather than take the caller down.
    return { objects: [], problems: [problem(file, "error", { line: 1, column: 1 }, `internal error while parsing: ${(e as Error)?.message ?? e}`)] };
  }
}

function parse(file: string, text: string): ParseResult {
  const objects: AnyConfig[] = [];
  const problems: ConfigProblem[] = [];
  if (text.length > MAX_FILE_BYTES || Buffer.byteLength(text, "utf8") > MAX_FILE_BYTES) {
    problems.push(problem(file, "error", { line: 1, column: 1 }, `file is larger than ${MAX_FILE_BYTES / 1024 / 1024} MiB; split it up`));
    return { objects, problems };
  }
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  const deep = nestingTooDeep(text);
  if (deep) {
    problems.push(problem(file, "error", deep, `nesting deeper than ${MAX_NESTING} levels`));
    return { objects, problems };
  }
  const lc = new LineCounter();
  const docs = parseAllDocuments(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true, strict: true });
  const list = Array.isArray(docs) ? docs : [];
  for (const doc of list) {
    const docProblems: ConfigProblem[] = [];
    const docObjects = parseDocument(file, doc, lc, docProblems);
    problems.push(...docProblems);
    if (!docProblems.some((p) => p.severity === "error")) objects.push(...docObjects);
  }
  return { objects, problems };
}

function parseDocument(file: string, doc: Document, lc: LineCounter, out: ConfigProblem[]): AnyConfig[] {
  for (const e of doc.errors) out.push(problem(file, "error", offsetPosition(lc, e.pos[0]), yamlMessage(e.message)));
  for (const w of doc.warnings) out.push(problem(file, "warning", offsetPosition(lc, w.pos[0]), yamlMessage(w.message)));
  if (doc.errors.length > 0) return [];
  const raw: RawProblem[] = [];
  const walker = new Walker(doc, lc, (p) => raw.push(p));
  const objects: AnyConfig[] = [];
  const flush = (meta: { kind?: string; name?: string; namespace?: string }) => {
    for (const p of raw.splice(0)) out.push({ ...p, file, ...definedOnly(meta) });
  };
  const contents = walker.tryResolve(doc.contents as Node | null, walker.pos(doc.contents as Node), "");
  if (raw.length > 0) {
    flush({});
    return [];
  }
  if (contents == null || (isScalar(contents) && contents.value === null)) return []; // empty document
  const start = walker.pos(contents);

  let items: { node: Node; path: string }[];
  if (isSeq(contents)) {
    items = contents.items.map((n, i) => ({ node: n as Node, path: `[${i}]` }));
  } else if (isMap(contents) && scalarField(contents, "kind") === "List") {
    items = listItems(contents, walker, start);
    flush({});
  } else {
    items = [{ node: contents, path: "" }];
  }
  for (const item of items) {
    const obj = parseObject(item.node, item.path, walker, start);
    flush(obj.meta);
    if (obj.object) {
      if (obj.object.origin.type === "file") obj.object.origin.file = file;
      objects.push(obj.object);
    }
  }
  return objects;
}

/** `apiVersion: v1, kind: List, items: [...]`, as `kubectl get -o yaml` writes several objects. */
function listItems(contents: Node, walker: Walker, start: Position): { node: Node; path: string }[] {
  const items: { node: Node; path: string }[] = [];
  walker.check(contents, obj({ apiVersion: req(str({ enum: ["v1"] })), kind: req(str()), metadata: ignored(), items: req(ignored()) }), "", start);
  const node = walker.tryResolve((contents as unknown as { get(k: string, keep: true): Node | undefined }).get("items", true), start, "items");
  if (isSeq(node)) node.items.forEach((n, i) => items.push({ node: n as Node, path: `items[${i}]` }));
  else if (node) walker.report("error", walker.pos(node, start), "items: expected a list", "items");
  return items;
}

interface ParsedObject {
  object?: AnyConfig;
  meta: { kind?: string; name?: string; namespace?: string };
}

function parseObject(raw: Node, path: string, walker: Walker, docStart: Position): ParsedObject {
  const at = walker.pos(raw, docStart);
  const node = walker.tryResolve(raw, at, path);
  if (node === undefined) return { meta: {} };
  if (!isMap(node)) {
    walker.report("error", at, `${path || "document"}: expected an object with apiVersion, kind, metadata and spec`, path || undefined);
    return { meta: {} };
  }
  const kind = scalarField(node, "kind");
  const apiVersion = scalarField(node, "apiVersion");
  const name = metadataField(node, "name");
  const meta = { kind: typeof kind === "string" ? kind : undefined, name, namespace: metadataField(node, "namespace") ?? (name === undefined ? undefined : "default") };
  if (typeof kind === "string" && !(KINDS as readonly string[]).includes(kind)) {
    const close = syn.suggest(kind, KINDS);
    const kindAt = walker.pos(node.get("kind", true) as Node, at);
    if (close) walker.report("error", kindAt, `unknown kind '${kind}'; did you mean '${close}'?`, pathJoin(path, "kind"));
    else walker.report("warning", kindAt, `unknown kind '${kind}'${typeof apiVersion === "string" ? ` (${apiVersion})` : ""} skipped; vmpilot reads ${KINDS.join(", ")}`, pathJoin(path, "kind"));
    return { meta };
  }
  if (typeof kind === "string" && typeof apiVersion === "string" && !(API_VERSIONS as readonly string[]).includes(apiVersion)) {
    const avAt = walker.pos(node.get("apiVersion", true) as Node, at);
    walker.report("error", avAt, `apiVersion '${apiVersion}' is not supported for ${kind}; use one of ${API_VERSIONS.join(", ")}`, pathJoin(path, "apiVersion"));
    return { meta };
  }
  // Without a usable kind only the envelope can be checked; the spec would be all "unknown fields".
  const schema = typeof kind === "string" ? OBJECT_SCHEMAS.get(kind as Kind)! : ENVELOPE_ONLY;
  const value = walker.check(node, schema, path, at) as Record<string, any> | undefined;
  if (!value || typeof kind !== "string") return { meta };
  const metadata = value.metadata as Record<string, any>;
  metadata.namespace ??= "default";
  meta.namespace = metadata.namespace;
  applyDefaults(kind as Kind, value.spec);
  const origin = { type: "file" as const, file: "", line: at.line, column: at.column };
  const object = { kind, apiVersion: value.apiVersion, metadata, spec: value.spec, origin } as AnyConfig;
  return { object, meta };
}

function applyDefaults(kind: Kind, spec: Record<string, any>): void {
  if (kind === "ServiceEntry") {
    spec.location ??= "MESH_EXTERNAL";
    spec.resolution ??= "NONE";
  }
}

function scalarField(node: { get(k: string, keep: true): unknown }, key: string): unknown {
  const v = node.get(key, true);
  return isScalar(v) ? v.value : undefined;
}

function metadataField(node: { get(k: string, keep: true): unknown }, key: string): string | undefined {
  const m = node.get("metadata", true);
  if (!isMap(m)) return undefined;
  const v = scalarField(m, key);
  return typeof v === "string" ? v : undefined;
}

function pathJoin(base: string, key: string): string {
  return base ? `${base}.${key}` : key;
}

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

function problem(file: string, severity: "error" | "warning", at: Position, message: string): ConfigProblem {
  return { severity, message, file, line: at.line, column: at.column };
}

/** yaml's messages sometimes end with a source excerpt; keep the first line. */
function yamlMessage(m: string): string {
  return `YAML: ${m.split("\n")[0]!.replace(/ at line \d+, column \d+:?$/, "")}`;
}

/**
 * Rejects flow or block nesting deeper than MAX_NESTING before the (recursive) YAML composer sees it.
 * Conservative: counts `[`/`{` outside quotes and indentation steps of block collections.
 */
function nestingTooDeep(text: string): Position | undefined {
  let depth = 0;
  let line = 1;
  let col = 0;
  let quote: string | undefined;
  let comment = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    col++;
    if (c === "\n") {
      line++;
      col = 0;
      comment = false;
      continue;
    }
    if (comment) continue;
    if (quote) {
      if (c === "\\" && quote === '"') i++;
      else if (c === quote) quote = undefined;
      continue;
    }
    if (c === "#" && (i === 0 || /\s/.test(text[i - 1]!))) comment = true;
    else if ((c === '"' || c === "'") && (i === 0 || /[\s\[{,:]/.test(text[i - 1]!))) quote = c;
    else if (c === "[" || c === "{") {
      if (++depth > MAX_NESTING) return { line, column: col };
    } else if (c === "]" || c === "}") depth = Math.max(0, depth - 1);
  }
  // Block nesting: indentation grows by at least one column per level, and `- - - x` nests on one line.
  let indentLine = 0;
  const dashes = new RegExp(`(?:-[ \\t]+){${MAX_NESTING + 1}}`);
  for (const l of text.split("\n")) {
    indentLine++;
    const m = /^([ -]*)\S/.exec(l);
    if (m && m[1]!.length > MAX_NESTING * 2 * 4) return { line: indentLine, column: 1 };
    const d = dashes.exec(l);
    if (d) return { line: indentLine, column: d.index + 1 };
  }
  return undefined;
}
