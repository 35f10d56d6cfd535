// A simulated proxy for the benchmark: one ADS stream on its own HTTP/2 connection, speaking like Envoy
// (wildcard LDS/CDS, then EDS/RDS for what it received; SotW or delta) or like a proxyless gRPC client
// (one named listener, then RDS -> CDS -> EDS). It ACKs everything and records when each response arrived.
import * as grpc from "@grpc/grpc-js";
import type protobuf from "protobufjs";
import { envoyRoot, TypeUrl } from "@vmpilot/xds/protos";

export type ProxyStyle = "envoy-sotw" | "envoy-delta" | "grpc";

type Msg = Record<string, any>;

interface Codec {
  DiscoveryRequest: protobuf.Type;
  DiscoveryResponse: protobuf.Type;
  DeltaDiscoveryRequest: protobuf.Type;
  DeltaDiscoveryResponse: protobuf.Type;
  Cluster: protobuf.Type;
  Listener: protobuf.Type;
  RouteConfiguration: protobuf.Type;
  Hcm: protobuf.Type;
}

let codec: Codec | undefined;
function types(): Codec {
  if (codec) return codec;
  const root = envoyRoot();
  codec = {
    DiscoveryRequest: root.lookupType("envoy.service.discovery.v3.DiscoveryRequest"),
    DiscoveryResponse: root.lookupType("envoy.service.discovery.v3.DiscoveryResponse"),
    DeltaDiscoveryRequest: root.lookupType("envoy.service.discovery.v3.DeltaDiscoveryRequest"),
    DeltaDiscoveryResponse: root.lookupType("envoy.service.discovery.v3.DeltaDiscoveryResponse"),
    Cluster: root.lookupType("envoy.config.cluster.v3.Cluster"),
    Listener: root.lookupType("envoy.config.listener.v3.Listener"),
    RouteConfiguration: root.lookupType("envoy.config.route.v3.RouteConfiguration"),
    Hcm: root.lookupType("envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"),
  };
  return codec;
}

/**
 * Proxies with equal views receive identical bytes: decode each distinct resource once per process. Keyed by
 * type and name (field 1 of every resource type here), then compared byte for byte: hashing or decoding the
 * ~2 MB a sidecar receives, for each of 2,000 simulated proxies in one process, made the load generator (not the
 * server) the bottleneck of the connect storm.
 */
const refsCache = new Map<string, { bytes: Uint8Array; d: Described }[]>();

/** A varint at `pos` of `buf`: [value, position after it]. */
function varint(buf: Uint8Array, pos: number): [number, number] {
  let n = 0;
  for (let shift = 1; pos < buf.length; shift *= 128) {
    const b = buf[pos++]!;
    n += (b & 0x7f) * shift;
    if (b < 0x80) break;
  }
  return [n, pos];
}

/**
 * Calls `each(field, start, end)` for every field of an encoded message (start/end: a length-delimited field's
 * payload; other wire types report an empty range).
 */
function fields(buf: Uint8Array, start: number, end: number, each: (field: number, start: number, end: number) => void): void {
  let pos = start;
  while (pos < end) {
    const [key, p1] = varint(buf, pos);
    const wire = key & 7;
    pos = p1;
    if (wire === 2) {
      const [len, p2] = varint(buf, pos);
      each(key >>> 3, p2, p2 + len);
      pos = p2 + len;
    } else {
      if (wire === 0) pos = varint(buf, pos)[1];
      else if (wire === 1) pos += 8;
      else if (wire === 5) pos += 4;
      else break;
      each(key >>> 3, pos, pos);
    }
  }
}

/** Field 1 (a string) of an encoded message, without decoding the rest. */
function field1(value: Uint8Array): string {
  let out = "";
  let found = false;
  fields(value, 0, value.length, (f, start, end) => {
    if (f === 1 && !found) {
      found = true;
      out = Buffer.from(value.buffer, value.byteOffset + start, end - start).toString("utf8");
    }
  });
  return out;
}

