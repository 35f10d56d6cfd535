// A small declarative schema for the agent's YAML: each field knows its type, so the walker can report the
// exact file:line:column of a wrong value or an unknown key (unknown keys are errors: they are usually typos),
// and the environment-override table is derived from the same description instead of kept by hand.
import { isMap, isScalar, isSeq, LineCounter, type Document, type Node as YamlNode } from "yaml";
// Go/Istio duration syntax, shared with the mesh config so "1m30s" means the same thing everywhere.
import { parseDuration } from "@vmpilot/registry/duration";

export type FieldSchema =
  | { type: "string"; nonEmpty?: boolean }
  | { type: "int"; min?: number; max?: number }
  | { type: "bool" }
  | { type: "duration" }
  | { type: "enum"; values: readonly string[] }
  | { type: "stringList" }
  | { type: "intList"; min?: number; max?: number }
  | { type: "stringMap" }
  | { type: "list"; of: ObjectSchema }
  | ObjectSchema;

export interface ObjectSchema {
  type: "object";
  fields: Record<string, FieldSchema>;
}

export interface Problem {
  file: string;
  line: number;
  column: number;
  /** Dotted path of the offending key, e.g. `probe.httpGet.port`. */
  field: string;
  message: string;
}

export class AgentConfigError extends Error {
  constructor(readonly problems: readonly Problem[]) {
    super(problems.map((p) => `${p.file}:${p.line}:${p.column}: error: ${p.message}`).join("\n"));
    this.name = "AgentConfigError";
  }
}

interface Walk {
  file: string;
  lines: LineCounter;
  problems: Problem[];
}

function at(w: Walk, node: YamlNode | null | undefined, field: string, message: string): void {
  const offset = node?.range?.[0] ?? 0;
  const pos = w.lines.linePos(offset);
  w.problems.push({ file: w.file, line: pos.line, column: pos.col, field, message });
}

function scalarValue(w: Walk, node: YamlNode | null, field: string, schema: FieldSchema): unknown {
  if (!isScalar(node)) {
    at(w, node, field, `${field}: expected ${describeSchema(schema)}, got ${isMap(node) ? "a mapping" : isSeq(node) ? "a list" : "nothing"}`);
    return undefined;
  }
  return node.value;
}

function describeSchema(s: FieldSchema): string {
  switch (s.type) {
    case "enum":
      return `one of ${s.values.join(", ")}`;
    case "int":
      return "an integer";
    case "duration":
      return 'a duration like "30s" or "24h"';
    case "stringList":
      return "a list of strings";
    case "intList":
      return "a list of integers";
    case "stringMap":
      return "a mapping of strings to strings";
    case "list":
      return "a list";
    case "object":
      return "a mapping";
    default:
      return `a ${s.type}`;
  }
}

/** Checks one scalar against its schema (shared by the YAML walker and the environment overrides). */
export function checkScalar(schema: FieldSchema, raw: unknown, field: string): { value?: unknown; error?: string } {
  switch (schema.type) {
    case "string":
      if (typeof raw === "number" || typeof raw === "boolean") raw = String(raw);
      if (typeof raw !== "string") return { error: `${field}: expected a string` };
      if (schema.nonEmpty && raw.trim() === "") return { error: `${field}: must not be empty` };
      return { value: raw };
    case "int": {
      const n = typeof raw === "string" && /^-?\d+$/.test(raw.trim()) ? Number(raw) : raw;
      if (typeof n !== "number" || !Number.isInteger(n)) return { error: `${field}: expected an integer, got ${JSON.stringify(raw)}` };
      if (schema.min !== undefined && n < schema.min) return { error: `${field}: ${n} is below the minimum ${schema.min}` };
      if (schema.max !== undefined && n > schema.max) return { error: `${field}: ${n} is above the maximum ${schema.max}` };
      return { value: n };
    }
    case "bool":
      if (typeof raw === "boolean") return { value: raw };
      if (raw === "true" || raw === "false") return { value: raw === "true" };
      return { error: `${field}: expected true or false, got ${JSON.stringify(raw)}` };
    case "duration": {
      const ms = typeof raw === "string" ? parseDuration(raw) : undefined;
      if (ms === undefined) return { error: `${field}: expected a duration like "30s" or "24h", got ${JSON.stringify(raw)}` };
      return { value: ms };
    }
    case "enum":
      if (typeof raw !== "string" || !schema.values.includes(raw)) return { error: `${field}: expected one of ${schema.values.join(", ")}, got ${JSON.stringify(raw)}` };
      return { value: raw };
    default:
      return { error: `${field}: not a scalar field` };
  }
}

