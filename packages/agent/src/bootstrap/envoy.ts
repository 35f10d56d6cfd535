// The Envoy v3 bootstrap for a VM sidecar or gateway, as proto3 JSON (what `envoy -c` reads), plus the
// file-based SDS resources it points at.
//
// Certificates and rotation. Envoy gets the workload certificate through FILE-BASED SDS: two small files, each
// a DiscoveryResponse holding one Secret (`default`: key + chain; `ROOTCA`: the mesh root), referenced with
// `sds_config: { path_config_source: { path } }`. The agent replaces a file by rename; Envoy watches the path
// for moves and swaps the secret in place, so rotation needs neither a restart nor a hot restart. The PEMs are
// inlined in the SDS file (not referenced by filename) so that key and chain change in ONE atomic rename: a
// reader can never see a new chain with the old key.
//
// Envoy keys an SDS subscription by (secret name, config source). The control plane cannot serve `default`
// over ADS (it never holds the private key), so clusters it generates must reference the secrets with the
// same file config source. It learns the paths from node metadata SDS_PATHS = { default: PATH, ROOTCA: PATH }
// (see node.ts); `sdsConfigFor` below is the exact shape to emit.
//
// Gateway credentials (Gateway `credentialName`) are different: they are the operator's, they may be missing when
// a Gateway names them, and a missing path_config_source file makes Envoy reject the whole LDS update. So a
// gateway's bootstrap also has Istio's `sds-grpc` cluster: HTTP/2 to the agent's SDS server on a unix socket
// (sds-server.ts) in a directory only the agent's user can enter, and the control plane references credentialName
// secrets through it (node metadata CREDENTIAL_SDS_CLUSTER). The workload identity stays on files: it is always
// there before Envoy starts (so the file source cannot fail), the control-plane connection itself depends on it
// (it must not wait for a socket), and the sidecars' clusters keep their references unchanged.
import path from "node:path";
import type { AgentConfig } from "../config.js";
import { SDS_CLUSTER, xdsNode, type NodeKind } from "./node.js";

export const XDS_CLUSTER = "xds-grpc";
export const ADMIN_PORT = 15000;
export const PROMETHEUS_PORT = 15090;
export const READINESS_PORT = 15021;
export const SECRET_DEFAULT = "default";
export const SECRET_ROOTCA = "ROOTCA";

const T = "type.googleapis.com/";
const HCM = `${T}envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager`;
const ROUTER = `${T}envoy.extensions.filters.http.router.v3.Router`;
const TLS_UPSTREAM = `${T}envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext`;
const HTTP_OPTIONS = `${T}envoy.extensions.upstreams.http.v3.HttpProtocolOptions`;
const SECRET_TYPE = `${T}envoy.extensions.transport_sockets.tls.v3.Secret`;

export interface EnvoyBootstrapOptions {
  /** sidecar (default) or gateway. */
  kind?: Extract<NodeKind, "sidecar" | "gateway">;
}

/** The `sds_config` a cluster or listener uses to reference the agent's file-based secret. */
export function sdsConfigFor(path: string): Record<string, unknown> {
  return { path_config_source: { path }, resource_api_version: "V3" };
}

function socketAddress(address: string, port: number): Record<string, unknown> {
  return { socket_address: { address, port_value: port } };
}

function staticCluster(name: string, address: string, port: number, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    name,
    type: "STATIC",
    connect_timeout: "0.250s",
    lb_policy: "ROUND_ROBIN",
    load_assignment: { cluster_name: name, endpoints: [{ lb_endpoints: [{ endpoint: { address: socketAddress(address, port) } }] }] },
    ...extra,
  };
}

/**
 * The unix socket of the agent's SDS server for gateway credentials. It lives in output.credentialSdsDir, which
 * the agent keeps 0700 (and the socket itself 0600): only the agent's user, hence its Envoy, may connect.
 */
export function credentialSdsSocket(cfg: AgentConfig): string {
  return path.join(cfg.output.credentialSdsDir, "sds.sock");
}

