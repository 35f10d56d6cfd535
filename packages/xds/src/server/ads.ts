// The AggregatedDiscoveryService wire layer: a hand-built grpc-js service definition whose (de)serializers
// are the protobufjs types of the Envoy protos. Building it by hand (rather than through proto-loader) lets a
// response carry pre-encoded resource bytes straight into `Any.value`: a resource is encoded once by the
// cache and copied, never re-encoded, into every stream's response.
import type * as grpc from "@grpc/grpc-js";
import type protobuf from "protobufjs";
import { lookupType } from "../protos.js";
import type { XdsNode } from "../proxy-view.js";

export const ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService";

/** The first error of a NACK, as `google.rpc.Status`. */
export interface ErrorDetail {
  code: number;
  message: string;
}

export interface SotwRequest {
  node?: XdsNode;
  version_info: string;
  resource_names: string[];
  type_url: string;
  response_nonce: string;
  error_detail?: ErrorDetail;
}

export interface DeltaRequest {
  node?: XdsNode;
  type_url: string;
  resource_names_subscribe: string[];
  resource_names_unsubscribe: string[];
  initial_resource_versions: Record<string, string>;
  response_nonce: string;
  error_detail?: ErrorDetail;
}

/** A resource as it goes on the wire: already-encoded bytes. */
export interface WireResource {
  name: string;
  version: string;
  bytes: Uint8Array;
}

export interface SotwResponse {
  version_info: string;
  type_url: string;
  nonce: string;
  resources: readonly WireResource[];
}

export interface DeltaResponse {
  system_version_info: string;
  type_url: string;
  nonce: string;
  resources: readonly WireResource[];
  removed_resources: readonly string[];
}

export const CONTROL_PLANE_IDENTIFIER = "vmpilot";

interface Types {
  request: protobuf.Type;
  response: protobuf.Type;
  deltaRequest: protobuf.Type;
  deltaResponse: protobuf.Type;
}

let types: Types | undefined;
function wireTypes(): Types {
  types ??= {
    request: lookupType("envoy.service.discovery.v3.DiscoveryRequest"),
    response: lookupType("envoy.service.discovery.v3.DiscoveryResponse"),
    deltaRequest: lookupType("envoy.service.discovery.v3.DeltaDiscoveryRequest"),
    deltaResponse: lookupType("envoy.service.discovery.v3.DeltaDiscoveryResponse"),
  };
  return types;
}

// ---- google.protobuf.Struct -> plain JSON (the node metadata) ----
// protobufjs's bundled struct.proto uses camelCase field names (the Envoy protos are loaded keepCase).

type StructValue = {
  nullValue?: unknown;
  numberValue?: number;
  stringValue?: string;
  boolValue?: boolean;
  structValue?: { fields?: Record<string, StructValue> };
  listValue?: { values?: StructValue[] };
};

// A decoded protobufjs message answers every field with its prototype default (stringValue is "" on a Value that
// holds a struct), so the set member of the `kind` oneof is read from the message's own properties.
function valueToPlain(v: StructValue): unknown {
  const has = (k: keyof StructValue): boolean => Object.prototype.hasOwnProperty.call(v, k) && v[k] !== undefined && v[k] !== null;
  if (has("stringValue")) return v.stringValue;
  if (has("numberValue")) return v.numberValue;
  if (has("boolValue")) return v.boolValue;
  if (has("structValue")) return structToPlain(v.structValue);
  if (has("listValue")) return (v.listValue!.values ?? []).map(valueToPlain);
  return null;
}

export function structToPlain(s: { fields?: Record<string, StructValue> } | null | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(s?.fields ?? {})) out[k] = valueToPlain(v);
  return out;
}

interface DecodedNode {
  id?: string;
  cluster?: string;
  metadata?: { fields?: Record<string, StructValue> };
  locality?: { region?: string; zone?: string; sub_zone?: string };
  user_agent_name?: string;
}

function nodeOf(n: DecodedNode | null | undefined): XdsNode | undefined {
  if (!n) return undefined;
  const node: XdsNode = {};
  if (n.id) node.id = n.id;
  if (n.cluster) node.cluster = n.cluster;
  if (n.metadata) node.metadata = structToPlain(n.metadata);
  if (n.locality) {
    const { region, zone, sub_zone } = n.locality;
    node.locality = {};
    if (region) node.locality.region = region;
    if (zone) node.locality.zone = zone;
    if (sub_zone) node.locality.sub_zone = sub_zone;
  }
  if (n.user_agent_name) node.user_agent_name = n.user_agent_name;
  return node;
}

