// Strict proto3 JSON <-> protobuf for the Envoy API.
//
// Generators and bootstraps are written as proto3 JSON (what Envoy reads from a bootstrap file and prints in
// config_dump): snake_case field names, `{"@type": ...}` for Any, "1.5s" durations, plain values for wrappers.
// protobufjs's own fromObject silently drops unknown fields and knows none of those JSON forms, so a
// hand-built object with a typo or a wrong shape would encode "fine" and mean something else. This codec
// rejects every unknown field, bad enum, out-of-range integer and doubly-set oneof with the path to it.
import protobuf from "protobufjs";
import { envoyRoot, TYPE_PREFIX, typeNameOfUrl } from "./protos.js";

export class ProtoJsonError extends Error {
  constructor(
    readonly path: string,
    readonly reason: string,
  ) {
    super(`${path || "<root>"}: ${reason}`);
    this.name = "ProtoJsonError";
  }
}

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type Plain = Record<string, unknown>;

const WRAPPERS: Record<string, string> = {
  ".google.protobuf.DoubleValue": "double",
  ".google.protobuf.FloatValue": "float",
  ".google.protobuf.Int64Value": "int64",
  ".google.protobuf.UInt64Value": "uint64",
  ".google.protobuf.Int32Value": "int32",
  ".google.protobuf.UInt32Value": "uint32",
  ".google.protobuf.BoolValue": "bool",
  ".google.protobuf.StringValue": "string",
  ".google.protobuf.BytesValue": "bytes",
};

/** Types whose JSON form is not an object of their fields; inside Any they sit under "value". */
const SPECIAL_JSON = new Set([
  ...Object.keys(WRAPPERS),
  ".google.protobuf.Duration",
  ".google.protobuf.Timestamp",
  ".google.protobuf.Struct",
  ".google.protobuf.Value",
  ".google.protobuf.ListValue",
  ".google.protobuf.FieldMask",
]);

const INT_RANGES: Record<string, [number, number]> = {
  int32: [-2147483648, 2147483647],
  sint32: [-2147483648, 2147483647],
  sfixed32: [-2147483648, 2147483647],
  uint32: [0, 4294967295],
  fixed32: [0, 4294967295],
};
const INT64 = new Set(["int64", "sint64", "sfixed64"]);
const UINT64 = new Set(["uint64", "fixed64"]);

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function describe(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  return typeof v === "object" ? "an object" : `${typeof v} ${JSON.stringify(v)}`;
}

function lookupAnyType(typeUrl: unknown, p: string): protobuf.Type {
  if (typeof typeUrl !== "string" || !typeUrl.includes("/")) throw new ProtoJsonError(p, `Any needs "@type" as a type URL, got ${describe(typeUrl)}`);
  try {
    return envoyRoot().lookupType(typeNameOfUrl(typeUrl));
  } catch {
    throw new ProtoJsonError(p, `unknown type ${JSON.stringify(typeUrl)} in "@type"`);
  }
}

function scalarFromJson(kind: string, v: unknown, p: string): unknown {
  switch (kind) {
    case "string":
      if (typeof v !== "string") throw new ProtoJsonError(p, `expected a string, got ${describe(v)}`);
      return v;
    case "bool":
      if (typeof v !== "boolean") throw new ProtoJsonError(p, `expected a boolean, got ${describe(v)}`);
      return v;
    case "double":
    case "float":
      if (typeof v === "number") return v;
      if (v === "NaN") return NaN;
      if (v === "Infinity") return Infinity;
      if (v === "-Infinity") return -Infinity;
      if (typeof v === "string" && v.trim() !== "" && Number.isFinite(Number(v))) return Number(v);
      throw new ProtoJsonError(p, `expected a number, got ${describe(v)}`);
    case "bytes":
      if (typeof v !== "string" || !/^[A-Za-z0-9+/_-]*={0,2}$/.test(v)) throw new ProtoJsonError(p, `expected base64 bytes, got ${describe(v)}`);
      return Buffer.from(v, v.includes("-") || v.includes("_") ? "base64url" : "base64");
  }
  const range = INT_RANGES[kind];
  if (range) {
    const n = typeof v === "string" && /^-?\d+$/.test(v) ? Number(v) : v;
    if (typeof n !== "number" || !Number.isInteger(n)) throw new ProtoJsonError(p, `expected an integer (${kind}), got ${describe(v)}`);
    if (n < range[0] || n > range[1]) throw new ProtoJsonError(p, `${n} is out of range for ${kind}`);
    return n;
  }
  if (INT64.has(kind) || UINT64.has(kind)) {
    const s = typeof v === "number" && Number.isSafeInteger(v) ? String(v) : v;
    if (typeof s !== "string" || !/^-?\d+$/.test(s)) throw new ProtoJsonError(p, `expected an integer (${kind}), got ${describe(v)}`);
    const big = BigInt(s);
    const [lo, hi] = UINT64.has(kind) ? [0n, 2n ** 64n - 1n] : [-(2n ** 63n), 2n ** 63n - 1n];
    if (big < lo || big > hi) throw new ProtoJsonError(p, `${s} is out of range for ${kind}`);
    return s;
  }
  throw new ProtoJsonError(p, `unsupported scalar type ${kind}`);
}

