// A proxy's view: the few facts about a connected proxy that decide which config it receives.
// Taken from the node of the stream's FIRST request (gRPC clients send the node only once).
import { canonicalAddress } from "./ip.js";

export type ProxyKind = "sidecar" | "grpc" | "gateway";
export type InterceptionMode = "REDIRECT" | "TPROXY" | "NONE";

export interface ProxyView {
  /** The node id as sent. */
  id: string;
  kind: ProxyKind;
  namespace: string;
  serviceAccount?: string;
  labels: Readonly<Record<string, string>>;
  workloadName?: string;
  /** Instance IPs (from INSTANCE_IPS, else the node id's IP field). */
  ips: readonly string[];
  interceptionMode: InterceptionMode;
  autoRegisterGroup?: string;
  /**
   * Where the agent serves the workload's secrets by file-based SDS (metadata SDS_PATHS). Envoy keys an SDS
   * subscription by name AND config source, so clusters must reference these paths, not ADS.
   */
  sdsPaths?: { default: string; ROOTCA: string };
  /**
   * Gateways: the bootstrap cluster through which the agent serves Gateway credentials (`credentialName`: secrets
   * NAME and NAME-cacert) over gRPC SDS on a local unix socket (metadata CREDENTIAL_SDS_CLUSTER, `sds-grpc`).
   * Absent: those secrets are requested over ADS (an operator's own SDS behind the control plane).
   */
  credentialSdsCluster?: string;
  /** Envoy uses DELTA_GRPC or GRPC; informational. */
  cluster?: string;
  locality?: { region?: string; zone?: string; sub_zone?: string };
}

/**
 * The node metadata keys, for both sides of the contract: the agent writes them (`nodeMetadataOf`, used by the
 * agent's bootstrap/node.ts) and `proxyViewFromNode` reads them. Istio's names where Istio has the concept.
 */
export const NodeMetadataKey = {
  namespace: "NAMESPACE",
  serviceAccount: "SERVICE_ACCOUNT",
  labels: "LABELS",
  workloadName: "WORKLOAD_NAME",
  instanceIps: "INSTANCE_IPS",
  interceptionMode: "INTERCEPTION_MODE",
  proxyKind: "PROXY_KIND",
  autoRegisterGroup: "AUTO_REGISTER_GROUP",
  sdsPaths: "SDS_PATHS",
  credentialSdsCluster: "CREDENTIAL_SDS_CLUSTER",
} as const;

/** What a proxy says about itself in its node metadata: a ProxyView without what comes from elsewhere in the node. */
export type NodeAnnouncement = Omit<ProxyView, "id" | "cluster" | "locality">;

const ID_PREFIX: Record<ProxyKind, string> = { sidecar: "sidecar", gateway: "router", grpc: "grpc" };

/**
 * `sidecar~IP~NAME.NS~NS.svc.cluster.local`, Istio's form (`router~` for a gateway). A proxyless gRPC process
 * gets `grpc~...`: the same fields, but a distinct id, so an Envoy and a gRPC app on one VM do not overwrite each
 * other in proxy-status.
 */
export function formatNodeId(kind: ProxyKind, ip: string, name: string, namespace: string): string {
  return `${ID_PREFIX[kind]}~${ip}~${name}.${namespace}~${namespace}.svc.cluster.local`;
}

/** The node metadata announcing `a`; `proxyViewFromNode` reads it back into the same facts. */
export function nodeMetadataOf(a: NodeAnnouncement): Record<string, unknown> {
  const K = NodeMetadataKey;
  const md: Record<string, unknown> = { [K.namespace]: a.namespace };
  if (a.serviceAccount) md[K.serviceAccount] = a.serviceAccount;
  md[K.labels] = { ...a.labels };
  if (a.workloadName) md[K.workloadName] = a.workloadName;
  md[K.instanceIps] = a.ips.join(",");
  md[K.interceptionMode] = a.interceptionMode;
  md[K.proxyKind] = a.kind;
  if (a.autoRegisterGroup) md[K.autoRegisterGroup] = a.autoRegisterGroup;
  // Proxyless gRPC reads certificates through its own certificate providers, never SDS.
  if (a.sdsPaths && a.kind !== "grpc") md[K.sdsPaths] = { ...a.sdsPaths };
  if (a.credentialSdsCluster && a.kind === "gateway") md[K.credentialSdsCluster] = a.credentialSdsCluster;
  return md;
}

