// generate(snapshot, view): every xDS resource one proxy should have, as proto3 JSON keyed by resource name.
// Pure: same inputs, same output. It is assembled from the parts below, which the ResourceCache (../cache.ts)
// calls individually so that it can share and reuse each part across proxies and snapshots:
//   - per service (clusters, ClusterLoadAssignments): depends on the service, its endpoints, the
//     DestinationRule that applies and the flavor (Envoy or gRPC);
//   - per scope (listeners, route configs, fixed clusters): depends on what the proxy's namespace/labels see;
//   - per proxy (inbound clusters and virtualInbound; a gRPC server's listeners): depends on the proxy's own workload.
import type { Endpoint, RegistrySnapshot, Service } from "@vmpilot/registry";
import type { ProxyView } from "../proxy-view.js";
import { blackholeCluster, passthroughCluster, serviceClusters, serviceLoadAssignments } from "./clusters.js";
import { buildScope, contextOf, inboundPorts, type DestinationRuleConfig, type GenContext, type Scope } from "./context.js";
import { flavorOf } from "./flavor.js";
import { grpcListeners, sidecarOutboundListeners, virtualInboundListener } from "./listeners.js";
import { inboundCluster } from "./clusters.js";
import { grpcRouteConfigs, sidecarRouteConfigs } from "./routes.js";
import { gatewayListeners } from "./gateway-listeners.js";
import { gatewayRouteConfigs } from "./gateway-routes.js";
import { grpcServerListeners } from "./grpc-server-listeners.js";

type Json = Record<string, unknown>;

export interface GeneratedResources {
  listeners: Map<string, object>;
  routes: Map<string, object>;
  clusters: Map<string, object>;
  /** ClusterLoadAssignments keyed by cluster name (= service_name of the EDS cluster). */
  endpoints: Map<string, object>;
}

export interface ServiceParts {
  clusters: Json[];
  loadAssignments: Json[];
}

/** The DestinationRule that shapes `service`'s clusters for proxies of `scope`. */
export function destinationRuleFor(ctx: GenContext, scope: Scope, service: Service): DestinationRuleConfig | undefined {
  return ctx.routing.destinationRule(scope.namespace, scope.labels, service.hostname, service.namespace);
}

export function endpointsOf(ctx: GenContext, service: Service): readonly Endpoint[] {
  return ctx.snapshot.endpoints.get(service.key) ?? [];
}

export function serviceParts(ctx: GenContext, scope: Scope, service: Service): ServiceParts {
  const dr = destinationRuleFor(ctx, scope, service);
  const eps = endpointsOf(ctx, service);
  const flavor = flavorOf(scope.kind);
  return { clusters: serviceClusters(service, eps, dr, flavor, scope.sdsPaths), loadAssignments: serviceLoadAssignments(service, eps, dr, flavor) };
}

/** Clusters every proxy of the scope has besides its services' (sidecars: PassthroughCluster, BlackHoleCluster). */
export function scopeFixedClusters(scope: Scope): Json[] {
  return scope.kind === "sidecar" ? [passthroughCluster(), blackholeCluster()] : [];
}

export interface ScopeHttp {
  listeners: Json[];
  routes: Json[];
}

/** Listeners and route configs of a scope. Gateways: their Gateways' servers (gateway-listeners.ts, gateway-routes.ts). */
export function scopeHttp(ctx: GenContext, scope: Scope): ScopeHttp {
  if (scope.kind === "sidecar") {
    if (scope.interceptionMode === "NONE") return { listeners: [], routes: [] };
    return { listeners: sidecarOutboundListeners(ctx, scope), routes: sidecarRouteConfigs(ctx, scope) };
  }
  if (scope.kind === "grpc") {
    const routes = grpcRouteConfigs(ctx, scope);
    return { listeners: grpcListeners(scope, routes), routes };
  }
  if (scope.kind === "gateway") return { listeners: gatewayListeners(ctx, scope), routes: gatewayRouteConfigs(ctx, scope) };
  return { listeners: [], routes: [] };
}

export interface InboundParts {
  clusters: Json[];
  listeners: Json[];
}

/**
 * The proxy's own side: `inbound|PORT||` clusters and `virtualInbound` (sidecars with capture), or the server
 * listeners of a proxyless gRPC server's own instances (grpc-server-listeners.ts).
 */
export function inboundParts(ctx: GenContext, view: ProxyView): InboundParts {
  if (view.kind === "grpc") return { clusters: [], listeners: grpcServerListeners(ctx, view) };
  if (view.kind !== "sidecar" || view.interceptionMode === "NONE") return { clusters: [], listeners: [] };
  const ports = inboundPorts(ctx.snapshot, ctx.inbound, view);
  return { clusters: ports.map(inboundCluster), listeners: [virtualInboundListener(ports, view.interceptionMode === "TPROXY")] };
}

function put(m: Map<string, object>, list: readonly Json[], key = "name"): void {
  for (const r of list) m.set(r[key] as string, r);
}

export function generate(snapshot: RegistrySnapshot, view: ProxyView): GeneratedResources {
  const ctx = contextOf(snapshot);
  const scope = buildScope(snapshot, ctx.routing, view);
  const out: GeneratedResources = { listeners: new Map(), routes: new Map(), clusters: new Map(), endpoints: new Map() };
  put(out.clusters, scopeFixedClusters(scope));
  for (const service of scope.services) {
    const parts = serviceParts(ctx, scope, service);
    put(out.clusters, parts.clusters);
    put(out.endpoints, parts.loadAssignments, "cluster_name");
  }
  const http = scopeHttp(ctx, scope);
  put(out.listeners, http.listeners);
  put(out.routes, http.routes);
  const inbound = inboundParts(ctx, view);
  put(out.clusters, inbound.clusters);
  put(out.listeners, inbound.listeners);
  return out;
}

export { buildScope, contextOf, scopeKey, RoutingIndex, InboundIndex, type GenContext, type Scope } from "./context.js";
export * from "./names.js";
