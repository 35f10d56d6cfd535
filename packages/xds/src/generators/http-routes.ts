// VirtualService HTTP routes -> Envoy routes for one destination service port, as a sidecar or gRPC client sees
// them. Each match block of a VirtualService route becomes its own Envoy route (Istio's expansion); match blocks
// bound to another port, other source labels/namespace or only to gateways are dropped, and a route whose every
// match block is dropped is dropped. gRPC clients get `route` actions only (no redirect, direct_response), no
// rewrites, mirrors or header edits (gRPC ignores them), timeouts as max_stream_duration and retries only when
// the VirtualService asks for them, in gRPC status names.
import type { Destination, HTTPFaultInjection, HTTPMatchRequest, HTTPRetry, HTTPRoute, HeaderOperations, Percent, Port, Service, StringMatch } from "@vmpilot/registry";
import type { RoutingIndex, VirtualServiceConfig } from "./context.js";
import { labelsMatch } from "./context.js";
import { durationJson } from "./duration.js";
import { outboundClusterName } from "./names.js";
import { effectivePolicy, hashPolicies, type ClusterFlavor } from "./policy.js";
import { MESH_GATEWAY, namesGateway } from "./gateway-binding.js";

type Json = Record<string, unknown>;

export const FAULT_FILTER = "envoy.filters.http.fault";
const FAULT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault";

/** Istio's default retry policy for sidecars when a VirtualService sets none. */
export const DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";
const DEFAULT_RETRY_ATTEMPTS = 2;
/** The retry_on conditions gRPC clients understand. */
const GRPC_RETRY_CODES = new Set(["cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable"]);

const GRPC_STATUS: Record<string, number> = {
  OK: 0, CANCELLED: 1, UNKNOWN: 2, INVALID_ARGUMENT: 3, DEADLINE_EXCEEDED: 4, NOT_FOUND: 5, ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7, RESOURCE_EXHAUSTED: 8, FAILED_PRECONDITION: 9, ABORTED: 10, OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12, INTERNAL: 13, UNAVAILABLE: 14, DATA_LOSS: 15, UNAUTHENTICATED: 16,
};

const REDIRECT_CODES: Record<number, string> = { 301: "MOVED_PERMANENTLY", 302: "FOUND", 303: "SEE_OTHER", 307: "TEMPORARY_REDIRECT", 308: "PERMANENT_REDIRECT" };

export interface RouteContext {
  flavor: ClusterFlavor;
  /** The proxy's namespace and labels (DestinationRule lookup, sourceLabels/sourceNamespace matching). */
  namespace: string;
  labels: Readonly<Record<string, string>>;
  routing: RoutingIndex;
  /** Visible services by hostname. */
  serviceByHost: ReadonlyMap<string, Service>;
  /**
   * The Gateway (`ns/name`) whose routes are being built, for gateway proxies; absent for sidecars and gRPC
   * clients, which are the reserved `mesh` gateway. Match blocks bound to other gateways are dropped.
   */
  gateway?: string;
}

/** Istio's Percent (0-100, fractional) as an Envoy FractionalPercent per million. */
function fraction(p: Percent | undefined, legacyPercent?: number): Json {
  if (p) return { numerator: Math.round(p.value * 10_000), denominator: "MILLION" };
  if (legacyPercent !== undefined) return { numerator: legacyPercent, denominator: "HUNDRED" };
  return { numerator: 100, denominator: "HUNDRED" };
}

function stringMatch(m: StringMatch): Json {
  if (m.exact !== undefined) return { exact: m.exact };
  if (m.prefix !== undefined) return { prefix: m.prefix };
  if (m.regex !== undefined) return { safe_regex: { regex: m.regex } };
  return { safe_regex: { regex: ".*" } };
}

function headerMatcher(name: string, m: StringMatch, invert: boolean): Json {
  const h: Json = { name };
  if (m.exact === undefined && m.prefix === undefined && m.regex === undefined) h.present_match = true;
  else h.string_match = stringMatch(m);
  if (invert) h.invert_match = true;
  return h;
}

