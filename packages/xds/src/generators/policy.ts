// DestinationRule traffic policy -> Envoy cluster settings.
// Merge order (Istio): the rule's top-level policy, overridden by its portLevelSettings for the port, then by the
// subset's policy (and the subset's own portLevelSettings). Each of loadBalancer / connectionPool /
// outlierDetection / tls is replaced as a whole, as Istio does, not merged field by field.
import type { ConnectionPoolSettings, LoadBalancerSettings, OutlierDetection, TrafficPolicy, ClientTLSSettings, ConsistentHashLB } from "@vmpilot/registry";
import type { DestinationRuleConfig } from "./context.js";
import { durationJson, durationMs } from "./duration.js";

export interface EffectivePolicy {
  loadBalancer?: LoadBalancerSettings;
  connectionPool?: ConnectionPoolSettings;
  outlierDetection?: OutlierDetection;
  tls?: ClientTLSSettings;
}

function overlay(base: EffectivePolicy, p: TrafficPolicy | undefined, port: number): EffectivePolicy {
  if (!p) return base;
  const out: EffectivePolicy = { ...base };
  if (p.loadBalancer) out.loadBalancer = p.loadBalancer;
  if (p.connectionPool) out.connectionPool = p.connectionPool;
  if (p.outlierDetection) out.outlierDetection = p.outlierDetection;
  if (p.tls) out.tls = p.tls;
  const pl = p.portLevelSettings?.find((s) => s.port.number === port);
  if (pl) {
    if (pl.loadBalancer) out.loadBalancer = pl.loadBalancer;
    if (pl.connectionPool) out.connectionPool = pl.connectionPool;
    if (pl.outlierDetection) out.outlierDetection = pl.outlierDetection;
    if (pl.tls) out.tls = pl.tls;
  }
  return out;
}

export function effectivePolicy(dr: DestinationRuleConfig | undefined, port: number, subset?: string): EffectivePolicy {
  if (!dr) return {};
  let p = overlay({}, dr.spec.trafficPolicy, port);
  if (subset) p = overlay(p, dr.spec.subsets?.find((s) => s.name === subset)?.trafficPolicy, port);
  return p;
}

export const MAX_UINT32 = 4294967295;

export type ClusterFlavor = "envoy" | "grpc";

type Json = Record<string, unknown>;

/** lb_policy and its config. gRPC clients take only ROUND_ROBIN and RING_HASH. */
export function loadBalancerFields(lb: LoadBalancerSettings | undefined, flavor: ClusterFlavor): Json {
  const ch = lb?.consistentHash;
  if (ch) {
    if (ch.maglev && flavor === "envoy") {
      return { lb_policy: "MAGLEV", ...(ch.maglev.tableSize ? { maglev_lb_config: { table_size: ch.maglev.tableSize } } : {}) };
    }
    const minRing = ch.ringHash?.minimumRingSize ?? ch.minimumRingSize;
    const cfg: Json = {};
    if (minRing) cfg.minimum_ring_size = minRing;
    if (flavor === "grpc") cfg.hash_function = "XX_HASH";
    return { lb_policy: "RING_HASH", ...(Object.keys(cfg).length ? { ring_hash_lb_config: cfg } : {}) };
  }
  if (flavor === "grpc") return { lb_policy: "ROUND_ROBIN" };
  switch (lb?.simple) {
    case "ROUND_ROBIN":
      return { lb_policy: "ROUND_ROBIN" };
    case "RANDOM":
      return { lb_policy: "RANDOM" };
    // Istio's default since 1.14 is LEAST_REQUEST; LEAST_CONN is its deprecated alias.
    default:
      return { lb_policy: "LEAST_REQUEST" };
  }
}

/** Route hash policies for a consistent-hash destination (gRPC honours header hashing only). */
export function hashPolicies(ch: ConsistentHashLB | undefined, flavor: ClusterFlavor): Json[] {
  if (!ch) return [];
  if (ch.httpHeaderName) return [{ header: { header_name: ch.httpHeaderName } }];
  if (flavor === "grpc") return [];
  if (ch.httpCookie) {
    const cookie: Json = { name: ch.httpCookie.name };
    if (ch.httpCookie.path) cookie.path = ch.httpCookie.path;
    if (ch.httpCookie.ttl) cookie.ttl = durationJson(ch.httpCookie.ttl);
    return [{ cookie }];
  }
  if (ch.useSourceIp) return [{ connection_properties: { source_ip: true } }];
  if (ch.httpQueryParameterName) return [{ query_parameter: { name: ch.httpQueryParameterName } }];
  return [];
}

