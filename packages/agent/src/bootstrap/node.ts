// The xDS node a proxy on this VM presents. The id form and the metadata keys are the control plane's contract,
// written and read in one place (packages/xds/src/proxy-view.ts); this maps the agent's config onto it. Envoy and
// proxyless gRPC share everything but the kind.
import { formatNodeId, nodeMetadataOf, type ProxyKind } from "@vmpilot/xds/proxy-view";
import type { AgentConfig } from "../config.js";

/** The kinds as the control plane names them (ProxyView.kind). */
export type NodeKind = ProxyKind;

export interface XdsNodeJson {
  id: string;
  cluster: string;
  metadata: Record<string, unknown>;
  locality?: Record<string, string>;
}

export function nodeId(cfg: AgentConfig, kind: NodeKind): string {
  return formatNodeId(kind, cfg.address, cfg.name, cfg.namespace);
}

/**
 * Istio's name for the bootstrap cluster of the agent's SDS socket (sds-server.ts), which serves a gateway's
 * credentialNames (gateway-credentials.ts); announced as CREDENTIAL_SDS_CLUSTER, the control plane references
 * those secrets through it (generators/gateway-tls.ts).
 */
export const SDS_CLUSTER = "sds-grpc";

/** The workload's SDS files (sidecars, gateways) and SDS socket (gateways) are announced with it. */
export function nodeMetadata(cfg: AgentConfig, kind: NodeKind): Record<string, unknown> {
  return nodeMetadataOf({
    kind,
    namespace: cfg.namespace,
    serviceAccount: cfg.serviceAccount,
    labels: cfg.labels,
    workloadName: cfg.name,
    ips: [cfg.address],
    interceptionMode: kind === "sidecar" ? cfg.interception.mode : "NONE",
    ...(cfg.autoRegisterGroup ? { autoRegisterGroup: cfg.autoRegisterGroup } : {}),
    ...(kind !== "grpc" ? { sdsPaths: { default: cfg.output.sdsDefaultFile, ROOTCA: cfg.output.sdsRootFile } } : {}),
    ...(kind === "gateway" ? { credentialSdsCluster: SDS_CLUSTER } : {}),
  });
}

export function xdsNode(cfg: AgentConfig, kind: NodeKind): XdsNodeJson {
  return { id: nodeId(cfg, kind), cluster: `${cfg.name}.${cfg.namespace}`, metadata: nodeMetadata(cfg, kind) };
}