function durationFromJson(v: unknown, p: string): Plain {
  if (typeof v !== "string") throw new ProtoJsonError(p, `expected a duration string like "1.5s", got ${describe(v)}`);
  const m = /^(-)?(\d+)(?:\.(\d{1,9}))?s$/.exec(v);
  if (!m) throw new ProtoJsonError(p, `invalid duration ${JSON.stringify(v)} (want e.g. "0.250s")`);
  const sign = m[1] ? -1 : 1;
  const seconds = BigInt(m[2]!);
  if (seconds > 315576000000n) throw new ProtoJsonError(p, `duration ${v} is out of range`);
  const nanos = m[3] ? Number(m[3].padEnd(9, "0")) : 0;
  const out: Plain = {};
  if (seconds !== 0n) out.seconds = String(BigInt(sign) * seconds);
  if (nanos !== 0) out.nanos = sign * nanos;
  return out;
}

function timestampFromJson(v: unknown, p: string): Plain {
  if (typeof v !== "string") throw new ProtoJsonError(p, `expected an RFC 3339 timestamp, got ${describe(v)}`);
  const m = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})$/.exec(v);
  const ms = m ? Date.parse(`${m[1]}${m[3]}`) : NaN;
  if (!m || Number.isNaN(ms)) throw new ProtoJsonError(p, `invalid timestamp ${JSON.stringify(v)}`);
  const out: Plain = {};
  if (ms !== 0) out.seconds = String(Math.floor(ms / 1000));
  const nanos = m[2] ? Number(m[2].padEnd(9, "0")) : 0;
  if (nanos) out.nanos = nanos;
  return out;
}

// protobufjs's bundled struct.proto spells Value's fields in camelCase (unlike the Envoy protos loaded with keepCase).
function valueFromJson(v: unknown, p: string): Plain {
  if (v === null) return { nullValue: "NULL_VALUE" };
  if (typeof v === "number") return { numberValue: v };
  if (typeof v === "string") return { stringValue: v };
  if (typeof v === "boolean") return { boolValue: v };
  if (Array.isArray(v)) return { listValue: { values: v.map((e, i) => valueFromJson(e, `${p}[${i}]`)) } };
  if (isObject(v)) return { structValue: structFromJson(v, p) };
  throw new ProtoJsonError(p, `cannot represent ${describe(v)} as google.protobuf.Value`);
}

function structFromJson(v: unknown, p: string): Plain {
  if (!isObject(v)) throw new ProtoJsonError(p, `expected an object (Struct), got ${describe(v)}`);
  const fields: Plain = {};
  for (const [k, e] of Object.entries(v)) fields[k] = valueFromJson(e, `${p}.${k}`);
  return { fields };
}

function specialFromJson(fullName: string, v: unknown, p: string): Plain {
  const wrapped = WRAPPERS[fullName];
  if (wrapped) return { value: scalarFromJson(wrapped, v, p) };
  switch (fullName) {
    case ".google.protobuf.Duration":
      return durationFromJson(v, p);
    case ".google.protobuf.Timestamp":
      return timestampFromJson(v, p);
    case ".google.protobuf.Struct":
      return structFromJson(v, p);
    case ".google.protobuf.Value":
      return valueFromJson(v, p);
    case ".google.protobuf.ListValue":
      if (!Array.isArray(v)) throw new ProtoJsonError(p, `expected an array (ListValue), got ${describe(v)}`);
      return { values: v.map((e, i) => valueFromJson(e, `${p}[${i}]`)) };
    case ".google.protobuf.FieldMask":
      if (typeof v !== "string") throw new ProtoJsonError(p, `expected a field mask string, got ${describe(v)}`);
      return { paths: v === "" ? [] : v.split(",").map((s) => s.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)) };
  }
  throw new ProtoJsonError(p, `no JSON mapping for ${fullName}`);
}

function anyFromJson(v: unknown, p: string): Plain {
  if (!isObject(v)) throw new ProtoJsonError(p, `expected an object with "@type" (Any), got ${describe(v)}`);
  const { "@type": typeUrl, ...rest } = v;
  const inner = lookupAnyType(typeUrl, `${p}["@type"]`);
  let plain: Plain;
  if (SPECIAL_JSON.has(inner.fullName)) {
    const keys = Object.keys(rest);
    if (keys.length !== 1 || keys[0] !== "value") throw new ProtoJsonError(p, `Any of ${inner.fullName} takes exactly one field "value"`);
    plain = specialFromJson(inner.fullName, rest.value, `${p}.value`);
  } else {
    plain = messageFromJson(inner, rest, p);
  }
  return { type_url: typeUrl, value: inner.encode(inner.fromObject(plain)).finish() };
}