/**
 * Circuit breakers. Envoy's built-in defaults (1024) throttle busy meshes, so, like Istio, sidecars get
 * effectively unlimited thresholds unless a rule says otherwise; gRPC clients only get what a rule sets.
 */
export function circuitBreakers(cp: ConnectionPoolSettings | undefined, flavor: ClusterFlavor): Json | undefined {
  const t: Json = {};
  const unset = flavor === "envoy" ? MAX_UINT32 : undefined;
  const put = (k: string, v: number | undefined): void => {
    const val = v ?? unset;
    if (val !== undefined) t[k] = val;
  };
  put("max_connections", cp?.tcp?.maxConnections);
  put("max_pending_requests", cp?.http?.http1MaxPendingRequests);
  put("max_requests", cp?.http?.http2MaxRequests);
  put("max_retries", cp?.http?.maxRetries);
  if (Object.keys(t).length === 0) return undefined;
  if (flavor === "envoy") t.track_remaining = true;
  return { thresholds: [t] };
}

export function outlierDetection(od: OutlierDetection | undefined): Json | undefined {
  if (!od) return undefined;
  const out: Json = {};
  const c5xx = od.consecutive5xxErrors ?? od.consecutiveErrors;
  if (c5xx !== undefined) {
    if (c5xx > 0) out.consecutive_5xx = c5xx;
    // An explicit 0 disables 5xx ejection (Envoy would otherwise default to 5).
    out.enforcing_consecutive_5xx = c5xx > 0 ? 100 : 0;
  }
  if (od.consecutiveGatewayErrors !== undefined) {
    if (od.consecutiveGatewayErrors > 0) out.consecutive_gateway_failure = od.consecutiveGatewayErrors;
    out.enforcing_consecutive_gateway_failure = od.consecutiveGatewayErrors > 0 ? 100 : 0;
  }
  if (od.consecutiveLocalOriginFailures !== undefined) {
    out.consecutive_local_origin_failure = od.consecutiveLocalOriginFailures;
    out.enforcing_consecutive_local_origin_failure = 100;
  }
  if (od.splitExternalLocalOriginErrors) out.split_external_local_origin_errors = true;
  if (od.interval) out.interval = durationJson(od.interval);
  if (od.baseEjectionTime) out.base_ejection_time = durationJson(od.baseEjectionTime);
  if (od.maxEjectionPercent !== undefined) out.max_ejection_percent = od.maxEjectionPercent;
  // Istio disables success-rate ejection, which Envoy (and gRPC) would otherwise enable by default.
  out.enforcing_success_rate = 0;
  return out;
}

/** Cluster fields from connectionPool that are not circuit breakers (Envoy only). */
export function connectionPoolFields(cp: ConnectionPoolSettings | undefined, http2: boolean): Json {
  const out: Json = {};
  const ka = cp?.tcp?.tcpKeepalive;
  if (ka) {
    const k: Json = {};
    if (ka.probes !== undefined) k.keepalive_probes = ka.probes;
    if (ka.time) k.keepalive_time = wholeSeconds(ka.time);
    if (ka.interval) k.keepalive_interval = wholeSeconds(ka.interval);
    out.upstream_connection_options = { tcp_keepalive: k };
  }
  const common: Json = {};
  const h = cp?.http;
  if (h?.idleTimeout) common.idle_timeout = durationJson(h.idleTimeout);
  if (h?.maxRequestsPerConnection) common.max_requests_per_connection = h.maxRequestsPerConnection;
  if (cp?.tcp?.maxConnectionDuration) common.max_connection_duration = durationJson(cp.tcp.maxConnectionDuration);
  const upgrade = h?.h2UpgradePolicy === "UPGRADE";
  const useH2 = (http2 || upgrade) && h?.h2UpgradePolicy !== "DO_NOT_UPGRADE";
  if (Object.keys(common).length > 0 || useH2 || h?.useClientProtocol) {
    const opts: Json = { "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions" };
    if (Object.keys(common).length > 0) opts.common_http_protocol_options = common;
    const h2opts: Json = {};
    if (h?.maxConcurrentStreams) h2opts.max_concurrent_streams = h.maxConcurrentStreams;
    if (h?.useClientProtocol) opts.use_downstream_protocol_config = { http_protocol_options: {}, http2_protocol_options: h2opts };
    else if (useH2) opts.explicit_http_config = { http2_protocol_options: h2opts };
    else opts.explicit_http_config = { http_protocol_options: {} };
    out.typed_extension_protocol_options = { "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": opts };
  }
  return out;
}

function wholeSeconds(d: string): number {
  return Math.max(1, Math.round(durationMs(d) / 1000));
}