function errorDetailOf(e: { code?: number; message?: string } | null | undefined): ErrorDetail | undefined {
  // Presence of the message is what makes a NACK, whatever it says (an empty Status is still a NACK).
  if (!e) return undefined;
  return { code: e.code ?? 0, message: e.message ?? "" };
}

export function decodeSotwRequest(buf: Buffer): SotwRequest {
  const t = wireTypes().request;
  const m = t.decode(buf) as unknown as {
    node?: DecodedNode | null;
    version_info?: string;
    resource_names?: string[];
    type_url?: string;
    response_nonce?: string;
    error_detail?: { code?: number; message?: string } | null;
  };
  const req: SotwRequest = {
    version_info: m.version_info ?? "",
    resource_names: m.resource_names ?? [],
    type_url: m.type_url ?? "",
    response_nonce: m.response_nonce ?? "",
  };
  const node = nodeOf(m.node);
  if (node) req.node = node;
  const err = errorDetailOf(m.error_detail);
  if (err) req.error_detail = err;
  return req;
}

/**
 * A SotW request decoder for one stream. Envoy restates its whole subscription with every ACK: thousands of
 * EDS names, byte for byte the same as last time, on every stream, for every push. When a request carries only
 * version, names, type and nonce, and its names are the same bytes as the previous request of that type, the
 * previous (already decoded) names array is returned as is: no strings decoded, no garbage, and the stream can
 * tell "same list" by identity. Anything else (a node, an error_detail, other fields) takes the full decoder.
 */
export function sotwRequestDecoder(): (buf: Buffer) => SotwRequest {
  const last = new Map<string, DecodedNames>();
  return (buf) => {
    const fast = decodeSotwAck(buf, last);
    return fast ?? decodeSotwRequest(buf);
  };
}

function readVarint(buf: Buffer, pos: number): [number, number] | undefined {
  let n = 0;
  for (let shift = 1; pos < buf.length; shift *= 128) {
    const b = buf[pos++]!;
    n += (b & 0x7f) * shift;
    if (b < 0x80) return [n, pos];
    if (shift > 2 ** 28) return undefined;
  }
  return undefined;
}

interface DecodedNames {
  bytes: Buffer;
  /** Shared by every stream that sent these bytes: never mutated. */
  names: string[];
}

/**
 * Name lists in use, shared across streams: proxies with the same view subscribe to the same names in the same
 * order, so a thousand sidecars hold one copy of their 3,000 EDS names (bytes and strings), not a thousand.
 * Keyed by type, length and a sample of the bytes; a list is shared only when its bytes are equal. Entries go
 * when no stream holds them any more.
 */
const sharedNames = new Map<string, WeakRef<DecodedNames>>();
const sharedNamesGone = new FinalizationRegistry<string>((key) => {
  if (!sharedNames.get(key)?.deref()) sharedNames.delete(key);
});

function sampleKey(typeUrl: string, region: Buffer): string {
  const n = region.length;
  const mid = Math.max(0, (n >> 1) - 32);
  return `${typeUrl}|${n}|${region.toString("latin1", 0, 64)}|${region.toString("latin1", mid, mid + 64)}|${region.toString("latin1", Math.max(0, n - 64), n)}`;
}

/** The type_url of a request, if it is a plain field of it (for finding the previous names of that type). */
function typeUrlOf(buf: Buffer): string | undefined {
  for (let pos = 0; pos < buf.length; ) {
    const key = readVarint(buf, pos);
    if (!key || (key[0] & 7) !== 2) return undefined;
    const len = readVarint(buf, key[1]);
    if (!len) return undefined;
    if (key[0] >>> 3 === 4) return buf.toString("utf8", len[1], len[1] + len[0]);
    pos = len[1] + len[0];
  }
  return undefined;
}

