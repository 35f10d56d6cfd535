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
// times per proxy; this writes each resource's bytes once, into one buffer of the right size. The tests decode
// what it writes with the real protos.

/** Pieces of one protobuf message, concatenated once at the end. */
class WireWriter {
  readonly parts: Uint8Array[] = [];
  size = 0;
  private push(b: Uint8Array): void {
    this.parts.push(b);
    this.size += b.length;
  }
  private key(field: number, len: number): void {
    const bytes: number[] = [];
    for (let n = (field << 3) | 2; ; n >>>= 7) {
      if (n < 0x80) {
        bytes.push(n);
        break;
      }
      bytes.push((n & 0x7f) | 0x80);
    }
    for (let n = len; ; n = Math.floor(n / 128)) {
      if (n < 0x80) {
        bytes.push(n);
        break;
      }
      bytes.push((n & 0x7f) | 0x80);
    }
    this.push(Uint8Array.from(bytes));
  }
  /** A length-delimited field (string, bytes, embedded message). */
  bytes(field: number, b: Uint8Array): this {
    this.key(field, b.length);
    this.push(b);
    return this;
  }
  string(field: number, s: string): this {
    return this.bytes(field, Buffer.from(s, "utf8"));
  }
  message(field: number, m: WireWriter): this {
    this.key(field, m.size);
    for (const p of m.parts) this.push(p);
    return this;
  }
  finish(): Buffer {
    return Buffer.concat(this.parts, this.size);
  }
}

const controlPlaneWire = (): WireWriter => new WireWriter().string(1, CONTROL_PLANE_IDENTIFIER);

/** google.protobuf.Any { type_url = 1; value = 2 }. */
function anyWire(typeUrl: Uint8Array, value: Uint8Array): WireWriter {
  return new WireWriter().bytes(1, typeUrl).bytes(2, value);
}

/** DiscoveryResponse { version_info = 1; resources = 2; type_url = 4; nonce = 5; control_plane = 6 }. */
export function encodeSotwResponse(r: SotwResponse): Buffer {
  const typeUrl = Buffer.from(r.type_url, "utf8");
  const w = new WireWriter().string(1, r.version_info);
  for (const res of r.resources) w.message(2, anyWire(typeUrl, res.bytes));
  return w.bytes(4, typeUrl).string(5, r.nonce).message(6, controlPlaneWire()).finish();
}

/**
 * DeltaDiscoveryResponse { system_version_info = 1; resources = 2; type_url = 4; nonce = 5;
 * removed_resources = 6; control_plane = 7 }, Resource { version = 1; resource = 2; name = 3 }.
 */
export function encodeDeltaResponse(r: DeltaResponse): Buffer {
  const typeUrl = Buffer.from(r.type_url, "utf8");
  const w = new WireWriter().string(1, r.system_version_info);
  for (const res of r.resources) w.message(2, new WireWriter().string(1, res.version).message(2, anyWire(typeUrl, res.bytes)).string(3, res.name));
  w.bytes(4, typeUrl).string(5, r.nonce);
  for (const n of r.removed_resources) w.string(6, n);
  return w.message(7, controlPlaneWire()).finish();
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