function fieldValueFromJson(field: protobuf.Field, v: unknown, p: string): unknown {
  const rt = field.resolvedType;
  if (rt instanceof protobuf.Enum) {
    if (typeof v === "string") {
      if (!(v in rt.values)) throw new ProtoJsonError(p, `unknown ${rt.name} value ${JSON.stringify(v)} (one of ${Object.keys(rt.values).join(", ")})`);
      return v;
    }
    if (typeof v === "number" && Object.values(rt.values).includes(v)) return v;
    throw new ProtoJsonError(p, `expected a ${rt.name} name, got ${describe(v)}`);
  }
  if (rt instanceof protobuf.Type) return typeFromJson(rt, v, p);
  return scalarFromJson(field.type, v, p);
}

function typeFromJson(type: protobuf.Type, v: unknown, p: string): Plain {
  if (type.fullName === ".google.protobuf.Any") return anyFromJson(v, p);
  if (SPECIAL_JSON.has(type.fullName)) return specialFromJson(type.fullName, v, p);
  return messageFromJson(type, v, p);
}

function jsonNameOf(field: protobuf.Field): string {
  const explicit = (field.options as Record<string, unknown> | undefined)?.json_name;
  return typeof explicit === "string" ? explicit : protobuf.util.camelCase(field.name);
}

function messageFromJson(type: protobuf.Type, v: unknown, p: string): Plain {
  if (!isObject(v)) throw new ProtoJsonError(p, `expected an object (${type.fullName.slice(1)}), got ${describe(v)}`);
  const out: Plain = {};
  const oneofSeen = new Map<string, string>();
  for (const [key, value] of Object.entries(v)) {
    const fp = p ? `${p}.${key}` : key;
    const field = type.fields[key] ?? type.fieldsArray.find((f) => jsonNameOf(f) === key);
    if (!field) throw new ProtoJsonError(fp, `unknown field "${key}" in ${type.fullName.slice(1)}`);
    if (field.name in out) throw new ProtoJsonError(fp, `field "${field.name}" is set twice (as proto and JSON name)`);
    if (value === null && field.resolvedType?.fullName !== ".google.protobuf.Value") continue;
    if (field.partOf) {
      const other = oneofSeen.get(field.partOf.name);
      if (other) throw new ProtoJsonError(fp, `"${field.name}" and "${other}" are both set but belong to oneof "${field.partOf.name}"`);
      oneofSeen.set(field.partOf.name, field.name);
    }
    field.resolve();
    if (field.map) {
      if (!isObject(value)) throw new ProtoJsonError(fp, `expected an object (map), got ${describe(value)}`);
      const m: Plain = {};
      for (const [k, e] of Object.entries(value)) m[k] = fieldValueFromJson(field, e, `${fp}[${JSON.stringify(k)}]`);
      out[field.name] = m;
    } else if (field.repeated) {
      if (!Array.isArray(value)) throw new ProtoJsonError(fp, `expected an array, got ${describe(value)}`);
      out[field.name] = value.map((e, i) => fieldValueFromJson(field, e, `${fp}[${i}]`));
    } else {
      out[field.name] = fieldValueFromJson(field, value, fp);
    }
  }
  return out;
}

/** Strictly converts proto3 JSON to a protobufjs message of `typeName` (e.g. "envoy.config.cluster.v3.Cluster"). */
export function fromJson(typeName: string, json: unknown): protobuf.Message {
  const type = envoyRoot().lookupType(typeName);
  return type.fromObject(typeFromJson(type, json, ""));
}

/** Strict proto3 JSON -> wire bytes. Throws ProtoJsonError naming the offending path. */
export function encodeJson(typeName: string, json: unknown): Uint8Array {
  const type = envoyRoot().lookupType(typeName);
  return type.encode(type.fromObject(typeFromJson(type, json, ""))).finish();
}

// ---- decoding: wire bytes -> canonical proto3 JSON (snake_case, defaults omitted) ----

function durationToJson(o: Plain): string {
  const seconds = BigInt((o.seconds as string | undefined) ?? "0");
  const nanos = Number(o.nanos ?? 0);
  const neg = seconds < 0n || nanos < 0;
  const abs = (seconds < 0n ? -seconds : seconds).toString();
  const frac = Math.abs(nanos);
  const fracStr = frac === 0 ? "" : frac % 1e6 === 0 ? `.${String(frac / 1e6).padStart(3, "0")}` : frac % 1e3 === 0 ? `.${String(frac / 1e3).padStart(6, "0")}` : `.${String(frac).padStart(9, "0")}`;
  return `${neg ? "-" : ""}${abs}${fracStr}s`;
}

