// Listeners of a gateway proxy (an Envoy in router mode on a VM, node id `router~IP~NAME.NS~NS.svc.cluster.local`):
// one listener `BIND_PORT` (`0.0.0.0_PORT` unless a server binds an address) per port of the Gateways that select
// the proxy, bound to the port (unlike the sidecars' per-port listeners, there is no capture in front of it).
//   - HTTP servers: one http_connection_manager with RDS `http.PORT`.
//   - HTTPS servers terminating TLS (SIMPLE, MUTUAL, OPTIONAL_MUTUAL, ISTIO_MUTUAL): one filter chain per server,
//     matched by SNI (server_names = the server's hosts; none for `*`), with its DownstreamTlsContext
//     (gateway-tls.ts) and an http_connection_manager with RDS `https.PORT.PORTNAME.GW.NS`.
//   - TLS servers terminating TLS: the same chain shape, into tcp_proxy by the bound VirtualServices' tcp routes.
//   - PASSTHROUGH servers: a chain per `tls` route match, by its sniHosts, into tcp_proxy; TLS is not terminated.
//   - TCP servers: tcp_proxy by the first bound tcp route.
// Ports with TLS servers get tls_inspector so SNI is known before a chain is chosen. Envoy rejects two chains with
// the same match, so a repeated SNI is served by the first server or route that claimed it (Gateway key order,
// then VirtualService key order), as Istio does. A port left without any chain gets no listener (Envoy rejects
// listeners without filter chains).
import type { RouteDestination } from "@vmpilot/registry";
import type { GenContext, Scope } from "./context.js";
import { anyDynamicDnsHttp, dynamicForwardProxyHttpFilter, isDynamicDns, sniDynamicForwardProxyFilter } from "./dynamic-dns.js";
import { gatewayPorts, matchBoundTo, matchingHosts, virtualServicesFor, type GatewayPort, type PlannedServer } from "./gateway-binding.js";
import { downstreamTlsSocket } from "./gateway-tls.js";
import { destinationCluster, FAULT_FILTER, type RouteContext } from "./http-routes.js";
import { outboundClusterName } from "./names.js";
import { routeContext } from "./routes.js";

type Json = Record<string, unknown>;

const HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const TCP_PROXY_TYPE = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
const ADS_SOURCE = { ads: {}, resource_api_version: "V3" };

export function gatewayListenerName(bind: string, port: number): string {
  return `${bind}_${port}`;
}

