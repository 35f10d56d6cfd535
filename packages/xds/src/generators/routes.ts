// Route configurations. Envoy sidecars: one per HTTP port, named by the port, with a virtual host `HOST:PORT`
// per visible HTTP service on it and a catch-all for unknown hosts (`allow_any` to PassthroughCluster under
// ALLOW_ANY, `block_all` answering 502 under REGISTRY_ONLY). gRPC clients: one per service port, named
// `HOST:PORT` like the listener that references it, whose virtual host matches `HOST:PORT` and `HOST`.
import type { Port, Service } from "@vmpilot/registry";
import type { GenContext, Scope } from "./context.js";
import { httpRoutes, type RouteContext } from "./http-routes.js";
import { hostPortName, PASSTHROUGH_CLUSTER, portRouteConfigName } from "./names.js";
import { flavorOf } from "./flavor.js";
import { addVirtualServiceOnlyHosts } from "./mesh-vs-hosts.js";

type Json = Record<string, unknown>;

const HTTP_PROTOCOLS = new Set(["HTTP", "HTTP2", "GRPC"]);

export function isHttpPort(p: Port): boolean {
  return HTTP_PROTOCOLS.has(p.protocol);
}

const byHostMemo = new WeakMap<Scope, Map<string, Service>>();

export function routeContext(ctx: GenContext, scope: Scope): RouteContext {
  let byHost = byHostMemo.get(scope);
  if (!byHost) {
    byHost = new Map(scope.services.map((s) => [s.hostname, s]));
    byHostMemo.set(scope, byHost);
  }
  return { flavor: flavorOf(scope.kind), namespace: scope.namespace, labels: scope.labels, routing: ctx.routing, serviceByHost: byHost };
}

function virtualHost(service: Service, port: Port, ctx: GenContext, rc: RouteContext, domains: string[]): Json {
  const vs = ctx.routing.virtualService(rc.namespace, service.hostname, service.namespace);
  const routes = httpRoutes(service, port, vs, rc);
  return { name: hostPortName(service.hostname, port.number), domains, ...(routes.length ? { routes } : {}) };
}

/** Sidecar route configs keyed by name (`PORT`). */
export function sidecarRouteConfigs(ctx: GenContext, scope: Scope): Json[] {
  const rc = routeContext(ctx, scope);
  const byPort = new Map<number, Json[]>();
  for (const service of scope.services) {
    for (const port of service.ports) {
      if (!isHttpPort(port)) continue;
      const list = byPort.get(port.number) ?? [];
      list.push(virtualHost(service, port, ctx, rc, [service.hostname, hostPortName(service.hostname, port.number)]));
      byPort.set(port.number, list);
    }
  }
  addVirtualServiceOnlyHosts(ctx, scope, rc, byPort);
  const out: Json[] = [];
  for (const port of [...byPort.keys()].sort((a, b) => a - b)) {
    const vhosts = byPort.get(port)!;
    if (!vhosts.some((v) => (v.domains as string[]).includes("*"))) vhosts.push(catchAllVirtualHost(scope.outboundPolicy));
    out.push({ name: portRouteConfigName(port), virtual_hosts: vhosts, validate_clusters: false });
  }
  return out;
}

export function catchAllVirtualHost(policy: Scope["outboundPolicy"]): Json {
  if (policy === "REGISTRY_ONLY") {
    return { name: "block_all", domains: ["*"], routes: [{ name: "block_all", match: { prefix: "/" }, direct_response: { status: 502 } }] };
  }
  return { name: "allow_any", domains: ["*"], routes: [{ name: "allow_any", match: { prefix: "/" }, route: { cluster: PASSTHROUGH_CLUSTER, timeout: "0s" } }] };
}

/** Service ports a gRPC client gets a listener and route config for. */
export function grpcPorts(service: Service): Port[] {
  if (service.resolution === "NONE") return [];
  return service.ports.filter((p) => p.protocol !== "UDP");
}

/** gRPC route configs (`HOST:PORT`). */
export function grpcRouteConfigs(ctx: GenContext, scope: Scope): Json[] {
  const rc = routeContext(ctx, scope);
  const out: Json[] = [];
  for (const service of scope.services) {
    for (const port of grpcPorts(service)) {
      const name = hostPortName(service.hostname, port.number);
      out.push({ name, virtual_hosts: [virtualHost(service, port, ctx, rc, [name, service.hostname])] });
    }
  }
  return out;
}
