// Listeners.
// Envoy sidecars with traffic capture (REDIRECT/TPROXY): `virtualOutbound` (15001, use_original_dst) hands each
// connection to the per-port listener `0.0.0.0_PORT` (bind_to_port false, as in Istio) for its original port,
// or to its default chain (PassthroughCluster under ALLOW_ANY, BlackHoleCluster under REGISTRY_ONLY).
// A per-port listener has: one HTTP chain (http_connection_manager, RDS route config `PORT`) when HTTP services
// use the port; TLS chains by SNI (tls_inspector) for TLS/HTTPS services; TCP chains by destination address for
// TCP services with addresses; and a default chain to the single address-less TCP service, else pass/block.
// `virtualInbound` (15006) sends each of the workload's own ports to `inbound|PORT||`, anything else through.
// With interception NONE there is nothing to capture, so no capture listeners (binding ports directly for
// NONE is left to the gateway/DNS work of issue 8).
// gRPC clients: one `api_listener` per service port, `HOST:PORT`, with the fault filter when a route of its
// route config injects faults, and the router last.
import type { Port, Service, TLSRoute, TCPRoute } from "@vmpilot/registry";
import type { GenContext, InboundPort, Scope } from "./context.js";
import { labelsMatch } from "./context.js";
import { FAULT_FILTER, destinationCluster, hasFault } from "./http-routes.js";
import {
  BLACKHOLE_CLUSTER,
  hostPortName,
  inboundClusterName,
  INBOUND_CAPTURE_PORT,
  OUTBOUND_CAPTURE_PORT,
  outboundClusterName,
  outboundListenerName,
  PASSTHROUGH_CLUSTER,
  portRouteConfigName,
  VIRTUAL_INBOUND_LISTENER,
  VIRTUAL_OUTBOUND_LISTENER,
} from "./names.js";
import { grpcPorts, isHttpPort, routeContext } from "./routes.js";
import { dynamicForwardProxyHttpFilter, isDynamicDns, sniDynamicForwardProxyFilter } from "./dynamic-dns.js";
import { MESH_GATEWAY, namesGateway } from "./gateway-binding.js";

type Json = Record<string, unknown>;

const HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const ADS_SOURCE = { ads: {}, resource_api_version: "V3" };

function socketAddress(address: string, port: number): Json {
  return { socket_address: { address, port_value: port } };
}