/** Whether a match block applies to this proxy and port (Istio drops the others for this listener). */
function matchApplies(m: HTTPMatchRequest, port: number, ctx: RouteContext, vsNamespace: string): boolean {
  if (m.port !== undefined && m.port !== port) return false;
  if (m.sourceLabels && !labelsMatch(ctx.labels, m.sourceLabels)) return false;
  if (m.sourceNamespace !== undefined && m.sourceNamespace !== ctx.namespace) return false;
  if (m.gateways && m.gateways.length > 0 && !namesGateway(m.gateways, vsNamespace, ctx.gateway ?? MESH_GATEWAY)) return false;
  return true;
}

function routeMatch(m: HTTPMatchRequest | undefined): Json {
  const out: Json = {};
  const uri = m?.uri;
  if (uri?.exact !== undefined) out.path = uri.exact;
  else if (uri?.prefix !== undefined) out.prefix = uri.prefix;
  else if (uri?.regex !== undefined) out.safe_regex = { regex: uri.regex };
  else out.prefix = "/";
  if (m?.ignoreUriCase) out.case_sensitive = false;
  const headers: Json[] = [];
  for (const [name, sm] of Object.entries(m?.headers ?? {})) headers.push(headerMatcher(name, sm, false));
  for (const [name, sm] of Object.entries(m?.withoutHeaders ?? {})) headers.push(headerMatcher(name, sm, true));
  if (m?.method) headers.push(headerMatcher(":method", m.method, false));
  if (m?.authority) headers.push(headerMatcher(":authority", m.authority, false));
  if (m?.scheme) headers.push(headerMatcher(":scheme", m.scheme, false));
  if (headers.length) out.headers = headers;
  const query = Object.entries(m?.queryParams ?? {}).map(([name, sm]) => ({ name, string_match: stringMatch(sm) }));
  if (query.length) out.query_parameters = query;
  return out;
}

/** The cluster a destination names; its port defaults to the destination service's only port, else this one. */
export function destinationCluster(d: Destination, port: number, ctx: RouteContext): { name: string; host: string; port: number } {
  const svc = ctx.serviceByHost.get(d.host);
  let p = d.port?.number;
  if (p === undefined) p = svc && svc.ports.length === 1 ? svc.ports[0]!.number : port;
  return { name: outboundClusterName(p, d.subset, d.host), host: d.host, port: p };
}

function headerOps(ops: HeaderOperations | undefined, prefix: "request" | "response"): Json {
  if (!ops) return {};
  const add: Json[] = [];
  for (const [key, value] of Object.entries(ops.set ?? {})) add.push({ header: { key, value }, append_action: "OVERWRITE_IF_EXISTS_OR_ADD" });
  for (const [key, value] of Object.entries(ops.add ?? {})) add.push({ header: { key, value }, append_action: "APPEND_IF_EXISTS_OR_ADD" });
  const out: Json = {};
  if (add.length) out[`${prefix}_headers_to_add`] = add;
  if (ops.remove?.length) out[`${prefix}_headers_to_remove`] = [...ops.remove];
  return out;
}

function retryPolicy(r: HTTPRetry | undefined, ctx: RouteContext): Json | undefined {
  if (ctx.flavor === "grpc") {
    if (!r || r.attempts <= 0) return undefined;
    const codes = (r.retryOn ?? DEFAULT_RETRY_ON).split(",").map((s) => s.trim()).filter((c) => GRPC_RETRY_CODES.has(c));
    if (codes.length === 0) return undefined;
    return { retry_on: codes.join(","), num_retries: r.attempts };
  }
  if (r && r.attempts <= 0) return undefined;
  const tokens = (r?.retryOn ?? DEFAULT_RETRY_ON).split(",").map((s) => s.trim()).filter(Boolean);
  const codes = tokens.filter((t) => /^\d{3}$/.test(t)).map(Number);
  const conditions = tokens.filter((t) => !/^\d{3}$/.test(t));
  if (codes.length && !conditions.includes("retriable-status-codes")) conditions.push("retriable-status-codes");
  const out: Json = {
    retry_on: conditions.join(","),
    num_retries: r?.attempts ?? DEFAULT_RETRY_ATTEMPTS,
    retry_host_predicate: [
      { name: "envoy.retry_host_predicates.previous_hosts", typed_config: { "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate" } },
    ],
    host_selection_retry_max_attempts: "5",
  };
  if (conditions.includes("retriable-status-codes")) out.retriable_status_codes = codes.length ? codes : [503];
  if (r?.perTryTimeout) out.per_try_timeout = durationJson(r.perTryTimeout);
  return out;
}