/** Istio's `sds-grpc`: gRPC (HTTP/2) to the agent's SDS server over a unix socket (a `pipe` address). */
function sdsGrpcCluster(socket: string): Record<string, unknown> {
  return {
    name: SDS_CLUSTER,
    type: "STATIC",
    connect_timeout: "1s",
    lb_policy: "ROUND_ROBIN",
    load_assignment: { cluster_name: SDS_CLUSTER, endpoints: [{ lb_endpoints: [{ endpoint: { address: { pipe: { path: socket } } } }] }] },
    typed_extension_protocol_options: {
      "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": { "@type": HTTP_OPTIONS, explicit_http_config: { http2_protocol_options: {} } },
    },
  };
}

/** A listener with one HTTP route: used for Prometheus (15090) and readiness (15021). */
function singleRouteListener(name: string, port: number, prefix: string, cluster: string, rewrite?: string): Record<string, unknown> {
  return {
    name,
    address: socketAddress("0.0.0.0", port),
    filter_chains: [
      {
        filters: [
          {
            name: "envoy.filters.network.http_connection_manager",
            typed_config: {
              "@type": HCM,
              stat_prefix: name,
              codec_type: "AUTO",
              route_config: {
                name: `${name}_route`,
                virtual_hosts: [
                  {
                    name: "backend",
                    domains: ["*"],
                    routes: [{ match: { prefix }, route: { cluster, ...(rewrite ? { prefix_rewrite: rewrite } : {}) } }],
                  },
                ],
              },
              http_filters: [{ name: "envoy.filters.http.router", typed_config: { "@type": ROUTER } }],
            },
          },
        ],
      },
    ],
  };
}

function xdsCluster(cfg: AgentConfig): Record<string, unknown> {
  const { host, port, san } = cfg.controlPlane;
  const isIp = /^[\d.]+$/.test(host) || host.includes(":");
  return {
    name: XDS_CLUSTER,
    // An IP needs no resolver; a name is re-resolved so a control-plane fleet behind DNS is followed.
    type: isIp ? "STATIC" : "STRICT_DNS",
    ...(isIp ? {} : { dns_lookup_family: "V4_PREFERRED", respect_dns_ttl: true }),
    connect_timeout: "1s",
    lb_policy: "ROUND_ROBIN",
    load_assignment: { cluster_name: XDS_CLUSTER, endpoints: [{ lb_endpoints: [{ endpoint: { address: socketAddress(host, port) } }] }] },
    typed_extension_protocol_options: {
      "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": HTTP_OPTIONS,
        explicit_http_config: { http2_protocol_options: { connection_keepalive: { interval: "30s", timeout: "10s" } } },
      },
    },
    // The ADS stream is long-lived and must not be cut by Envoy's own limits.
    circuit_breakers: { thresholds: [{ priority: "DEFAULT", max_connections: 100000, max_pending_requests: 100000, max_requests: 100000 }, { priority: "HIGH", max_connections: 100000, max_pending_requests: 100000, max_requests: 100000 }] },
    upstream_connection_options: { tcp_keepalive: { keepalive_time: 300 } },
    transport_socket: {
      name: "envoy.transport_sockets.tls",
      typed_config: {
        "@type": TLS_UPSTREAM,
        ...(isIp ? {} : { sni: host }),
        common_tls_context: {
          alpn_protocols: ["h2"],
          // The same file-based secrets as the workload's clusters: the control-plane connection rotates too.
          tls_certificate_sds_secret_configs: [{ name: SECRET_DEFAULT, sds_config: sdsConfigFor(cfg.output.sdsDefaultFile) }],
          combined_validation_context: {
            default_validation_context: { match_typed_subject_alt_names: [{ san_type: "URI", matcher: { exact: san } }] },
            validation_context_sds_secret_config: { name: SECRET_ROOTCA, sds_config: sdsConfigFor(cfg.output.sdsRootFile) },
          },
        },
      },
    },
  };
}