function httpConnectionManager(scope: Scope, statPrefix: string, routeName: string): Json {
  return {
    name: "envoy.filters.network.http_connection_manager",
    typed_config: {
      "@type": HCM_TYPE,
      stat_prefix: statPrefix,
      rds: { config_source: ADS_SOURCE, route_config_name: routeName },
      http_filters: [
        { name: FAULT_FILTER, typed_config: { "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault" } },
        ...(anyDynamicDnsHttp(scope.services) ? [dynamicForwardProxyHttpFilter()] : []),
        { name: "envoy.filters.http.router", typed_config: { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" } },
      ],
      // The gateway is the edge: the peer address is the client's, not a trusted hop's X-Forwarded-For.
      use_remote_address: true,
    },
  };
}

/** tcp_proxy to a rule's destinations, preceded by the SNI resolver when the one destination is a DYNAMIC_DNS service. */
function tcpFilters(dests: readonly RouteDestination[], port: number, rc: RouteContext): Json[] | undefined {
  const weighted = dests
    .map((d) => ({ c: destinationCluster(d.destination, port, rc), w: dests.length === 1 ? 100 : (d.weight ?? 0) }))
    .filter((x) => x.w > 0);
  if (weighted.length === 0) return undefined;
  if (weighted.length === 1) {
    const { c } = weighted[0]!;
    const svc = rc.serviceByHost.get(c.host);
    const sni = svc && isDynamicDns(svc) && c.name === outboundClusterName(c.port, undefined, svc.hostname) ? [sniDynamicForwardProxyFilter(c.port)] : [];
    return [...sni, { name: "envoy.filters.network.tcp_proxy", typed_config: { "@type": TCP_PROXY_TYPE, stat_prefix: c.name, cluster: c.name } }];
  }
  const clusters = weighted.map((x) => ({ name: x.c.name, weight: x.w }));
  return [{ name: "envoy.filters.network.tcp_proxy", typed_config: { "@type": TCP_PROXY_TYPE, stat_prefix: `tcp.${port}`, weighted_clusters: { clusters } } }];
}

/** The first tcp rule of a VirtualService bound to the server that applies on its port. */
function tcpRouteFilters(ctx: GenContext, scope: Scope, s: PlannedServer, port: number): Json[] | undefined {
  const rc = { ...routeContext(ctx, scope), gateway: s.key };
  for (const vs of virtualServicesFor(ctx, scope, s.key)) {
    if (matchingHosts(s.server, s.gateway.metadata.namespace, vs).length === 0) continue;
    for (const r of vs.spec.tcp ?? []) {
      const applies = !r.match?.length || r.match.some((m) => matchBoundTo(m, vs.metadata.namespace, s.key, port));
      if (!applies || !r.route?.length) continue;
      const filters = tcpFilters(r.route, port, rc);
      if (filters) return filters;
    }
  }
  return undefined;
}

/** PASSTHROUGH: one chain per bound tls rule match, by SNI; names already claimed on the port are skipped. */
function passthroughChains(ctx: GenContext, scope: Scope, s: PlannedServer, port: number, claimed: Set<string>): Json[] {
  const rc = { ...routeContext(ctx, scope), gateway: s.key };
  const chains: Json[] = [];
  for (const vs of virtualServicesFor(ctx, scope, s.key)) {
    if (matchingHosts(s.server, s.gateway.metadata.namespace, vs).length === 0) continue;
    (vs.spec.tls ?? []).forEach((r, i) => {
      if (!r.route?.length) return;
      for (const m of r.match) {
        if (!matchBoundTo(m, vs.metadata.namespace, s.key, port)) continue;
        const names = m.sniHosts.filter((h) => !claimed.has(h));
        if (names.length === 0) continue;
        const filters = tcpFilters(r.route, port, rc);
        if (!filters) continue;
        for (const n of names) claimed.add(n);
        const match: Json = names.includes("*") ? {} : { server_names: [...names].sort() };
        chains.push({ name: `${vs.metadata.namespace}.${vs.metadata.name}.tls.${i}`, filter_chain_match: match, filters });
      }
    });
  }
  return chains;
}

function portListener(ctx: GenContext, scope: Scope, gp: GatewayPort): Json | undefined {
  const chains: Json[] = [];
  const statPrefix = `outbound_${gp.bind}_${gp.port}`;
  let tlsFamily = false;
  const claimed = new Set<string>();
  for (const s of gp.servers) {
    switch (s.handling) {
      case "http":
        // All plaintext servers of the port share one connection manager and route config.
        if (chains.length === 0) chains.push({ name: s.routeName, filters: [httpConnectionManager(scope, statPrefix, s.routeName!)] });
        break;
      case "https":
      case "tls-terminate": {
        tlsFamily = true;
        const names = s.sniNames!.filter((n) => !claimed.has(n));
        if (names.length === 0) break;
        const http = s.handling === "https";
        const filters = http ? [httpConnectionManager(scope, statPrefix, s.routeName!)] : tcpRouteFilters(ctx, scope, s, gp.port);
        if (!filters) break;
        for (const n of names) claimed.add(n);
        chains.push({
          name: http ? s.routeName : `${s.key}.${s.index}`,
          filter_chain_match: names.includes("*") ? {} : { server_names: names },
          transport_socket: downstreamTlsSocket(s.server.tls ?? {}, scope, http),
          filters,
        });
        break;
      }
      case "passthrough":
        tlsFamily = true;
        chains.push(...passthroughChains(ctx, scope, s, gp.port, claimed));
        break;
      case "tcp": {
        if (chains.length > 0) break;
        const filters = tcpRouteFilters(ctx, scope, s, gp.port);
        if (filters) chains.push({ name: `${s.key}.${s.index}`, filters });
        break;
      }
    }
  }
  if (chains.length === 0) return undefined;
  const listener: Json = {
    name: gatewayListenerName(gp.bind, gp.port),
    address: { socket_address: { address: gp.bind, port_value: gp.port } },
    traffic_direction: "OUTBOUND",
    filter_chains: chains,
  };
  if (tlsFamily) {
    listener.listener_filters = [
      { name: "envoy.filters.listener.tls_inspector", typed_config: { "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector" } },
    ];
  }
  return listener;
}

/** Every listener of a gateway proxy, by port. */
export function gatewayListeners(ctx: GenContext, scope: Scope): Json[] {
  const out: Json[] = [];
  for (const gp of gatewayPorts(ctx, scope)) {
    const l = portListener(ctx, scope, gp);
    if (l) out.push(l);
  }
  return out;
}