function valueToJson(o: Plain): Json {
  if ("nullValue" in o) return null;
  if ("numberValue" in o) return o.numberValue as number;
  if ("stringValue" in o) return o.stringValue as string;
  if ("boolValue" in o) return o.boolValue as boolean;
  if ("structValue" in o) return structToJson(o.structValue as Plain);
  if ("listValue" in o) return (((o.listValue as Plain).values as Plain[] | undefined) ?? []).map(valueToJson);
  return null;
}

function structToJson(o: Plain): Json {
  const out: Record<string, Json> = {};
  for (const [k, v] of Object.entries((o.fields as Record<string, Plain> | undefined) ?? {})) out[k] = valueToJson(v);
  return out;
}

const WRAPPER_DEFAULT: Record<string, Json> = { double: 0, float: 0, int64: "0", uint64: "0", int32: 0, uint32: 0, bool: false, string: "", bytes: "" };

function specialToJson(fullName: string, o: Plain): Json {
  const wrapped = WRAPPERS[fullName];
  if (wrapped) return "value" in o ? (o.value as Json) : WRAPPER_DEFAULT[wrapped]!;
  switch (fullName) {
    case ".google.protobuf.Duration":
      return durationToJson(o);
    case ".google.protobuf.Timestamp": {
      const ms = Number(o.seconds ?? 0) * 1000;
      const nanos = Number(o.nanos ?? 0);
      const base = new Date(ms).toISOString().replace(/\.\d{3}Z$/, "");
      return `${base}${nanos ? `.${String(nanos).padStart(9, "0").replace(/0+$/, "")}` : ""}Z`;
    }
    case ".google.protobuf.Struct":
      return structToJson(o);
    case ".google.protobuf.Value":
      return valueToJson(o);
    case ".google.protobuf.ListValue":
      return ((o.values as Plain[] | undefined) ?? []).map(valueToJson);
    case ".google.protobuf.FieldMask":
      return ((o.paths as string[] | undefined) ?? []).map((s) => protobuf.util.camelCase(s)).join(",");
  }
  throw new Error(`no JSON mapping for ${fullName}`);
}

function plainToJson(type: protobuf.Type, o: Plain): Json {
  if (type.fullName === ".google.protobuf.Any") {
    const inner = envoyRoot().lookupType(typeNameOfUrl(o.type_url as string));
    const bytes = Buffer.from((o.value as string | undefined) ?? "", "base64");
    const innerPlain = inner.toObject(inner.decode(bytes), TO_OBJECT) as Plain;
    const body = plainToJson(inner, innerPlain);
    return SPECIAL_JSON.has(inner.fullName) ? { "@type": o.type_url as string, value: body } : { "@type": o.type_url as string, ...(body as Record<string, Json>) };
  }
  if (SPECIAL_JSON.has(type.fullName)) return specialToJson(type.fullName, o);
  const out: Record<string, Json> = {};
  for (const field of type.fieldsArray) {
    if (!(field.name in o)) continue;
    field.resolve();
    const v = o[field.name];
    const conv = (e: unknown): Json => (field.resolvedType instanceof protobuf.Type ? plainToJson(field.resolvedType, e as Plain) : (e as Json));
    if (field.map) {
      const m: Record<string, Json> = {};
      for (const [k, e] of Object.entries(v as Plain)) m[k] = conv(e);
      out[field.name] = m;
    } else if (field.repeated) {
      out[field.name] = (v as unknown[]).map(conv);
    } else {
      out[field.name] = conv(v);
    }
  }
  return out;
}

const TO_OBJECT: protobuf.IConversionOptions = { longs: String, enums: String, bytes: String, defaults: false, arrays: false, objects: false, oneofs: false };

/** Wire bytes -> canonical proto3 JSON: snake_case names, int64 as strings, enums by name, defaults omitted. */
export function decodeToJson(typeName: string, bytes: Uint8Array): Json {
  const type = envoyRoot().lookupType(typeName);
  return plainToJson(type, type.toObject(type.decode(bytes), TO_OBJECT) as Plain);
}

/** The canonical form of a proto3 JSON value (what decoding its encoding yields): for lossless round-trip checks. */
export function canonicalJson(typeName: string, json: unknown): Json {
  return decodeToJson(typeName, encodeJson(typeName, json));
}

/** `{"@type": ..., ...}` for embedding a typed config in a resource. */
export function typed(typeName: string, body: Record<string, unknown>): Record<string, unknown> {
  return { "@type": `${TYPE_PREFIX}${typeName}`, ...body };
}
