// The proxyless gRPC bootstrap (the GRPC_XDS_BOOTSTRAP file format, as @grpc/grpc-js-xds's xds-bootstrap.ts
// validates it).
//
// The xDS server channel. grpc-js-xds 1.14 accepts only the "insecure" and "google_default" channel
// credential types for the xDS server (SUPPORTED_CHANNEL_CREDS_TYPES); it cannot present a client
// certificate to the control plane. So a proxyless client on a VM talks plaintext to the agent's local xDS
// proxy (a unix socket by default, as Istio's agent does), and the agent forwards the streams over mTLS with
// the workload certificate (xds-proxy.ts). `grpc.xdsServerUri` overrides this, e.g. for a loopback-only
// control plane in development.
//
// Workload certificates reach the gRPC library through the `file_watcher` certificate provider on the same
// files the agent rotates; the control plane references the instance `default` from clusters
// (`tls_certificate_provider_instance` + `validation_context.ca_certificate_provider_instance`) and from the
// server listeners of xDS-enabled gRPC servers (the same instance presents the workload certificate and verifies
// callers against the mesh root).
//
// Server listeners (gRFC A36): an XdsServer binding IP:PORT asks for the listener named by
// `server_listener_resource_name_template` with `%s` = IP:PORT, and the control plane generates exactly those names
// (xds generators/grpc-server-listeners.ts). Both names are wire contracts with the control plane, so they are
// the generators' own constants; test/xds-grpc-server.test.ts runs an XdsServer on this bootstrap against it.
import { GRPC_SERVER_LISTENER_TEMPLATE } from "@vmpilot/xds/generators/grpc-server-listeners";
import { GRPC_CERT_PROVIDER_INSTANCE } from "@vmpilot/xds/generators/tls";
import type { AgentConfig } from "../config.js";
import { xdsNode } from "./node.js";

/** Milliseconds as a protobuf JSON duration ("60s", "0.5s"), the form grpc-js's parseDuration reads. */
function protoDuration(ms: number): string {
  return `${ms / 1000}s`;
}

export function grpcBootstrap(cfg: AgentConfig): Record<string, unknown> {
  const node = xdsNode(cfg, "grpc");
  return {
    xds_servers: [
      {
        server_uri: cfg.grpc.xdsServerUri,
        channel_creds: [{ type: cfg.grpc.channelCreds }],
        // xds_v3 is what gRPC's C-core and Go expect; grpc-js ignores unknown features.
        server_features: ["xds_v3"],
      },
    ],
    node: { ...node, locality: {} },
    certificate_providers: {
      [GRPC_CERT_PROVIDER_INSTANCE]: {
        plugin_name: "file_watcher",
        config: {
          certificate_file: cfg.output.certChainFile,
          private_key_file: cfg.output.keyFile,
          ca_certificate_file: cfg.output.rootCertFile,
          refresh_interval: protoDuration(cfg.grpc.certRefreshMs),
        },
      },
    },
    server_listener_resource_name_template: GRPC_SERVER_LISTENER_TEMPLATE,
  };
}
