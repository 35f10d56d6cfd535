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

/** Field 1 (a string) of an encoded message, without decoding the rest. */
function field1(value: Uint8Array): string {
  let pos = 0;
  const varint = (): number => {
    let n = 0;
    for (let shift = 1; pos < value.length; shift *= 128) {
      const b = value[pos++]!;
      n += (b & 0x7f) * shift;
      if (b < 0x80) break;
    }
    return n;
  };
  while (pos < value.length) {
    const key = varint();
    const wire = key & 7;
    if (wire === 2) {
      const len = varint();
      if (key >>> 3 === 1) return Buffer.from(value.buffer, value.byteOffset + pos, len).toString("utf8");
      pos += len;
    } else if (wire === 0) varint();
    else if (wire === 1) pos += 8;
    else if (wire === 5) pos += 4;
    else break;
  }
  return "";
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
  private readonly received = new Map<string, Set<string>>();
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
    const [req, res] = delta ? [t.DeltaDiscoveryRequest, t.DeltaDiscoveryResponse] : [t.DiscoveryRequest, t.DiscoveryResponse];
    const method = delta
      ? "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
      : "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
    this.call = this.client.makeBidiStreamRequest(
      method,
      // Pre-encoded requests (SotW ACKs, see ack()) pass through as they are.
      (m: Msg | Buffer) => (Buffer.isBuffer(m) ? m : Buffer.from(req.encode(req.fromObject(m)).finish())),
      // The decoded message as is (no toObject): resource values stay views into the received buffer.
      (b: Buffer) => res.decode(b) as unknown as Msg,
    );
    this.call.on("data", (m: Msg) => this.onResponse(m));
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
      const got = this.received.get(type) ?? new Set();
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

  private onResponse(m: Msg): void {
    const at = now();
    const typeUrl = m.type_url as string;
    const resources: Msg[] = (m.resources ?? []).map((r: Msg) => (this.opts.style === "envoy-delta" ? r.resource : r)).filter(Boolean);
    const names: string[] = this.opts.style === "envoy-delta" ? (m.resources ?? []).map((r: Msg) => r.name) : [];
    let bytes = 0;
    // Only LDS/CDS SotW responses are complete; RDS/EDS SotW responses and all delta responses carry changes,
    // so what the proxy holds is accumulated (and delta removals applied).
    const held = this.held.get(typeUrl) ?? new Map<string, string[]>();
    this.held.set(typeUrl, held);
    if (this.opts.style !== "envoy-delta" && (typeUrl === TypeUrl.Cluster || typeUrl === TypeUrl.Listener)) held.clear();
    for (const r of resources) {
      bytes += r.value.length;
      const d = describe(typeUrl, r.value);
      held.set(d.name, d.refs);
    }
    for (const n of m.removed_resources ?? []) held.delete(n);
    const refs = typeUrl === TypeUrl.ClusterLoadAssignment ? [] : [...new Set([...held.values()].flat())];
    this.bytesIn += bytes;
    this.responses++;
    const got = this.received.get(typeUrl) ?? new Set<string>();
    if (this.opts.style === "envoy-delta") {
      for (const n of names) got.add(n);
      for (const n of m.removed_resources ?? []) got.delete(n);
    } else {
      // SotW names come from inside the resources; EDS/RDS carry the names we asked for.
      for (const n of this.subs.get(typeUrl) ?? []) got.add(n);
    }
    this.received.set(typeUrl, got);
    this.versions.set(typeUrl, m.version_info ?? m.system_version_info ?? "");
    this.nonces.set(typeUrl, m.nonce);
    // ACK first (what a proxy does once the config is applied), then chase references in make-before-break order.
    if (this.opts.style === "envoy-delta") this.write({ type_url: typeUrl, response_nonce: m.nonce });
    else this.ack(typeUrl, m.version_info, m.nonce);
    if (typeUrl === TypeUrl.Cluster) this.subscribe(TypeUrl.ClusterLoadAssignment, refs);
    else if (typeUrl === TypeUrl.Listener) this.subscribe(TypeUrl.RouteConfiguration, refs);
    else if (typeUrl === TypeUrl.RouteConfiguration && this.opts.style === "grpc") this.subscribe(TypeUrl.Cluster, refs);
    // Reported after the references are chased: a proxy that just learned it needs more (RDS after LDS, EDS
    // after CDS) is not converged yet, and the observer must see that.
    this.opts.onArrival?.({ typeUrl, at, bytes, resources: resources.length, names });
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