function decodeSotwAck(buf: Buffer, last: Map<string, DecodedNames>): SotwRequest | undefined {
  // The previous names of this type, to skip over in one comparison instead of field by field.
  const t = last.size > 0 ? typeUrlOf(buf) : undefined;
  const expected = t !== undefined ? last.get(t) : undefined;
  let version = "";
  let typeUrl = "";
  let nonce = "";
  let namesStart = -1;
  let namesEnd = -1;
  let count = 0;
  for (let pos = 0; pos < buf.length; ) {
    const key = readVarint(buf, pos);
    if (!key || (key[0] & 7) !== 2) return undefined;
    const len = readVarint(buf, key[1]);
    if (!len) return undefined;
    const start = len[1];
    const end = start + len[0];
    if (end > buf.length) return undefined;
    switch (key[0] >>> 3) {
      case 1:
        version = buf.toString("utf8", start, end);
        break;
      case 3:
        // Names must be one contiguous run for the byte comparison to mean "the same list".
        if (namesStart < 0) {
          namesStart = pos;
          const n = expected?.bytes.length ?? 0;
          if (n > 0 && pos + n <= buf.length && expected!.bytes.equals(buf.subarray(pos, pos + n))) {
            // The whole previous list, byte for byte: skip it (more names after it are checked as usual).
            namesEnd = pos + n;
            count = expected!.names.length;
            pos = namesEnd;
            continue;
          }
        } else if (namesEnd !== pos) return undefined;
        namesEnd = end;
        count++;
        break;
      case 4:
        typeUrl = buf.toString("utf8", start, end);
        break;
      case 5:
        nonce = buf.toString("utf8", start, end);
        break;
      default:
        return undefined;
    }
    pos = end;
  }
  if (!typeUrl) return undefined;
  const region = namesStart < 0 ? Buffer.alloc(0) : buf.subarray(namesStart, namesEnd);
  const prev = last.get(typeUrl);
  let names: string[];
  if (prev && prev.names.length === count && prev.bytes.equals(region)) names = prev.names;
  else {
    const key = sampleKey(typeUrl, region);
    const candidate = sharedNames.get(key)?.deref();
    let d: DecodedNames;
    if (candidate && candidate.names.length === count && candidate.bytes.equals(region)) d = candidate;
    else {
      const decoded: string[] = [];
      for (let pos = namesStart; namesStart >= 0 && pos < namesEnd; ) {
        const k = readVarint(buf, pos)!;
        const len = readVarint(buf, k[1])!;
        decoded.push(buf.toString("utf8", len[1], len[1] + len[0]));
        pos = len[1] + len[0];
      }
      // A copy: `buf` belongs to the transport.
      d = { bytes: Buffer.from(region), names: decoded };
      if (!candidate) {
        sharedNames.set(key, new WeakRef(d));
        sharedNamesGone.register(d, key);
      }
    }
    last.set(typeUrl, d);
    names = d.names;
  }
  return { version_info: version, resource_names: names, type_url: typeUrl, response_nonce: nonce };
}

export function decodeDeltaRequest(buf: Buffer): DeltaRequest {
  const t = wireTypes().deltaRequest;
  const m = t.decode(buf) as unknown as {
    node?: DecodedNode | null;
    type_url?: string;
    resource_names_subscribe?: string[];
    resource_names_unsubscribe?: string[];
    initial_resource_versions?: Record<string, string>;
    response_nonce?: string;
    error_detail?: { code?: number; message?: string } | null;
  };
  const req: DeltaRequest = {
    type_url: m.type_url ?? "",
    resource_names_subscribe: m.resource_names_subscribe ?? [],
    resource_names_unsubscribe: m.resource_names_unsubscribe ?? [],
    initial_resource_versions: { ...(m.initial_resource_versions ?? {}) },
    response_nonce: m.response_nonce ?? "",
  };
  const node = nodeOf(m.node);
  if (node) req.node = node;
  const err = errorDetailOf(m.error_detail);
  if (err) req.error_detail = err;
  return req;
}

// ---- responses: written straight to the wire format ----
// A response is a few strings around pre-encoded resources (megabytes for a sidecar in a large mesh, sent to
// thousands of proxies in a connect storm). Going through protobufjs objects copied every resource three
// times per proxy; this sizes the message first and writes each resource's bytes once into one buffer. Every
// field here is length-delimited with a field number below 16 (a one-byte key). The tests decode what it
// writes with the real protos.

function varintSize(n: number): number {
  let size = 1;
  for (; n >= 0x80; n = Math.floor(n / 0x80)) size++;
  return size;
}

/** Size of a length-delimited field holding `len` bytes. */
function fieldSize(len: number): number {
  return 1 + varintSize(len) + len;
}