/** The xDS `Node` message in the shape grpc/protobufjs hand it to us (snake_case, Struct already plain). */
export interface XdsNode {
  id?: string;
  cluster?: string;
  metadata?: Record<string, unknown>;
  locality?: { region?: string; zone?: string; sub_zone?: string };
  user_agent_name?: string;
}

export class ProxyViewError extends Error {}

function str(v: unknown): string | undefined {
  return typeof v === "string" && v !== "" ? v : undefined;
}

function parseLabels(v: unknown): Record<string, string> {
  if (v && typeof v === "object" && !Array.isArray(v)) {
    const out: Record<string, string> = {};
    for (const [k, val] of Object.entries(v)) if (typeof val === "string") out[k] = val;
    return out;
  }
  // Istio also accepts LABELS as a JSON string in env-style bootstraps.
  if (typeof v === "string" && v.trim().startsWith("{")) {
    try {
      return parseLabels(JSON.parse(v));
    } catch {
      return {};
    }
  }
  return {};
}

function parseSdsPaths(v: unknown): ProxyView["sdsPaths"] {
  if (!v || typeof v !== "object" || Array.isArray(v)) return undefined;
  const o = v as Record<string, unknown>;
  const def = str(o.default);
  const root = str(o.ROOTCA);
  return def && root ? { default: def, ROOTCA: root } : undefined;
}

/** Instance IPs in canonical form (ip.ts), so they compare equal to the same addresses spelled otherwise in config. */
function parseIps(v: unknown): string[] {
  const raw = Array.isArray(v) ? v.filter((x): x is string => typeof x === "string") : typeof v === "string" ? v.split(",") : [];
  return [...new Set(raw.map((s) => s.trim()).filter(Boolean).map(canonicalAddress))];
}

/**
 * Istio's node id `TYPE~IP~POD_NAME.NAMESPACE~NAMESPACE.svc.DOMAIN` (TYPE sidecar|router, or our grpc) or any other id
 * (a proxyless gRPC client's). Metadata keys win over what the id implies.
 */
export function proxyViewFromNode(node: XdsNode | undefined): ProxyView {
  if (!node || !node.id) throw new ProxyViewError("the first request on a stream must carry node.id");
  const md = node.metadata ?? {};
  const K = NodeMetadataKey;
  const parts = node.id.split("~");
  const istioForm = parts.length === 4 && (parts[0] === "sidecar" || parts[0] === "router" || parts[0] === "grpc");
  const idNamespace = istioForm ? parts[3]!.split(".")[0] : undefined;
  const idName = istioForm ? parts[2]!.split(".")[0] : undefined;
  const idIp = istioForm ? parts[1] : undefined;

  const kindMeta = str(md[K.proxyKind]) ?? str(md.VMPILOT_PROXY_KIND);
  let kind: ProxyKind;
  if (kindMeta === "sidecar" || kindMeta === "grpc" || kindMeta === "gateway") kind = kindMeta;
  else if (istioForm) kind = parts[0] === "router" ? "gateway" : parts[0] === "grpc" ? "grpc" : "sidecar";
  else kind = "grpc";

  const namespace = str(md[K.namespace]) ?? idNamespace ?? "default";
  const ips = parseIps(md[K.instanceIps]);
  if (ips.length === 0 && idIp) ips.push(canonicalAddress(idIp));
  const mode = str(md[K.interceptionMode]);
  const view: ProxyView = {
    id: node.id,
    kind,
    namespace,
    labels: parseLabels(md[K.labels]),
    ips,
    interceptionMode: mode === "TPROXY" || mode === "NONE" ? mode : kind === "sidecar" ? "REDIRECT" : "NONE",
  };
  const sa = str(md[K.serviceAccount]);
  if (sa) view.serviceAccount = sa;
  const wl = str(md[K.workloadName]) ?? idName;
  if (wl) view.workloadName = wl;
  const group = str(md[K.autoRegisterGroup]);
  if (group) view.autoRegisterGroup = group;
  // Proxyless gRPC reads certificates through its own certificate providers, never SDS.
  const sds = kind === "grpc" ? undefined : parseSdsPaths(md[K.sdsPaths]);
  if (sds) view.sdsPaths = sds;
  const credentialCluster = kind === "gateway" ? str(md[K.credentialSdsCluster]) : undefined;
  if (credentialCluster) view.credentialSdsCluster = credentialCluster;
  if (node.cluster) view.cluster = node.cluster;
  if (node.locality) view.locality = node.locality;
  return view;
}