/** The full Envoy bootstrap. Pure: same config in, same JSON out. */
export function envoyBootstrap(cfg: AgentConfig, opts: EnvoyBootstrapOptions = {}): Record<string, unknown> {
  const kind = opts.kind ?? (cfg.proxy.kind === "gateway" ? "gateway" : "sidecar");
  const adsSource = { ads: {}, resource_api_version: "V3" };
  const agentHost = cfg.status.host === "0.0.0.0" || cfg.status.host === "::" ? "127.0.0.1" : cfg.status.host;
  return {
    node: xdsNode(cfg, kind),
    admin: { address: socketAddress("127.0.0.1", cfg.proxy.adminPort) },
    dynamic_resources: {
      ads_config: {
        api_type: cfg.proxy.xdsTransport,
        transport_api_version: "V3",
        grpc_services: [{ envoy_grpc: { cluster_name: XDS_CLUSTER } }],
        set_node_on_first_message_only: true,
      },
      lds_config: adsSource,
      cds_config: adsSource,
    },
    static_resources: {
      clusters: [
        xdsCluster(cfg),
        staticCluster("prometheus_stats", "127.0.0.1", cfg.proxy.adminPort),
        staticCluster("agent", agentHost, cfg.status.port),
        ...(kind === "gateway" ? [sdsGrpcCluster(credentialSdsSocket(cfg))] : []),
      ],
      listeners: [
        singleRouteListener("prometheus_stats", PROMETHEUS_PORT, "/stats/prometheus", "prometheus_stats"),
        singleRouteListener("agent_readiness", READINESS_PORT, "/healthz/ready", "agent"),
      ],
    },
    // Fixed tags on every stat: Prometheus scraping 15090 on many VMs can tell the workloads apart without
    // relabeling. Envoy's default tag extractors stay on (a custom tag with a default's name is a config error).
    stats_config: {
      use_all_default_tags: true,
      stats_tags: [
        { tag_name: "vmpilot_namespace", fixed_value: cfg.namespace },
        { tag_name: "vmpilot_workload", fixed_value: cfg.name },
      ],
    },
    layered_runtime: {
      layers: [
        // Envoy warns on every start when no connection limit is set; this is Istio's (unlimited) value.
        { name: "global_config", static_layer: { "overload.global_downstream_max_connections": 2147483647 } },
        { name: "admin", admin_layer: {} },
      ],
    },
  };
}

/** Command-line arguments for `envoy` with this bootstrap. */
export function envoyArgs(cfg: AgentConfig, bootstrapFile: string): string[] {
  const args = [
    "-c", bootstrapFile,
    "--drain-time-s", String(Math.round(cfg.proxy.drainMs / 1000)),
    "--parent-shutdown-time-s", String(Math.round(cfg.proxy.parentShutdownMs / 1000)),
    "--log-level", cfg.proxy.logLevel,
    "--admin-address-path", cfg.output.envoyAdminAddressFile,
    "--service-cluster", `${cfg.name}.${cfg.namespace}`,
    // The supervisor restarts Envoy as a fresh process; hot restart's shared memory would only get in the way.
    "--disable-hot-restart",
  ];
  if (cfg.proxy.concurrency !== undefined) args.push("--concurrency", String(cfg.proxy.concurrency));
  return args;
}

/** A Secret with a certificate chain and its key (proto3 JSON, without `@type`). */
export function tlsCertificateSecret(name: string, keyPem: string, chainPem: string): Record<string, unknown> {
  return { name, tls_certificate: { certificate_chain: { inline_string: chainPem }, private_key: { inline_string: keyPem } } };
}

/** A Secret with trusted CA certificates (proto3 JSON, without `@type`). */
export function validationContextSecret(name: string, caPem: string): Record<string, unknown> {
  return { name, validation_context: { trusted_ca: { inline_string: caPem } } };
}

/** A file-based SDS resource: a DiscoveryResponse-shaped document with one Secret. */
export function sdsTlsCertificate(keyPem: string, chainPem: string, name = SECRET_DEFAULT): Record<string, unknown> {
  return { resources: [{ "@type": SECRET_TYPE, ...tlsCertificateSecret(name, keyPem, chainPem) }] };
}

export function sdsRootCa(rootPem: string, name = SECRET_ROOTCA): Record<string, unknown> {
  return { resources: [{ "@type": SECRET_TYPE, ...validationContextSecret(name, rootPem) }] };
}
