// Clusters: per visible service port and DestinationRule subset `outbound|PORT|SUBSET|HOST`, typed by resolution
// (STATIC -> EDS, DNS -> STRICT_DNS, DNS_ROUND_ROBIN -> LOGICAL_DNS, NONE -> ORIGINAL_DST), plus the fixed
// PassthroughCluster / BlackHoleCluster and the inbound clusters of the proxy's own workload.
//
// gRPC clients (@grpc/grpc-js-xds) take only EDS and LOGICAL_DNS (exactly one endpoint) clusters with ROUND_ROBIN
// or RING_HASH; NONE-resolution services have no gRPC cluster. gRPC mTLS comes only from an explicit
// DestinationRule ISTIO_MUTUAL (as in Istio's proxyless support): a proxyless server terminates mTLS only when
// its own xDS server credentials say so, which the control plane cannot know. SIMPLE/MUTUAL with files cannot be
// expressed to a gRPC client, so such clusters are left out: calls fail instead of going out in plaintext.
import type { Endpoint, Port, Service } from "@vmpilot/registry";
import type { DestinationRuleConfig, InboundPort } from "./context.js";
import { dnsLoadAssignment, loadAssignment } from "./endpoints.js";
import { BLACKHOLE_CLUSTER, inboundClusterName, outboundClusterName, PASSTHROUGH_CLUSTER } from "./names.js";
import {
  circuitBreakers,
  connectionPoolFields,
  effectivePolicy,
  loadBalancerFields,
  outlierDetection,
  type ClusterFlavor,
  type EffectivePolicy,
} from "./policy.js";
import { autoMtlsSocketMatches, fileTlsSocket, grpcMutualSocket, istioMutualSocket, meshSans, wantsAutoMtls, type SdsPaths } from "./tls.js";
import { durationJson } from "./duration.js";
import { dynamicForwardProxyClusterFields } from "./dynamic-dns.js";

type Json = Record<string, unknown>;

const ADS_SOURCE = { ads: {}, resource_api_version: "V3" };
const DEFAULT_CONNECT_TIMEOUT = "10s";

/** One cluster to build: a service port, optionally narrowed to a subset. */
export interface ClusterPlan {
  name: string;
  port: Port;
  subset?: string;
  subsetLabels?: Readonly<Record<string, string>>;
  policy: EffectivePolicy;
}

export function clusterPlans(service: Service, dr: DestinationRuleConfig | undefined): ClusterPlan[] {
  const plans: ClusterPlan[] = [];
  for (const port of service.ports) {
    if (port.protocol === "UDP") continue;
    plans.push({ name: outboundClusterName(port.number, undefined, service.hostname), port, policy: effectivePolicy(dr, port.number) });
    for (const subset of dr?.spec.subsets ?? []) {
      plans.push({
        name: outboundClusterName(port.number, subset.name, service.hostname),
        port,
        subset: subset.name,
        subsetLabels: subset.labels ?? {},
        policy: effectivePolicy(dr, port.number, subset.name),
      });
    }
  }
  return plans;
}

function isHttp2(port: Port): boolean {
  return port.protocol === "GRPC" || port.protocol === "HTTP2";
}

function transportSocketFields(plan: ClusterPlan, service: Service, eps: readonly Endpoint[], flavor: ClusterFlavor, eds: boolean, sds: SdsPaths | undefined): Json | undefined {
  const tls = plan.policy.tls;
  if (flavor === "grpc") {
    if (!tls || tls.mode === "DISABLE") return {};
    if (tls.mode === "ISTIO_MUTUAL") {
      const sans = tls.subjectAltNames?.length ? [...tls.subjectAltNames] : meshSans(service, eps);
      return { transport_socket: grpcMutualSocket(sans) };
    }
    return undefined;
  }
  if (tls) {
    if (tls.mode === "DISABLE") return {};
    if (tls.mode === "ISTIO_MUTUAL") {
      const sans = tls.subjectAltNames?.length ? [...tls.subjectAltNames] : meshSans(service, eps);
      return { transport_socket: istioMutualSocket(plan.port.number, plan.subset, service.hostname, sans, sds) };
    }
    return { transport_socket: fileTlsSocket(tls, service.hostname) };
  }
  if (!wantsAutoMtls(service, eps) || service.resolution === "NONE") return {};
  const mtls = istioMutualSocket(plan.port.number, plan.subset, service.hostname, meshSans(service, eps), sds);
  if (eds) return { transport_socket_matches: autoMtlsSocketMatches(mtls) };
  // Inline DNS endpoints carry no metadata: mTLS only when every endpoint has an identity.
  return eps.every((e) => e.serviceAccount) ? { transport_socket: mtls } : {};
}

