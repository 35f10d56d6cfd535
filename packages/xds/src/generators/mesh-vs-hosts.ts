// Virtual hosts for VirtualService hosts that name no visible service (Istio's separateVSHostsAndServices).
//
// A VirtualService may route a host the proxy has no ServiceEntry for: the ServiceEntry reference's egress example
// exports `httpbin.com` only to namespace `egress`, and its VirtualService (exported everywhere) sends sidecars'
// httpbin.com traffic to the egress gateway. Istio gives every sidecar that sees the VirtualService a virtual host
// for such hosts in the route config of each HTTP port where the VirtualService has routes; without it, sidecars
// outside `egress` would pass httpbin.com straight through (ALLOW_ANY) or block it (REGISTRY_ONLY), skipping the
// gateway. Hosts that match a visible service are left to the per-service virtual hosts.
import type { Service } from "@vmpilot/registry";
import { isExportedTo, normalizeExportTo } from "@vmpilot/registry";
import type { GenContext, Scope, VirtualServiceConfig } from "./context.js";
import { hostMatches, sidecarAllows } from "./context.js";
import { MESH_GATEWAY, namesGateway } from "./gateway-binding.js";
import { virtualServiceRoutes, type RouteContext } from "./http-routes.js";
import { hostPortName } from "./names.js";

type Json = Record<string, unknown>;

/** Mesh-bound VirtualServices exported to the proxy, those of its own namespace first (Istio's precedence). */
function meshVirtualServices(ctx: GenContext, scope: Scope): VirtualServiceConfig[] {
  const visible = ctx.routing.virtualServices.filter(
    (vs) => isExportedTo(normalizeExportTo(vs.spec.exportTo, vs.metadata.namespace), scope.namespace) && namesGateway(vs.spec.gateways, vs.metadata.namespace, MESH_GATEWAY),
  );
  return [...visible.filter((vs) => vs.metadata.namespace === scope.namespace), ...visible.filter((vs) => vs.metadata.namespace !== scope.namespace)];
}

/**
 * Adds, to each port's virtual hosts (`byPort`, HTTP ports of the sidecar's route configs), the virtual hosts of
 * VirtualService hosts without a visible service. A domain already present on a port is never added twice.
 */
export function addVirtualServiceOnlyHosts(ctx: GenContext, scope: Scope, rc: RouteContext, byPort: Map<number, Json[]>): void {
  if (byPort.size === 0) return;
  const taken = new Map<number, Set<string>>();
  for (const [port, vhosts] of byPort) taken.set(port, new Set(vhosts.flatMap((v) => v.domains as string[])));
  for (const vs of meshVirtualServices(ctx, scope)) {
    for (const host of vs.spec.hosts ?? []) {
      if (scope.services.some((s) => hostMatches(host, s.hostname))) continue;
      // A Sidecar's egress hosts scope VirtualServices by their namespace and hosts, as they scope services.
      if (scope.sidecar && !sidecarAllows(scope.sidecar, { namespace: vs.metadata.namespace, hostname: host } as Service)) continue;
      for (const [port, vhosts] of byPort) {
        const domains = [host, hostPortName(host, port)];
        const seen = taken.get(port)!;
        if (domains.some((d) => seen.has(d))) continue;
        const routes = virtualServiceRoutes(vs, port, rc);
        if (routes.length === 0) continue;
        for (const d of domains) seen.add(d);
        vhosts.push({ name: hostPortName(host, port), domains, routes });
      }
    }
  }
}
