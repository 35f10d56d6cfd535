// ServiceEntry resolution DYNAMIC_DNS: wildcard hosts resolved per request, from the Host header (HTTP) or the
// TLS SNI, with Envoy's dynamic forward proxy. Three pieces must agree on one DNS cache:
//   - the cluster `outbound|PORT||*.example.com`, of cluster_type envoy.clusters.dynamic_forward_proxy;
//   - on HTTP ports, the HTTP filter envoy.filters.http.dynamic_forward_proxy before the router (it resolves the
//     Host of requests whose route points at a dynamic forward proxy cluster, and does nothing for other routes);
//   - on TLS ports, the network filter envoy.filters.network.sni_dynamic_forward_proxy before tcp_proxy (it
//     resolves the SNI that tls_inspector read).
// Envoy shares a DNS cache by name and requires every configuration of one name to be identical, and an HTTP
// connection manager has one filter, hence one cache, for all the wildcard services on its port. So every
// filter and cluster uses the single cache below.
//
// Like DNS resolution (and unlike NONE), the proxy connects to what the requested name resolves to, not to the
// address the client dialled: a client cannot reach an arbitrary IP by sending an allowed Host header (the
// egress seed's security note). Ports with neither Host nor SNI (TCP, MONGO, UDP) cannot be resolved this way
// and get no cluster or listener chain. Proxyless gRPC clients never get these services: @grpc/grpc-js-xds takes
// only EDS, LOGICAL_DNS and aggregate clusters and would NACK the whole CDS response.
import type { Port, Service } from "@vmpilot/registry";
import type { ClusterFlavor } from "./policy.js";

type Json = Record<string, unknown>;

export const DFP_CLUSTER_TYPE = "envoy.clusters.dynamic_forward_proxy";
export const DFP_HTTP_FILTER = "envoy.filters.http.dynamic_forward_proxy";
export const SNI_DFP_FILTER = "envoy.filters.network.sni_dynamic_forward_proxy";
/** The one DNS cache every dynamic forward proxy filter and cluster of a proxy shares. */
export const DFP_DNS_CACHE_NAME = "dynamic_forward_proxy_cache_config";

const HOST_PROTOCOLS = new Set(["HTTP", "HTTP2", "GRPC"]);
const SNI_PROTOCOLS = new Set(["TLS", "HTTPS"]);

export function isDynamicDns(service: Service): boolean {
  return service.resolution === "DYNAMIC_DNS";
}

/** Whether a port of a DYNAMIC_DNS service has a name to resolve: a Host header or an SNI. */
export function dynamicDnsPortSupported(port: Port): boolean {
  return HOST_PROTOCOLS.has(port.protocol) || SNI_PROTOCOLS.has(port.protocol);
}

/** The shared cache. V4_ONLY like the STRICT_DNS clusters, so a name resolves the same way on both paths. */
export function dnsCacheConfig(): Json {
  return { name: DFP_DNS_CACHE_NAME, dns_lookup_family: "V4_ONLY" };
}

/**
 * The cluster fields of a DYNAMIC_DNS service port (to merge into a cluster named `outbound|PORT||HOST`), or
 * undefined when this flavor or port cannot have one.
 */
export function dynamicForwardProxyClusterFields(port: Port, flavor: ClusterFlavor): Json | undefined {
  if (flavor === "grpc" || !dynamicDnsPortSupported(port)) return undefined;
  return {
    cluster_type: {
      name: DFP_CLUSTER_TYPE,
      typed_config: { "@type": "type.googleapis.com/envoy.extensions.clusters.dynamic_forward_proxy.v3.ClusterConfig", dns_cache_config: dnsCacheConfig() },
    },
    // The cluster picks the host the filter resolved; no other policy applies.
    lb_policy: "CLUSTER_PROVIDED",
  };
}

/** The HTTP filter, placed before the router in connection managers whose routes reach a DYNAMIC_DNS service. */
export function dynamicForwardProxyHttpFilter(): Json {
  return {
    name: DFP_HTTP_FILTER,
    typed_config: { "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_forward_proxy.v3.FilterConfig", dns_cache_config: dnsCacheConfig() },
  };
}

/** The network filter that resolves the SNI, placed before tcp_proxy; upstream connections go to `port`. */
export function sniDynamicForwardProxyFilter(port: number): Json {
  return {
    name: SNI_DFP_FILTER,
    typed_config: {
      "@type": "type.googleapis.com/envoy.extensions.filters.network.sni_dynamic_forward_proxy.v3.FilterConfig",
      dns_cache_config: dnsCacheConfig(),
      port_value: port,
    },
  };
}

/** Whether any visible DYNAMIC_DNS service has an HTTP port (its connection managers then need the HTTP filter). */
export function anyDynamicDnsHttp(services: readonly Service[], portNumber?: number): boolean {
  return services.some((s) => isDynamicDns(s) && s.ports.some((p) => HOST_PROTOCOLS.has(p.protocol) && (portNumber === undefined || p.number === portNumber)));
}