interface Described {
  name: string;
  /** Names of the EDS clusters a Cluster needs, the route configs a Listener needs, the clusters a route config names. */
  refs: string[];
}

function describe(typeUrl: string, value: Uint8Array): Described {
  const key = `${typeUrl}\0${field1(value)}`;
  const candidates = refsCache.get(key) ?? [];
  refsCache.set(key, candidates);
  const v = Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  for (const c of candidates) if (c.bytes.byteLength === value.byteLength && v.equals(c.bytes)) return c.d;
  const t = types();
  let out: string[] = [];
  let name = "";
  if (typeUrl === TypeUrl.Cluster) {
    const c = t.Cluster.toObject(t.Cluster.decode(value), { enums: String }) as Msg;
    name = c.name;
    if (c.type === "EDS") out = [c.eds_cluster_config?.service_name || c.name];
  } else if (typeUrl === TypeUrl.Listener) {
    const l = t.Listener.toObject(t.Listener.decode(value)) as Msg;
    name = l.name;
    const hcms: Msg[] = [];
    if (l.api_listener?.api_listener) hcms.push(l.api_listener.api_listener);
    for (const fc of l.filter_chains ?? []) for (const f of fc.filters ?? []) if (f.typed_config) hcms.push(f.typed_config);
    for (const any of hcms) {
      if (!String(any.type_url).endsWith("HttpConnectionManager")) continue;
      const h = t.Hcm.toObject(t.Hcm.decode(any.value)) as Msg;
      if (h.rds?.route_config_name) out.push(h.rds.route_config_name);
    }
  } else if (typeUrl === TypeUrl.RouteConfiguration) {
    const r = t.RouteConfiguration.toObject(t.RouteConfiguration.decode(value)) as Msg;
    name = r.name;
    for (const vh of r.virtual_hosts ?? [])
      for (const route of vh.routes ?? []) {
        if (route.route?.cluster) out.push(route.route.cluster);
        for (const wc of route.route?.weighted_clusters?.clusters ?? []) out.push(wc.name);
      }
  }
  const d = { name, refs: [...new Set(out)] };
  // A copy: `value` is a view into a transport buffer.
  candidates.push({ bytes: Buffer.from(v), d });
  return d;
}

/**
 * A response's resources, described once per process: the proxies of one scope receive byte-identical resource
 * lists (a sidecar's 3,000 clusters), so a response whose resources are the same bytes as one already seen (one
 * comparison over the whole list) reuses its description instead of walking and describing 3,000 resources again.
 * What a real proxy spends on decoding happens on its own CPU; here a thousand of them share two cores with the
 * server, and a load generator that decodes everything a thousand times measures itself, not the server.
 */
interface ResourceList {
  /** The bytes of the response's resources field(s), copied. */
  region: Buffer;
  described: Described[];
  /** Resource names (delta: Resource.name; SotW: the name inside each resource). */
  names: string[];
  /** Sum of the resources' encoded sizes (Any.value), as before: what the proxy was sent of config. */
  valueBytes: number;
  /** name -> refs of this list, made on first use and shared (never changed) by every proxy holding exactly it. */
  held?: Map<string, string[]>;
  /** The union of refs of `held`. */
  refs?: string[];
  /** The names, as a set shared like `held`. */
  nameSet?: Set<string>;
}

const listMemo = new Map<string, ResourceList[]>();

interface ParsedResponse {
  typeUrl: string;
  version: string;
  nonce: string;
  removed: string[];
  list: ResourceList;
}

function utf8(buf: Buffer, start: number, end: number): string {
  return buf.toString("utf8", start, end);
}

