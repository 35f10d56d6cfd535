// The xDS node a proxy on this VM presents: Istio's node id form and the metadata keys the control plane's
// ProxyView reads (packages/xds/src/proxy-view.ts). Envoy and proxyless gRPC share everything but the kind.
import type { AgentConfig } from "../config.js";

/** The kinds as the control plane names them (ProxyView.kind). */
export type NodeKind = "sidecar" | "gateway" | "grpc";

export interface XdsNodeJson {
  id: string;
  cluster: string;
  metadata: Record<string, unknown>;
  locality?: Record<string, string>;
}

/**
 * `sidecar~IP~NAME.NS~NS.svc.cluster.local` (Istio's form; `router~` for a gateway). A proxyless gRPC
 * process gets `grpc~...`: same fields, but a distinct id so an Envoy and a gRPC app on one VM do not
 * overwrite each other in proxy-status; the control plane reads its kind from PROXY_KIND.
 */
export function nodeId(cfg: AgentConfig, kind: NodeKind): string {
  const prefix = kind === "gateway" ? "router" : kind === "grpc" ? "grpc" : "sidecar";
  return `${prefix}~${cfg.address}~${cfg.name}.${cfg.namespace}~${cfg.namespace}.svc.cluster.local`;
}

/** Where the agent's file-based SDS resources live; the control plane references them (see bootstrap/envoy.ts). */
export const SDS_PATHS_METADATA_KEY = "SDS_PATHS";

/**
 * Gateways: the bootstrap cluster of the agent's SDS server (sds-server.ts), which serves Gateway credentialNames
 * (gateway-credentials.ts); the control plane references those secrets through it (generators/gateway-tls.ts).
 */
export const CREDENTIAL_SDS_CLUSTER_METADATA_KEY = "CREDENTIAL_SDS_CLUSTER";
/** Istio's name for the bootstrap cluster of the agent's SDS socket. */
export const SDS_CLUSTER = "sds-grpc";

export function nodeMetadata(cfg: AgentConfig, kind: NodeKind): Record<string, unknown> {
  const md: Record<string, unknown> = {
    NAMESPACE: cfg.namespace,
    SERVICE_ACCOUNT: cfg.serviceAccount,
    LABELS: { ...cfg.labels },
    WORKLOAD_NAME: cfg.name,
    INSTANCE_IPS: cfg.address,
    INTERCEPTION_MODE: kind === "sidecar" ? cfg.interception.mode : "NONE",
    PROXY_KIND: kind,
  };
  if (cfg.autoRegisterGroup) md.AUTO_REGISTER_GROUP = cfg.autoRegisterGroup;
  if (kind !== "grpc") md[SDS_PATHS_METADATA_KEY] = { default: cfg.output.sdsDefaultFile, ROOTCA: cfg.output.sdsRootFile };
  if (kind === "gateway") md[CREDENTIAL_SDS_CLUSTER_METADATA_KEY] = SDS_CLUSTER;
  return md;
}

export function xdsNode(cfg: AgentConfig, kind: NodeKind): XdsNodeJson {
  return { id: nodeId(cfg, kind), cluster: `${cfg.name}.${cfg.namespace}`, metadata: nodeMetadata(cfg, kind) };
}
