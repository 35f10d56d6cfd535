// Server listeners for proxyless gRPC servers (gRFC A36), the way Istio's grpcgen serves them.
//
// An xDS-enabled gRPC server (grpc-js-xds's XdsServer, grpc-go's xds.NewGRPCServer, grpc-java's
// XdsServerBuilder) binding IP:PORT asks for the listener named by the bootstrap's
// `server_listener_resource_name_template` with `%s` = that address, `grpc/server?xds.resource.listening_address=
// IP:PORT` in the agent's bootstrap, and serves nothing until the listener arrives; when the control plane says the
// resource does not exist, it keeps not serving. So a listener is the control plane's consent that this node
// serves this address, and the place where the mesh tells the server whether to require mTLS.
//
// Which names exist. Generators are functions of (snapshot, view), not of the names a proxy asks for, so the
// listeners are enumerated from the node's own instances (its endpoints, see ownEndpoint) and a request is answered
// by name lookup, like every other gRPC LDS request:
//   - `IP:PORT` for each own endpoint at an IP literal with a port of a service it serves;
//   - `0.0.0.0:PORT` and `[::]:PORT` (the wildcard binds) for each such port.
// Addresses are spelled canonically (dotted IPv4, RFC 5952 IPv6 in brackets), the way grpc-go and grpc-java
// format a bound address; grpc-js uses the string the application passed to bindAsync, so it must use the same
// spelling. A name for an address that is not one of the node's instances is not generated: the control plane
// answers without it, gRPC treats it as "does not exist" (SotW LDS is complete) and the server does not serve,
// which is what grpcgen does for an unknown port and what gRFC A36 prescribes for a missing resource. The server
// starts serving as soon as the instance appears (a WorkloadEntry added), and stops when it goes away.
//
// Whose instances. The address in the name is chosen by the requester and INSTANCE_IPS is self-asserted, so an
// address alone proves nothing. An endpoint is the node's own when its namespace is the node's namespace, its
// service account (when it declares one) is the node's, and it is at one of the node's IPs or backed by the node's
// WorkloadEntry. On the secure port namespace and service account are the ones the node's certificate proves,
// so a node never receives a listener for an instance of another identity, whatever IPs it claims.
//
// TLS. The server has to match what the mesh tells its callers, and for proxyless gRPC that is an explicit
// DestinationRule ISTIO_MUTUAL (clusters.ts: gRPC clients get no automatic mTLS; vmpilot has no
// PeerAuthentication). The server side reads the rule published with the service: the one a caller in the
// service's own namespace without selector-specific rules resolves (the service's namespace, else the root
// namespace), for the service port this instance serves, top level and portLevelSettings (subsets are a caller's
// choice; a server cannot answer plaintext to some and mTLS to others on one port: gRPC's server-side filter chain
// match cannot tell TLS from plaintext, which is also why Istio's grpcgen turns PERMISSIVE into plaintext).
// The rule's exportTo does not narrow this: a server cannot answer differently by the caller's namespace, so a
// caller that does not see the rule (another namespace, exportTo ".") needs an ISTIO_MUTUAL rule of its own.
// ISTIO_MUTUAL gives the filter chain a DownstreamTlsContext that presents the workload certificate and requires
// a client certificate from the mesh root, both from the bootstrap's certificate provider instance `default`
// (gRFC A29; the agent's `file_watcher` over the files it rotates). Anything else serves plaintext. When the
// services an instance serves on one port disagree, mTLS wins: a caller told to use mTLS must never be answered
// in plaintext, and a plaintext caller of the other service fails visibly instead. gRPC servers cannot check the
// client's SANs (Istio leaves match_subject_alt_names out for the same reason): any certificate of the mesh root is
// accepted, and authorization is the application's (or a future RBAC filter's) job.
//
// Shape (what grpc-js-xds's listener validation and XdsServer accept): the listener's address is exactly the one in
// the name (the server compares the strings), no listener filters, no use_original_dst; one filter chain without
// a filter_chain_match (gRPC servers match only raw_buffer, by destination and source), whose single filter is an
// HttpConnectionManager with an inline route config (virtual host `*`, one route with non_forwarding_action, the
// only action a gRPC server accepts) and the router filter last.
import type { Endpoint, Service } from "@vmpilot/registry";
import { isIP } from "node:net";
import { canonicalIp } from "../ip.js";
import type { ProxyView } from "../proxy-view.js";
import { endpointPort, workloadKeyOf, type GenContext } from "./context.js";
import { effectivePolicy } from "./policy.js";
import { grpcPorts } from "./routes.js";
import { GRPC_CERT_PROVIDER_INSTANCE, SDS_CERT_SECRET, SDS_ROOT_SECRET } from "./tls.js";

type Json = Record<string, unknown>;

/** What the gRPC bootstrap's `server_listener_resource_name_template` is (the agent writes it). */
export const GRPC_SERVER_LISTENER_TEMPLATE = "grpc/server?xds.resource.listening_address=%s";
const NAME_PREFIX = GRPC_SERVER_LISTENER_TEMPLATE.slice(0, -"%s".length);

const HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
const DOWNSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";

/** The binds a server on any of the node's addresses may use besides the address itself. */
const WILDCARD_HOSTS = ["0.0.0.0", "::"] as const;