/** DiscoveryResponse / DeltaDiscoveryResponse read field by field, the resources through the memo. */
function parseResponse(buf: Buffer, delta: boolean): ParsedResponse {
  let typeUrl = "";
  let version = "";
  let nonce = "";
  const removed: string[] = [];
  let first = -1;
  let last = -1;
  let count = 0;
  fields(buf, 0, buf.length, (f, start, end) => {
    if (f === 1) version = utf8(buf, start, end);
    else if (f === 2) {
      // The whole field, key and length included: from the key's start. Keys here are one byte; lengths vary.
      if (first < 0) first = start - 1 - varintSize(end - start);
      last = end;
      count++;
    } else if (f === 4) typeUrl = utf8(buf, start, end);
    else if (f === 5) nonce = utf8(buf, start, end);
    else if (f === 6 && delta) removed.push(utf8(buf, start, end));
  });
  const region = first < 0 ? Buffer.alloc(0) : buf.subarray(first, last);
  const n = region.length;
  const key = `${typeUrl}|${delta ? "d" : "s"}|${count}|${n}|${region.toString("latin1", 0, 48)}|${region.toString("latin1", Math.max(0, n - 48), n)}`;
  const candidates = listMemo.get(key) ?? [];
  listMemo.set(key, candidates);
  let list = candidates.find((c) => c.region.equals(region));
  if (!list) {
    list = { region: Buffer.from(region), described: [], names: [], valueBytes: 0 };
    const l = list;
    fields(region, 0, region.length, (f, start, end) => {
      if (f !== 2) return;
      // SotW: the entry is an Any; delta: a Resource { name = 3; resource = 2 (Any) }.
      let anyStart = start;
      let anyEnd = end;
      let name: string | undefined;
      if (delta) {
        anyEnd = -1;
        fields(region, start, end, (rf, rs, re) => {
          if (rf === 3) name = utf8(region, rs, re);
          else if (rf === 2) [anyStart, anyEnd] = [rs, re];
        });
        if (anyEnd < 0) return; // a name only (a removal notice in Resource form): nothing to describe
      }
      let value: Uint8Array | undefined;
      fields(region, anyStart, anyEnd, (af, as, ae) => {
        if (af === 2) value = region.subarray(as, ae);
      });
      if (!value) return;
      const d = describe(typeUrl, value);
      l.described.push(d);
      l.names.push(name ?? d.name);
      l.valueBytes += value.length;
    });
    candidates.push(list);
  }
  return { typeUrl, version, nonce, removed, list };
}

function varintSize(n: number): number {
  let size = 1;
  for (; n >= 0x80; n = Math.floor(n / 0x80)) size++;
  return size;
}

function heldOf(list: ResourceList): Map<string, string[]> {
  return (list.held ??= new Map(list.described.map((d) => [d.name, d.refs])));
}

function refsOf(held: ReadonlyMap<string, string[]>): string[] {
  const out = new Set<string>();
  for (const refs of held.values()) for (const r of refs) out.add(r);
  return [...out];
}

export interface Arrival {
  typeUrl: string;
  /** performance.timeOrigin + performance.now(): comparable across processes on one machine. */
  at: number;
  bytes: number;
  resources: number;
  names: string[];
}

export interface AdsClientOptions {
  address: string;
  style: ProxyStyle;
  nodeId: string;
  metadata: Record<string, unknown>;
  /** For the grpc style: the listener `HOST:PORT`. */
  target?: string;
  onArrival?: (a: Arrival) => void;
}

export function now(): number {
  return performance.timeOrigin + performance.now();
}

export class AdsClient {
  private client: grpc.Client;
  private call?: grpc.ClientDuplexStream<Msg, Msg>;
  /** Subscribed names per type (empty set + wildcard flag for LDS/CDS in Envoy styles). */
  private readonly subs = new Map<string, Set<string>>();
  /**
   * What was received, per type. Delta: the names the proxy holds. SotW: the subscription in force when the last
   * response arrived (every SotW response answers the whole subscription it was sent for).
   */
  private readonly received = new Map<string, Set<string>>();
  /** `received` / `held` entries that are a memo's shared set or map: copied before they change. */
  private readonly shared = new WeakSet<object>();
  private readonly versions = new Map<string, string>();
  private readonly nonces = new Map<string, string>();
  /** What each resource this proxy holds refers to, by type and name: the next subscription is their union. */
  private readonly held = new Map<string, Map<string, string[]>>();
  private sentNode = false;
  bytesIn = 0;
  responses = 0;
  nacksSent = 0;