function walk(w: Walk, node: YamlNode | null, schema: FieldSchema, field: string): unknown {
  switch (schema.type) {
    case "object": {
      if (!isMap(node)) {
        at(w, node, field, `${field || "config"}: expected a mapping`);
        return undefined;
      }
      const out: Record<string, unknown> = {};
      for (const pair of node.items) {
        const keyNode = pair.key as YamlNode | null;
        const key = isScalar(keyNode) ? String(keyNode.value) : "";
        const path = field ? `${field}.${key}` : key;
        const sub = schema.fields[key];
        if (!sub) {
          const known = Object.keys(schema.fields).join(", ");
          at(w, keyNode, path, `unknown field "${path}" (known here: ${known})`);
          continue;
        }
        const v = walk(w, pair.value as YamlNode | null, sub, path);
        if (v !== undefined) out[key] = v;
      }
      return out;
    }
    case "list":
    case "stringList":
    case "intList": {
      if (!isSeq(node)) {
        at(w, node, field, `${field}: expected ${describeSchema(schema)}`);
        return undefined;
      }
      const items: unknown[] = [];
      node.items.forEach((item, i) => {
        const path = `${field}[${i}]`;
        const itemSchema: FieldSchema = schema.type === "list" ? schema.of : schema.type === "stringList" ? { type: "string", nonEmpty: true } : { type: "int", ...(schema.min !== undefined ? { min: schema.min } : {}), ...(schema.max !== undefined ? { max: schema.max } : {}) };
        const v = walk(w, item as YamlNode | null, itemSchema, path);
        if (v !== undefined) items.push(v);
      });
      return items;
    }
    case "stringMap": {
      if (!isMap(node)) {
        at(w, node, field, `${field}: expected a mapping of strings to strings`);
        return undefined;
      }
      const out: Record<string, string> = {};
      for (const pair of node.items) {
        const k = isScalar(pair.key) ? String(pair.key.value) : "";
        const v = pair.value as YamlNode | null;
        if (!isScalar(v) || (typeof v.value !== "string" && typeof v.value !== "number" && typeof v.value !== "boolean")) {
          at(w, v ?? (pair.key as YamlNode), `${field}.${k}`, `${field}.${k}: expected a string value`);
          continue;
        }
        out[k] = String(v.value);
      }
      return out;
    }
    default: {
      const raw = scalarValue(w, node, field, schema);
      if (raw === undefined) return undefined;
      const r = checkScalar(schema, raw, field);
      if (r.error) at(w, node, field, r.error);
      return r.value;
    }
  }
}

/** Validates a parsed YAML document against the schema; positions come from `lines`. */
export function readDocument(doc: Document, lines: LineCounter, file: string, schema: ObjectSchema): { value: Record<string, unknown>; problems: Problem[] } {
  const w: Walk = { file, lines, problems: [] };
  for (const e of doc.errors) {
    const pos = lines.linePos(e.pos[0]);
    w.problems.push({ file, line: pos.line, column: pos.col, field: "", message: e.message.split("\n")[0]! });
  }
  if (w.problems.length > 0) return { value: {}, problems: w.problems };
  if (doc.contents === null) return { value: {}, problems: [] };
  const value = (walk(w, doc.contents as YamlNode, schema, "") ?? {}) as Record<string, unknown>;
  return { value, problems: w.problems };
}

/** Every scalar (or string-list / string-map) leaf of the schema with its dotted path. */
export function leaves(schema: ObjectSchema, prefix = ""): { path: string; schema: FieldSchema }[] {
  const out: { path: string; schema: FieldSchema }[] = [];
  for (const [key, sub] of Object.entries(schema.fields)) {
    const path = prefix ? `${prefix}.${key}` : key;
    if (sub.type === "object") out.push(...leaves(sub, path));
    else if (sub.type !== "list") out.push({ path, schema: sub });
  }
  return out;
}

/** `controlPlane.tokenFile` -> `CONTROL_PLANE_TOKEN_FILE`. */
export function envSuffix(path: string): string {
  return path
    .split(".")
    .map((seg) => seg.replace(/([a-z0-9])([A-Z])/g, "$1_$2").toUpperCase())
    .join("_");
}