function routerFilter(): Json {
  return { name: "envoy.filters.http.router", typed_config: { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" } };
}

function faultFilter(): Json {
  return { name: FAULT_FILTER, typed_config: { "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault" } };
}

function tcpProxy(statPrefix: string, target: { cluster: string } | { weighted_clusters: Json }): Json {
  return {
    name: "envoy.filters.network.tcp_proxy",
    typed_config: { "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy", stat_prefix: statPrefix, ...target },
  };
}

function passOrBlock(scope: Scope): string {
  return scope.outboundPolicy === "REGISTRY_ONLY" ? BLACKHOLE_CLUSTER : PASSTHROUGH_CLUSTER;
}

export function virtualOutboundListener(scope: Scope): Json {
  const cluster = passOrBlock(scope);
  return {
    name: VIRTUAL_OUTBOUND_LISTENER,
    address: socketAddress("0.0.0.0", OUTBOUND_CAPTURE_PORT),
    use_original_dst: true,
    traffic_direction: "OUTBOUND",
    // TPROXY keeps the original destination on the socket; Envoy must accept non-local addresses.
    ...(scope.interceptionMode === "TPROXY" ? { transparent: true } : {}),
    default_filter_chain: { name: cluster, filters: [tcpProxy(cluster, { cluster })] },
  };
}

export function virtualInboundListener(ports: readonly InboundPort[], tproxy = false): Json {
  return {
    name: VIRTUAL_INBOUND_LISTENER,
    address: socketAddress("0.0.0.0", INBOUND_CAPTURE_PORT),
    traffic_direction: "INBOUND",
    ...(tproxy ? { transparent: true } : {}),
    listener_filters: [
      { name: "envoy.filters.listener.original_dst", typed_config: { "@type": "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst" } },
    ],
    ...(ports.length
      ? {
          filter_chains: ports.map((p) => {
            const cluster = inboundClusterName(p.port);
            return { name: cluster, filter_chain_match: { destination_port: p.port }, filters: [tcpProxy(cluster, { cluster })] };
          }),
        }
      : {}),
    default_filter_chain: { name: "InboundPassthroughFilterChain", filters: [tcpProxy(PASSTHROUGH_CLUSTER, { cluster: PASSTHROUGH_CLUSTER })] },
  };
}

function cidr(address: string): Json {
  const [ip, len] = address.split("/") as [string, string | undefined];
  return { address_prefix: ip, prefix_len: len !== undefined ? Number(len) : ip.includes(":") ? 128 : 32 };
}

/** L4 destination of a service port: its VirtualService's tls/tcp route for the port, else the service itself. */
function l4Target(ctx: GenContext, scope: Scope, service: Service, port: Port, sni: boolean): { cluster: string } | { weighted_clusters: Json } {
  const own = { cluster: outboundClusterName(port.number, undefined, service.hostname) };
  const vs = ctx.routing.virtualService(scope.namespace, service.hostname, service.namespace);
  if (!vs) return own;
  const rc = routeContext(ctx, scope);
  const routes: (TLSRoute | TCPRoute)[] = sni ? (vs.spec.tls ?? []) : (vs.spec.tcp ?? []);
  for (const r of routes) {
    const matches = r.match ?? [];
    const applies =
      matches.length === 0 ||
      matches.some(
        (m) =>
          (m.port === undefined || m.port === port.number) &&
          labelsMatch(scope.labels, m.sourceLabels) &&
          // Blocks bound only to gateways are not the sidecars' (an absent list means the VS's own gateways).
          (!m.gateways?.length || namesGateway(m.gateways, vs.metadata.namespace, MESH_GATEWAY)) &&
          (!("sniHosts" in m) || (m as { sniHosts: string[] }).sniHosts.includes(service.hostname) || (m as { sniHosts: string[] }).sniHosts.includes("*")),
      );
    if (!applies || !r.route?.length) continue;
    const dests = r.route.map((d) => ({ name: destinationCluster(d.destination, port.number, rc).name, weight: r.route!.length === 1 ? 100 : (d.weight ?? 0) })).filter((d) => d.weight > 0);
    if (dests.length === 1) return { cluster: dests[0]!.name };
    if (dests.length > 1) return { weighted_clusters: { clusters: dests } };
  }
  return own;
}

function outboundPortListener(ctx: GenContext, scope: Scope, portNumber: number, entries: { service: Service; port: Port }[]): Json {
  const chains: Json[] = [];
  let defaultChain: Json | undefined;
  let sni = false;
  const http = entries.filter((e) => isHttpPort(e.port));
  const tls = entries.filter((e) => e.port.protocol === "TLS" || e.port.protocol === "HTTPS");
  // A DYNAMIC_DNS service has nothing to resolve on a plain TCP port (no Host, no SNI): no chain.
  const tcp = entries.filter((e) => !isHttpPort(e.port) && e.port.protocol !== "TLS" && e.port.protocol !== "HTTPS" && !isDynamicDns(e.service));
  const seenSni = new Set<string>();
  for (const { service, port } of tls) {
    if (seenSni.has(service.hostname)) continue;
    seenSni.add(service.hostname);
    sni = true;
    const target = l4Target(ctx, scope, service, port, true);
    chains.push({
      name: hostPortName(service.hostname, portNumber),
      filter_chain_match: { server_names: [service.hostname], transport_protocol: "tls" },
      filters: [
        // The SNI resolves the upstream only when the chain goes to the service's own dynamic forward proxy cluster.
        ...(isDynamicDns(service) && "cluster" in target && target.cluster === outboundClusterName(portNumber, undefined, service.hostname) ? [sniDynamicForwardProxyFilter(portNumber)] : []),
        tcpProxy(outboundClusterName(portNumber, undefined, service.hostname), target),
      ],
    });
  }
  const seenCidr = new Set<string>();
  let addressless: { service: Service; port: Port } | undefined;
  for (const e of tcp) {
    const ranges = e.service.addresses.filter((a) => !seenCidr.has(a));
    if (e.service.addresses.length === 0) {
      addressless ??= e;
      continue;
    }
    if (ranges.length === 0) continue;
    for (const a of ranges) seenCidr.add(a);
    chains.push({
      name: hostPortName(e.service.hostname, portNumber),
      filter_chain_match: { prefix_ranges: ranges.map(cidr) },
      filters: [tcpProxy(outboundClusterName(portNumber, undefined, e.service.hostname), l4Target(ctx, scope, e.service, e.port, false))],
    });
  }
  if (http.length > 0) {
    chains.push({
      name: `http_${portNumber}`,
      filters: [
        {
          name: "envoy.filters.network.http_connection_manager",
          typed_config: {
            "@type": HCM_TYPE,
            stat_prefix: `outbound_0.0.0.0_${portNumber}`,
            rds: { config_source: ADS_SOURCE, route_config_name: portRouteConfigName(portNumber) },
            http_filters: [faultFilter(), ...(http.some((e) => isDynamicDns(e.service)) ? [dynamicForwardProxyHttpFilter()] : []), routerFilter()],
          },
        },
      ],
    });
  } else if (addressless) {
    const name = outboundClusterName(portNumber, undefined, addressless.service.hostname);
    defaultChain = { name, filters: [tcpProxy(name, l4Target(ctx, scope, addressless.service, addressless.port, false))] };
  }
  if (!defaultChain && http.length === 0) {
    const cluster = passOrBlock(scope);
    defaultChain = { name: cluster, filters: [tcpProxy(cluster, { cluster })] };
  }
  const listener: Json = {
    name: outboundListenerName(portNumber),
    address: socketAddress("0.0.0.0", portNumber),
    bind_to_port: false,
    traffic_direction: "OUTBOUND",
  };
  if (chains.length) listener.filter_chains = chains;
  if (defaultChain) listener.default_filter_chain = defaultChain;
  if (sni) {
    listener.listener_filters = [
      { name: "envoy.filters.listener.tls_inspector", typed_config: { "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector" } },
    ];
  }
  return listener;
}

/** The outbound listeners of an Envoy sidecar scope (none without capture). */
export function sidecarOutboundListeners(ctx: GenContext, scope: Scope): Json[] {
  if (scope.interceptionMode === "NONE") return [];
  const byPort = new Map<number, { service: Service; port: Port }[]>();
  for (const service of scope.services) {
    for (const port of service.ports) {
      if (port.protocol === "UDP") continue;
      const list = byPort.get(port.number) ?? [];
      list.push({ service, port });
      byPort.set(port.number, list);
    }
  }
  const out = [virtualOutboundListener(scope)];
  for (const p of [...byPort.keys()].sort((a, b) => a - b)) {
    // A per-port listener on a capture port would shadow the capture itself.
    if (p === OUTBOUND_CAPTURE_PORT || p === INBOUND_CAPTURE_PORT) continue;
    out.push(outboundPortListener(ctx, scope, p, byPort.get(p)!));
  }
  return out;
}

/** gRPC api_listeners, given the route configs they reference (the fault filter only where a route has faults). */
export function grpcListeners(scope: Scope, routeConfigs: readonly Json[]): Json[] {
  const faulty = new Set<string>();
  for (const rc of routeConfigs) {
    for (const vh of rc.virtual_hosts as Json[]) if (hasFault((vh.routes as Json[] | undefined) ?? [])) faulty.add(rc.name as string);
  }
  const out: Json[] = [];
  for (const service of scope.services) {
    for (const port of grpcPorts(service)) {
      const name = hostPortName(service.hostname, port.number);
      out.push({
        name,
        api_listener: {
          api_listener: {
            "@type": HCM_TYPE,
            stat_prefix: name,
            rds: { config_source: ADS_SOURCE, route_config_name: name },
            http_filters: faulty.has(name) ? [faultFilter(), routerFilter()] : [routerFilter()],
          },
        },
      });
    }
  }
  return out;
}