/** `HOST:PORT`, IPv6 in brackets: the form gRPC formats a bound address in. */
function hostPort(host: string, port: number): string {
  return isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`;
}

/** The listener name a gRPC server bound to `host:port` asks for. */
export function grpcServerListenerName(host: string, port: number): string {
  return NAME_PREFIX + hostPort(host, port);
}

/** One address:port the node serves, with what the mesh asks of it. */
export interface GrpcServerInstance {
  host: string;
  port: number;
  /** Keys of the services the node serves there. */
  serviceKeys: string[];
  /** Whether callers are told to use ISTIO_MUTUAL for any of them (see TLS above). */
  mtls: boolean;
}

/**
 * The node's own endpoint (see "Whose instances" above). `ips` are the view's IPs (canonical).
 */
function ownEndpoint(ep: Endpoint, view: ProxyView, ips: ReadonlySet<string>, workloadKey: string | undefined): boolean {
  if (ep.namespace !== view.namespace) return false;
  if (ep.serviceAccount !== undefined && ep.serviceAccount !== view.serviceAccount) return false;
  const ip = canonicalIp(ep.address);
  return (ip !== undefined && ips.has(ip)) || (workloadKey !== undefined && ep.workload === workloadKey);
}

/** Whether callers of `service` on `servicePort` are told to use ISTIO_MUTUAL by the rule published with it. */
export function serviceRequiresMtls(ctx: GenContext, service: Service, servicePort: number): boolean {
  const dr = ctx.routing.destinationRule(service.namespace, {}, service.hostname, service.namespace);
  return effectivePolicy(dr, servicePort).tls?.mode === "ISTIO_MUTUAL";
}

/**
 * The addresses the node may serve: its own endpoints' IP:PORTs and, per port, the wildcard binds. Sorted by port,
 * then host, so generation is deterministic.
 */
export function grpcServerInstances(ctx: GenContext, view: ProxyView): GrpcServerInstance[] {
  // View IPs are canonical (proxyViewFromNode); endpoint addresses are made so where they are compared.
  const ips = new Set(view.ips);
  const wk = workloadKeyOf(view);
  const byAddress = new Map<string, GrpcServerInstance>();
  const at = (host: string, port: number): GrpcServerInstance => {
    const key = hostPort(host, port);
    let inst = byAddress.get(key);
    if (!inst) byAddress.set(key, (inst = { host, port, serviceKeys: [], mtls: false }));
    return inst;
  };
  for (const key of ctx.inbound.servicesOf(view.ips, wk)) {
    const service = ctx.snapshot.services.get(key);
    if (!service) continue;
    for (const ep of ctx.snapshot.endpoints.get(key) ?? []) {
      // A unix socket is not something a TCP bind, wildcard or not, serves.
      if (ep.address.startsWith("unix://") || !ownEndpoint(ep, view, ips, wk)) continue;
      const ip = canonicalIp(ep.address);
      for (const sp of grpcPorts(service)) {
        const port = endpointPort(ep, sp);
        if (port === undefined || port <= 0) continue;
        const mtls = serviceRequiresMtls(ctx, service, sp.number);
        for (const host of ip !== undefined ? [ip, ...WILDCARD_HOSTS] : WILDCARD_HOSTS) {
          const inst = at(host, port);
          if (!inst.serviceKeys.includes(key)) inst.serviceKeys.push(key);
          inst.mtls ||= mtls;
        }
      }
    }
  }
  for (const inst of byAddress.values()) inst.serviceKeys.sort();
  return [...byAddress.values()].sort((a, b) => a.port - b.port || (a.host < b.host ? -1 : a.host > b.host ? 1 : 0));
}

/** ISTIO_MUTUAL on the server: the workload certificate, and a client certificate from the mesh root required. */
function serverMtlsSocket(): Json {
  return {
    name: "envoy.transport_sockets.tls",
    typed_config: {
      "@type": DOWNSTREAM_TLS,
      common_tls_context: {
        tls_certificate_provider_instance: { instance_name: GRPC_CERT_PROVIDER_INSTANCE, certificate_name: SDS_CERT_SECRET },
        validation_context: { ca_certificate_provider_instance: { instance_name: GRPC_CERT_PROVIDER_INSTANCE, certificate_name: SDS_ROOT_SECRET } },
      },
      require_client_certificate: true,
    },
  };
}

export function grpcServerListener(inst: GrpcServerInstance): Json {
  const routeName = `inbound|http|${inst.port}`;
  const chain: Json = {
    name: inst.mtls ? "inbound-mtls" : "inbound-plaintext",
    filters: [
      {
        name: "envoy.filters.network.http_connection_manager",
        typed_config: {
          "@type": HCM_TYPE,
          // The security mode is part of the stat prefix, and so of the HttpConnectionManager's bytes, on purpose:
          // grpc-js-xds 1.14.1's listenersEquivalent() compares filter bytes first and then tests the transport
          // sockets with an inverted condition, which throws (and kills the server process) for a plaintext ->
          // mTLS update and ignores an mTLS -> plaintext one. Different bytes make both a plain "not equivalent".
          stat_prefix: inst.mtls ? `inbound_mtls_${inst.port}` : `inbound_${inst.port}`,
          route_config: {
            name: routeName,
            virtual_hosts: [{ name: routeName, domains: ["*"], routes: [{ match: { prefix: "/" }, non_forwarding_action: {} }] }],
          },
          http_filters: [{ name: "envoy.filters.http.router", typed_config: { "@type": ROUTER_TYPE } }],
        },
      },
    ],
  };
  if (inst.mtls) chain.transport_socket = serverMtlsSocket();
  return {
    name: grpcServerListenerName(inst.host, inst.port),
    address: { socket_address: { address: inst.host, port_value: inst.port } },
    traffic_direction: "INBOUND",
    filter_chains: [chain],
  };
}

/** Every server listener the node may ask for (gRPC views only). */
export function grpcServerListeners(ctx: GenContext, view: ProxyView): Json[] {
  if (view.kind !== "grpc") return [];
  return grpcServerInstances(ctx, view).map(grpcServerListener);
}