export function faultConfig(f: HTTPFaultInjection): Json {
  const out: Json = { "@type": FAULT_TYPE };
  if (f.delay) out.delay = { fixed_delay: durationJson(f.delay.fixedDelay), percentage: fraction(f.delay.percentage, f.delay.percent) };
  if (f.abort) {
    const abort: Json = { percentage: fraction(f.abort.percentage) };
    if (f.abort.grpcStatus !== undefined) abort.grpc_status = GRPC_STATUS[f.abort.grpcStatus.toUpperCase()] ?? Number(f.abort.grpcStatus);
    else abort.http_status = f.abort.httpStatus ?? 503;
    out.abort = abort;
  }
  return out;
}

/** Cluster or weighted clusters for a route's destinations (zero weights dropped; unset weights equal when all unset). */
function clusterSpecifier(route: HTTPRoute, port: number, ctx: RouteContext): { spec: Json; single?: Destination } | undefined {
  const dests = route.route ?? [];
  if (dests.length === 0) return undefined;
  const allUnset = dests.every((d) => d.weight === undefined);
  const weighted = dests
    .map((d) => ({ d, w: dests.length === 1 ? 100 : allUnset ? 1 : (d.weight ?? 0) }))
    .filter((x) => x.w > 0);
  if (weighted.length === 0) return undefined;
  if (weighted.length === 1) {
    const only = weighted[0]!.d.destination;
    return { spec: { cluster: destinationCluster(only, port, ctx).name }, single: only };
  }
  const clusters = weighted.map(({ d, w }) => {
    const c: Json = { name: destinationCluster(d.destination, port, ctx).name, weight: w };
    if (ctx.flavor === "envoy") Object.assign(c, headerOps(d.headers?.request, "request"), headerOps(d.headers?.response, "response"));
    return c;
  });
  // No total_weight: it is deprecated, and Envoy (like gRPC) uses the sum of the weights.
  return { spec: { weighted_clusters: { clusters } } };
}

function routeAction(route: HTTPRoute, port: number, ctx: RouteContext): Json | undefined {
  const cs = clusterSpecifier(route, port, ctx);
  if (!cs) return undefined;
  const action: Json = { ...cs.spec };
  // Consistent hashing applies to a single destination (Istio takes the policy of the route's cluster).
  if (cs.single) {
    const d = cs.single;
    const dest = destinationCluster(d, port, ctx);
    const svc = ctx.serviceByHost.get(dest.host);
    const dr = svc ? ctx.routing.destinationRule(ctx.namespace, ctx.labels, svc.hostname, svc.namespace) : undefined;
    const hp = hashPolicies(effectivePolicy(dr, dest.port, d.subset).loadBalancer?.consistentHash, ctx.flavor);
    if (hp.length) action.hash_policy = hp;
  }
  if (ctx.flavor === "grpc") {
    if (route.timeout) {
      const t = durationJson(route.timeout);
      action.max_stream_duration = { max_stream_duration: t, grpc_timeout_header_max: t };
    }
    const rp = retryPolicy(route.retries, ctx);
    if (rp) action.retry_policy = rp;
    return action;
  }
  action.timeout = route.timeout ? durationJson(route.timeout) : "0s";
  const rp = retryPolicy(route.retries, ctx);
  if (rp) action.retry_policy = rp;
  const rw = route.rewrite;
  if (rw?.uri !== undefined) action.prefix_rewrite = rw.uri;
  else if (rw?.uriRegexRewrite) action.regex_rewrite = { pattern: { regex: rw.uriRegexRewrite.match }, substitution: rw.uriRegexRewrite.rewrite };
  if (rw?.authority) action.host_rewrite_literal = rw.authority;
  if (route.mirror) {
    action.request_mirror_policies = [
      { cluster: destinationCluster(route.mirror, port, ctx).name, runtime_fraction: { default_value: fraction(route.mirrorPercentage) } },
    ];
  }
  return action;
}

