// Route configurations of a gateway proxy: `http.PORT` for the plaintext HTTP servers of a port, and
// `https.PORT.PORTNAME.GW.NS` for each HTTPS server that terminates TLS (Istio's names). Their virtual hosts are
// the hosts of the VirtualServices bound to the server's Gateway, narrowed to the server's hosts
// (gateway-binding.ts), named `HOST:PORT` and matching `HOST` and `HOST:*` (clients put the port in Host when
// it is not the scheme's default). Routes come from the VirtualServices' http rules through the sidecars' own
// conversion (http-routes.ts), keeping only match blocks bound to this Gateway and port. Several
// VirtualServices for one host are merged in key order, as Istio merges them on gateways. A route config with
// no virtual host gets Istio's `blackhole:PORT` host, which answers 404.
import type { GenContext, Scope } from "./context.js";
import { gatewayPorts, matchingHosts, virtualServicesFor, type PlannedServer } from "./gateway-binding.js";
import { virtualServiceRoutes } from "./http-routes.js";
import { hostPortName } from "./names.js";
import { routeContext } from "./routes.js";

type Json = Record<string, unknown>;

function domainsOf(host: string): string[] {
  return host === "*" ? ["*"] : [host, `${host}:*`];
}

/** Virtual hosts for the servers sharing one route config. */
export function gatewayVirtualHosts(ctx: GenContext, scope: Scope, servers: readonly PlannedServer[], port: number): Json[] {
  const base = routeContext(ctx, scope);
  const byHost = new Map<string, Json>();
  for (const s of servers) {
    const rc = { ...base, gateway: s.key };
    for (const vs of virtualServicesFor(ctx, scope, s.key)) {
      const hosts = matchingHosts(s.server, s.gateway.metadata.namespace, vs);
      if (hosts.length === 0) continue;
      const routes = virtualServiceRoutes(vs, port, rc);
      if (routes.length === 0) continue;
      for (const host of hosts) {
        const existing = byHost.get(host);
        if (existing) {
          existing.routes = [...(existing.routes as Json[]), ...routes];
          continue;
        }
        const vh: Json = { name: hostPortName(host, port), domains: domainsOf(host), routes };
        if (s.server.tls?.httpsRedirect) vh.require_tls = "ALL";
        byHost.set(host, vh);
      }
    }
  }
  const vhosts = [...byHost.values()];
  return vhosts.length > 0 ? vhosts : [{ name: `blackhole:${port}`, domains: ["*"] }];
}

/** Every route config of a gateway proxy (listeners on different bind addresses share `http.PORT`). */
export function gatewayRouteConfigs(ctx: GenContext, scope: Scope): Json[] {
  const byName = new Map<string, { port: number; servers: PlannedServer[] }>();
  for (const gp of gatewayPorts(ctx, scope)) {
    for (const s of gp.servers) {
      if (!s.routeName) continue;
      const entry = byName.get(s.routeName) ?? { port: gp.port, servers: [] };
      entry.servers.push(s);
      byName.set(s.routeName, entry);
    }
  }
  // A cluster may be missing while its destination is not (yet) visible: 503 for that route, not a NACK.
  return [...byName].map(([name, e]) => ({ name, virtual_hosts: gatewayVirtualHosts(ctx, scope, e.servers, e.port), validate_clusters: false }));
}