class WireOut {
  private readonly buf: Buffer;
  private pos = 0;
  constructor(size: number) {
    this.buf = Buffer.allocUnsafe(size);
  }
  key(field: number, len: number): void {
    this.buf[this.pos++] = (field << 3) | 2;
    let n = len;
    for (; n >= 0x80; n = Math.floor(n / 0x80)) this.buf[this.pos++] = (n & 0x7f) | 0x80;
    this.buf[this.pos++] = n;
  }
  bytes(field: number, b: Uint8Array): void {
    this.key(field, b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }
  /** Bytes that are already encoded fields. */
  raw(b: Uint8Array): void {
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }
  string(field: number, s: string, byteLength: number): void {

    this.key(field, byteLength);
    this.pos += this.buf.write(s, this.pos, byteLength, "utf8");
  }
  finish(): Buffer {
    if (this.pos !== this.buf.length) throw new Error(`wire size mismatch: wrote ${this.pos} of ${this.buf.length} bytes`);
    return this.buf;
  }
}

const CONTROL_PLANE_ID_LEN = Buffer.byteLength(CONTROL_PLANE_IDENTIFIER);
/** config.core.v3.ControlPlane { identifier = 1 }. */
const CONTROL_PLANE_LEN = fieldSize(CONTROL_PLANE_ID_LEN);

/** DiscoveryResponse { version_info = 1; resources = 2 (Any { type_url = 1; value = 2 }); type_url = 4; nonce = 5; control_plane = 6 }. */
export function encodeSotwResponse(r: SotwResponse): Buffer {
  const tu = Buffer.byteLength(r.type_url);
  const vi = Buffer.byteLength(r.version_info);
  const nonce = Buffer.byteLength(r.nonce);
  let size = fieldSize(vi) + fieldSize(tu) + fieldSize(nonce) + fieldSize(CONTROL_PLANE_LEN);
  for (const res of r.resources) size += fieldSize(fieldSize(tu) + fieldSize(res.bytes.length));
  const out = new WireOut(size);
  out.string(1, r.version_info, vi);
  const typeUrl = Buffer.from(r.type_url, "utf8");
  for (const res of r.resources) {
    out.key(2, fieldSize(tu) + fieldSize(res.bytes.length));
    out.bytes(1, typeUrl);
    out.bytes(2, res.bytes);
  }
  out.string(4, r.type_url, tu);
  out.string(5, r.nonce, nonce);
  out.key(6, CONTROL_PLANE_LEN);
  out.string(1, CONTROL_PLANE_IDENTIFIER, CONTROL_PLANE_ID_LEN);
  return out.finish();
}

/**
 * The name and version fields of a delta Resource (Resource { version = 1; resource = 2; name = 3 }; field
 * order does not matter on the wire): the same for every proxy the resource goes to, so encoded once.
 */
const resourceHeads = new WeakMap<WireResource, Buffer>();
function resourceHead(res: WireResource): Buffer {
  let head = resourceHeads.get(res);
  if (!head) {
    const name = Buffer.byteLength(res.name);
    const version = Buffer.byteLength(res.version);
    const out = new WireOut(fieldSize(name) + fieldSize(version));
    out.string(3, res.name, name);
    out.string(1, res.version, version);
    head = out.finish();
    resourceHeads.set(res, head);
  }
  return head;
}

/**
 * DeltaDiscoveryResponse { system_version_info = 1; resources = 2; type_url = 4; nonce = 5; removed_resources = 6;
 * control_plane = 7 }.
 */
export function encodeDeltaResponse(r: DeltaResponse): Buffer {
  const tu = Buffer.byteLength(r.type_url);
  const svi = Buffer.byteLength(r.system_version_info);
  const nonce = Buffer.byteLength(r.nonce);
  let size = fieldSize(svi) + fieldSize(tu) + fieldSize(nonce) + fieldSize(CONTROL_PLANE_LEN);
  const heads = r.resources.map((res) => {
    const head = resourceHead(res);
    size += fieldSize(head.length + fieldSize(fieldSize(tu) + fieldSize(res.bytes.length)));
    return head;
  });
  const removed = r.removed_resources.map((n) => Buffer.byteLength(n));
  for (const len of removed) size += fieldSize(len);
  const out = new WireOut(size);
  out.string(1, r.system_version_info, svi);
  const typeUrl = Buffer.from(r.type_url, "utf8");
  r.resources.forEach((res, i) => {
    const head = heads[i]!;
    const any = fieldSize(tu) + fieldSize(res.bytes.length);
    out.key(2, head.length + fieldSize(any));
    out.raw(head);
    out.key(2, any);
    out.bytes(1, typeUrl);
    out.bytes(2, res.bytes);
  });
  out.string(4, r.type_url, tu);
  out.string(5, r.nonce, nonce);
  r.removed_resources.forEach((n, i) => out.string(6, n, removed[i]!));
  out.key(7, CONTROL_PLANE_LEN);
  out.string(1, CONTROL_PLANE_IDENTIFIER, CONTROL_PLANE_ID_LEN);
  return out.finish();
}

// Test clients (ours) need the opposite direction; kept here so both ends share one codec.

export function encodeSotwRequest(r: Partial<SotwRequest>): Buffer {
  return Buffer.from(wireTypes().request.encode(requestForEncoding(r)).finish());
}

export function encodeDeltaRequest(r: Partial<DeltaRequest>): Buffer {
  return Buffer.from(wireTypes().deltaRequest.encode(requestForEncoding(r)).finish());
}

function requestForEncoding(r: Partial<SotwRequest> | Partial<DeltaRequest>): Record<string, unknown> {
  const { node, ...rest } = r;
  if (!node) return rest;
  const metadata = node.metadata ? (plainToStruct(node.metadata) as Record<string, unknown>) : undefined;
  return { ...rest, node: { ...node, ...(metadata ? { metadata } : {}) } };
}

function plainToValue(v: unknown): StructValue {
  if (v === null || v === undefined) return { nullValue: 0 };
  if (typeof v === "string") return { stringValue: v };
  if (typeof v === "number") return { numberValue: v };
  if (typeof v === "boolean") return { boolValue: v };
  if (Array.isArray(v)) return { listValue: { values: v.map(plainToValue) } };
  return { structValue: plainToStruct(v as Record<string, unknown>) };
}

function plainToStruct(o: Record<string, unknown>): { fields: Record<string, StructValue> } {
  const fields: Record<string, StructValue> = {};
  for (const [k, v] of Object.entries(o)) fields[k] = plainToValue(v);
  return { fields };
}

export interface DecodedSotwResponse {
  version_info: string;
  type_url: string;
  nonce: string;
  resources: { type_url: string; value: Uint8Array }[];
}

export interface DecodedDeltaResponse {
  system_version_info: string;
  type_url: string;
  nonce: string;
  resources: { name: string; version: string; resource?: { type_url: string; value: Uint8Array } }[];
  removed_resources: string[];
}

export function decodeSotwResponse(buf: Buffer): DecodedSotwResponse {
  const m = wireTypes().response.decode(buf) as unknown as Partial<DecodedSotwResponse>;
  return { version_info: m.version_info ?? "", type_url: m.type_url ?? "", nonce: m.nonce ?? "", resources: m.resources ?? [] };
}

export function decodeDeltaResponse(buf: Buffer): DecodedDeltaResponse {
  const m = wireTypes().deltaResponse.decode(buf) as unknown as Partial<DecodedDeltaResponse>;
  return {
    system_version_info: m.system_version_info ?? "",
    type_url: m.type_url ?? "",
    nonce: m.nonce ?? "",
    resources: m.resources ?? [],
    removed_resources: m.removed_resources ?? [],
  };
}

const identity = (b: Buffer): Buffer => b;

/**
 * The service definition. Both directions of both methods travel as raw Buffers through grpc-js; decoding
 * and encoding happen in the stream handlers, so a malformed request ends that stream with INVALID_ARGUMENT
 * instead of surfacing as an opaque deserialization failure.
 */
export function adsServiceDefinition(): grpc.ServiceDefinition {
  return {
    StreamAggregatedResources: {
      path: `/${ADS_SERVICE}/StreamAggregatedResources`,
      requestStream: true,
      responseStream: true,
      requestSerialize: identity,
      requestDeserialize: identity,
      responseSerialize: identity,
      responseDeserialize: identity,
      originalName: "streamAggregatedResources",
    },
    DeltaAggregatedResources: {
      path: `/${ADS_SERVICE}/DeltaAggregatedResources`,
      requestStream: true,
      responseStream: true,
      requestSerialize: identity,
      requestDeserialize: identity,
      responseSerialize: identity,
      responseDeserialize: identity,
      originalName: "deltaAggregatedResources",
    },
  } as grpc.ServiceDefinition;
}