/** The non-match part of an Envoy route for a VirtualService route; undefined when this flavor cannot have it. */
function routeBody(route: HTTPRoute, port: number, ctx: RouteContext): Json | undefined {
  const body: Json = {};
  if (route.redirect) {
    if (ctx.flavor === "grpc") return undefined;
    const r = route.redirect;
    const redirect: Json = {};
    if (r.uri !== undefined) redirect.path_redirect = r.uri;
    if (r.authority !== undefined) redirect.host_redirect = r.authority;
    if (r.port !== undefined) redirect.port_redirect = r.port;
    if (r.scheme !== undefined) redirect.scheme_redirect = r.scheme;
    redirect.response_code = REDIRECT_CODES[r.redirectCode ?? 301] ?? "MOVED_PERMANENTLY";
    body.redirect = redirect;
  } else if (route.directResponse) {
    if (ctx.flavor === "grpc") return undefined;
    const dr: Json = { status: route.directResponse.status };
    const b = route.directResponse.body;
    if (b?.string !== undefined) dr.body = { inline_string: b.string };
    else if (b?.bytes !== undefined) dr.body = { inline_bytes: b.bytes };
    body.direct_response = dr;
  } else {
    const action = routeAction(route, port, ctx);
    if (!action) return undefined;
    body.route = action;
  }
  if (route.fault) body.typed_per_filter_config = { [FAULT_FILTER]: faultConfig(route.fault) };
  if (ctx.flavor === "envoy") Object.assign(body, headerOps(route.headers?.request, "request"), headerOps(route.headers?.response, "response"));
  return body;
}

/** Envoy routes for `service` port `port` from its VirtualService, or the default route to the service. */
export function httpRoutes(service: Service, port: Port, vs: VirtualServiceConfig | undefined, ctx: RouteContext): Json[] {
  if (!vs) return [defaultRoute(service, port, ctx)];
  return virtualServiceRoutes(vs, port.number, ctx);
}

/** Envoy routes of a VirtualService's http rules that apply on `port` (gateway servers use this directly). */
export function virtualServiceRoutes(vs: VirtualServiceConfig, port: number, ctx: RouteContext): Json[] {
  const out: Json[] = [];
  (vs.spec.http ?? []).forEach((route, i) => {
    const matches = route.match && route.match.length > 0 ? route.match.filter((m) => matchApplies(m, port, ctx, vs.metadata.namespace)) : [undefined];
    if (matches.length === 0) return;
    const body = routeBody(route, port, ctx);
    if (!body) return;
    const name = route.name ?? `${vs.metadata.namespace}.${vs.metadata.name}.${i}`;
    for (const m of matches) out.push({ name: m?.name ? `${name}.${m.name}` : name, match: routeMatch(m), ...body });
  });
  return out;
}

export function hasFault(routes: readonly Json[]): boolean {
  return routes.some((r) => r.typed_per_filter_config !== undefined);
}

/** No VirtualService: everything to the service port (with Istio's default retries and hash policy, if any). */
export function defaultRoute(service: Service, port: Port, ctx: RouteContext): Json {
  const synthetic: HTTPRoute = { route: [{ destination: { host: service.hostname, port: { number: port.number } } }] };
  return { name: "default", match: { prefix: "/" }, route: routeAction(synthetic, port.number, ctx) };
}