  constructor(private readonly opts: AdsClientOptions) {
    // A local subchannel pool gives every simulated proxy its own TCP connection, as real proxies have.
    this.client = new grpc.Client(opts.address, grpc.credentials.createInsecure(), {
      "grpc.use_local_subchannel_pool": 1,
      "grpc.max_receive_message_length": 256 * 1024 * 1024,
    });
  }

  start(): void {
    const t = types();
    const delta = this.opts.style === "envoy-delta";
    const req = delta ? t.DeltaDiscoveryRequest : t.DiscoveryRequest;
    const method = delta
      ? "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
      : "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
    this.call = this.client.makeBidiStreamRequest(
      method,
      // Pre-encoded requests (SotW ACKs, see ack()) pass through as they are.
      (m: Msg | Buffer) => (Buffer.isBuffer(m) ? m : Buffer.from(req.encode(req.fromObject(m)).finish())),
      // Responses are read by parseResponse (field by field, resources through a per-process memo).
      (b: Buffer) => b as unknown as Msg,
    );
    this.call.on("data", (b: Buffer) => this.onResponse(parseResponse(b, delta)));
    this.call.on("error", () => undefined);
    if (this.opts.style === "grpc") {
      this.subscribe(TypeUrl.Listener, [this.opts.target!]);
    } else {
      this.subscribe(TypeUrl.Cluster, []);
      this.subscribe(TypeUrl.Listener, []);
    }
  }

  close(): void {
    this.call?.cancel();
    this.client.close();
  }

  /** Whether this proxy asked for any of `names` of `typeUrl`: only those proxies should get a push for them. */
  subscribedToAny(typeUrl: string, names: readonly string[]): boolean {
    const subs = this.subs.get(typeUrl);
    return !!subs && names.some((n) => subs.has(n));
  }

  /** Every subscribed name of every type has arrived at least once (a proxy that is fully configured). */
  converged(): boolean {
    if (this.subs.size === 0) return false;
    for (const [type, names] of this.subs) {
      if (!this.versions.has(type)) return false;
      const got = this.received.get(type);
      if (got === names) continue;
      if (!got) return false;
      for (const n of names) if (!got.has(n)) return false;
    }
    return true;
  }

  private node(): Msg | undefined {
    if (this.sentNode) return undefined;
    this.sentNode = true;
    return { id: this.opts.nodeId, metadata: toStruct(this.opts.metadata) };
  }

  private subscribe(typeUrl: string, names: string[]): void {
    const prev = this.subs.get(typeUrl);
    const next = new Set(names);
    if (prev && prev.size === next.size && [...next].every((n) => prev.has(n))) return;
    this.subs.set(typeUrl, next);
    if (this.opts.style === "envoy-delta") {
      const add = [...next].filter((n) => !prev?.has(n));
      const remove = prev ? [...prev].filter((n) => !next.has(n)) : [];
      if (prev && add.length === 0 && remove.length === 0) return;
      this.write({ type_url: typeUrl, resource_names_subscribe: add, resource_names_unsubscribe: remove, node: this.node() });
    } else {
      this.write({ type_url: typeUrl, resource_names: [...next], version_info: this.versions.get(typeUrl) ?? "", response_nonce: this.nonces.get(typeUrl) ?? "", node: this.node() });
    }
  }

  /** The encoded resource_names of the current subscription per type: reused by every ACK until it changes. */
  private readonly namesWire = new Map<string, { names: Set<string>; bytes: Buffer }>();

  /**
   * A SotW ACK restates the whole subscription (3,000 EDS names in a large mesh). Encoding it afresh for each
   * of a thousand simulated proxies sharing one process would put the load generator's CPU into the latency
   * being measured; a real proxy has its own. Two encoded messages of one type concatenate to their merge.
   */
  private ack(typeUrl: string, version: string, nonce: string): void {
    const t = types().DiscoveryRequest;
    const names = this.subs.get(typeUrl) ?? new Set<string>();
    let wire = this.namesWire.get(typeUrl);
    if (!wire || wire.names !== names) {
      wire = { names, bytes: Buffer.from(t.encode(t.fromObject({ resource_names: [...names] })).finish()) };
      this.namesWire.set(typeUrl, wire);
    }
    const head = Buffer.from(t.encode(t.fromObject({ type_url: typeUrl, version_info: version, response_nonce: nonce })).finish());
    this.call?.write(Buffer.concat([head, wire.bytes]));
  }