/** The cluster for one plan, or undefined when this flavor cannot have it. */
export function buildCluster(plan: ClusterPlan, service: Service, eps: readonly Endpoint[], flavor: ClusterFlavor, sds?: SdsPaths): Json | undefined {
  const { policy } = plan;
  const cluster: Json = { name: plan.name };
  const passthroughLb = policy.loadBalancer?.simple === "PASSTHROUGH" && !policy.loadBalancer.consistentHash;
  switch (service.resolution) {
    case "STATIC":
      if (passthroughLb && flavor === "envoy") {
        Object.assign(cluster, { type: "ORIGINAL_DST", lb_policy: "CLUSTER_PROVIDED" });
        break;
      }
      Object.assign(cluster, { type: "EDS", eds_cluster_config: { eds_config: ADS_SOURCE, service_name: plan.name } });
      break;
    case "DNS":
    case "DNS_ROUND_ROBIN": {
      const logical = flavor === "grpc" || service.resolution === "DNS_ROUND_ROBIN";
      const la = dnsLoadAssignment(plan.name, service, plan.port, eps, plan.subsetLabels, logical);
      if (flavor === "grpc" && !la) return undefined;
      Object.assign(cluster, {
        type: logical ? "LOGICAL_DNS" : "STRICT_DNS",
        load_assignment: la ?? { cluster_name: plan.name },
      });
      if (flavor === "envoy") Object.assign(cluster, { dns_lookup_family: "V4_ONLY", respect_dns_ttl: true });
      break;
    }
    case "NONE":
      if (flavor === "grpc") return undefined;
      Object.assign(cluster, { type: "ORIGINAL_DST", lb_policy: "CLUSTER_PROVIDED" });
      break;
    case "DYNAMIC_DNS": {
      // Resolved per request from Host/SNI (dynamic-dns.ts); none for gRPC clients or host-less ports.
      const dfp = dynamicForwardProxyClusterFields(plan.port, flavor);
      if (!dfp) return undefined;
      Object.assign(cluster, dfp);
      break;
    }
    default:
      return undefined;
  }
  const cp = policy.connectionPool;
  cluster.connect_timeout = cp?.tcp?.connectTimeout ? durationJson(cp.tcp.connectTimeout) : DEFAULT_CONNECT_TIMEOUT;
  if (cluster.lb_policy === undefined) Object.assign(cluster, loadBalancerFields(policy.loadBalancer, flavor));
  const cb = circuitBreakers(cp, flavor);
  if (cb) cluster.circuit_breakers = cb;
  const od = outlierDetection(policy.outlierDetection);
  if (od) cluster.outlier_detection = od;
  const ts = transportSocketFields(plan, service, eps, flavor, cluster.type === "EDS", sds);
  if (ts === undefined) return undefined;
  Object.assign(cluster, ts);
  if (flavor === "envoy") {
    Object.assign(cluster, connectionPoolFields(cp, isHttp2(plan.port)));
    // Locality weights steer the zone-aware balancers; the hashing balancers (RING_HASH, MAGLEV) do not take them.
    if (cluster.type === "EDS" && cluster.lb_policy !== "RING_HASH" && cluster.lb_policy !== "MAGLEV") {
      cluster.common_lb_config = { locality_weighted_lb_config: {} };
    }
    const istio: Json = { services: [{ host: service.hostname, namespace: service.namespace }], default_original_port: plan.port.number };
    if (plan.subset) istio.subset = plan.subset;
    cluster.metadata = { filter_metadata: { istio } };
  }
  return cluster;
}

export function serviceClusters(service: Service, eps: readonly Endpoint[], dr: DestinationRuleConfig | undefined, flavor: ClusterFlavor, sds?: SdsPaths): Json[] {
  const out: Json[] = [];
  for (const plan of clusterPlans(service, dr)) {
    const c = buildCluster(plan, service, eps, flavor, sds);
    if (c) out.push(c);
  }
  return out;
}

export function serviceLoadAssignments(service: Service, eps: readonly Endpoint[], dr: DestinationRuleConfig | undefined, flavor: ClusterFlavor): Json[] {
  const out: Json[] = [];
  for (const plan of clusterPlans(service, dr)) {
    const c = buildCluster(plan, service, eps, flavor);
    if (c?.type !== "EDS") continue;
    out.push(loadAssignment(plan.name, service, plan.port, eps, plan.subsetLabels, flavor));
  }
  return out;
}

/** Traffic to destinations the mesh does not know, sent on to where it was going (ALLOW_ANY). */
export function passthroughCluster(): Json {
  return {
    name: PASSTHROUGH_CLUSTER,
    type: "ORIGINAL_DST",
    connect_timeout: DEFAULT_CONNECT_TIMEOUT,
    lb_policy: "CLUSTER_PROVIDED",
    circuit_breakers: circuitBreakers(undefined, "envoy"),
  };
}

/** Traffic to unknown destinations under REGISTRY_ONLY: a cluster with no endpoints. */
export function blackholeCluster(): Json {
  return { name: BLACKHOLE_CLUSTER, type: "STATIC", connect_timeout: DEFAULT_CONNECT_TIMEOUT };
}

/** `inbound|PORT||`: the local application on 127.0.0.1 at the port the traffic arrived on. */
export function inboundCluster(p: InboundPort): Json {
  const name = inboundClusterName(p.port);
  return {
    name,
    type: "STATIC",
    connect_timeout: DEFAULT_CONNECT_TIMEOUT,
    lb_policy: "ROUND_ROBIN",
    circuit_breakers: circuitBreakers(undefined, "envoy"),
    load_assignment: {
      cluster_name: name,
      endpoints: [
        {
          locality: {},
          lb_endpoints: [{ endpoint: { address: { socket_address: { address: "127.0.0.1", port_value: p.port } } }, load_balancing_weight: 1 }],
          load_balancing_weight: 1,
        },
      ],
    },
  };
}