  private write(m: Msg): void {
    if (!m.node) delete m.node;
    this.call?.write(m);
  }

  private onResponse(r: ParsedResponse): void {
    const at = now();
    const { typeUrl, list, removed } = r;
    const delta = this.opts.style === "envoy-delta";
    // Only LDS/CDS SotW responses are complete; RDS/EDS SotW responses and all delta responses carry changes,
    // so what the proxy holds is accumulated (and delta removals applied). A proxy that holds exactly one
    // response's list shares the memo's map instead of building its own.
    let refs: string[] = [];
    if (typeUrl !== TypeUrl.ClusterLoadAssignment) {
      const held = this.held.get(typeUrl);
      if ((!delta && (typeUrl === TypeUrl.Cluster || typeUrl === TypeUrl.Listener)) || ((!held || held.size === 0) && removed.length === 0)) {
        const h = heldOf(list);
        this.held.set(typeUrl, h);
        this.shared.add(h);
        refs = list.refs ??= refsOf(h);
      } else {
        const own = this.shared.has(held!) ? new Map(held) : held!;
        this.held.set(typeUrl, own);
        for (const d of list.described) own.set(d.name, d.refs);
        for (const n of removed) own.delete(n);
        refs = refsOf(own);
      }
    }
    this.bytesIn += list.valueBytes;
    this.responses++;
    if (delta) {
      const got = this.received.get(typeUrl);
      if ((!got || got.size === 0) && removed.length === 0) {
        const set = (list.nameSet ??= new Set(list.names));
        this.shared.add(set);
        this.received.set(typeUrl, set);
      } else {
        const own = !got ? new Set<string>() : this.shared.has(got) ? new Set(got) : got;
        for (const n of list.names) own.add(n);
        for (const n of removed) own.delete(n);
        this.received.set(typeUrl, own);
      }
    } else {
      // SotW names come from inside the resources; EDS/RDS carry the names we asked for.
      this.received.set(typeUrl, this.subs.get(typeUrl) ?? new Set());
    }
    this.versions.set(typeUrl, r.version);
    this.nonces.set(typeUrl, r.nonce);
    // ACK first (what a proxy does once the config is applied), then chase references in make-before-break order.
    if (delta) this.write({ type_url: typeUrl, response_nonce: r.nonce });
    else this.ack(typeUrl, r.version, r.nonce);
    if (typeUrl === TypeUrl.Cluster) this.subscribe(TypeUrl.ClusterLoadAssignment, refs);
    else if (typeUrl === TypeUrl.Listener) this.subscribe(TypeUrl.RouteConfiguration, refs);
    else if (typeUrl === TypeUrl.RouteConfiguration && this.opts.style === "grpc") this.subscribe(TypeUrl.Cluster, refs);
    // Reported after the references are chased: a proxy that just learned it needs more (RDS after LDS, EDS
    // after CDS) is not converged yet, and the observer must see that.
    this.opts.onArrival?.({ typeUrl, at, bytes: list.valueBytes, resources: list.described.length, names: delta ? list.names : [] });
  }
}

function toStruct(obj: Record<string, unknown>): Msg {
  const fields: Msg = {};
  for (const [k, v] of Object.entries(obj)) fields[k] = toValue(v);
  return { fields };
}

function toValue(v: unknown): Msg {
  if (v === null || v === undefined) return { nullValue: 0 };
  if (typeof v === "string") return { stringValue: v };
  if (typeof v === "number") return { numberValue: v };
  if (typeof v === "boolean") return { boolValue: v };
  if (Array.isArray(v)) return { listValue: { values: v.map(toValue) } };
  return { structValue: toStruct(v as Record<string, unknown>) };
}
