// ClusterLoadAssignments: a service port's endpoints (optionally filtered by a subset's labels), grouped by
// locality. Every LocalityLbEndpoints has a locality and a load_balancing_weight (gRPC drops localities without
// one), priority 0; endpoint weights are >= 1. Addresses are IP literals (and unix pipes for Envoy).
import { isIP } from "node:net";
import type { Endpoint, Port, Service } from "@vmpilot/registry";
import { endpointPort, labelsMatch } from "./context.js";
import type { ClusterFlavor } from "./policy.js";
import { TLS_MODE_ISTIO_METADATA } from "./tls.js";

type Json = Record<string, unknown>;

export function parseLocality(locality: string | undefined): Json {
  if (!locality) return {};
  const [region, zone, subZone] = locality.split("/");
  const out: Json = {};
  if (region) out.region = region;
  if (zone) out.zone = zone;
  if (subZone) out.sub_zone = subZone;
  return out;
}

function weightOf(ep: Endpoint): number {
  return ep.weight !== undefined && ep.weight >= 1 ? Math.floor(ep.weight) : 1;
}

function addressOf(ep: Endpoint, port: number, flavor: ClusterFlavor): Json | undefined {
  if (ep.address.startsWith("unix://")) {
    return flavor === "envoy" ? { pipe: { path: ep.address.slice("unix://".length) } } : undefined;
  }
  if (isIP(ep.address) === 0) return undefined;
  return { socket_address: { address: ep.address, port_value: port } };
}

/** The endpoints a cluster of `service` port `port` (subset `subsetLabels`) balances over. */
export function selectEndpoints(eps: readonly Endpoint[], subsetLabels: Readonly<Record<string, string>> | undefined): Endpoint[] {
  return subsetLabels ? eps.filter((e) => labelsMatch(e.labels, subsetLabels)) : [...eps];
}

/**
 * Locality groups in a stable order (by locality string). `address` maps an endpoint to an Envoy Address or
 * undefined (skipped). gRPC rejects a CLA that repeats an address, so repeats are dropped.
 */
export function localityEndpoints(
  eps: readonly Endpoint[],
  address: (ep: Endpoint) => Json | undefined,
  extra?: (ep: Endpoint) => Json,
): Json[] {
  const groups = new Map<string, { weight: number; lb: Json[] }>();
  const seen = new Set<string>();
  for (const ep of eps) {
    const addr = address(ep);
    if (!addr) continue;
    const id = JSON.stringify(addr);
    if (seen.has(id)) continue;
    seen.add(id);
    const w = weightOf(ep);
    const key = ep.locality ?? "";
    const g = groups.get(key) ?? { weight: 0, lb: [] };
    g.weight += w;
    // UNKNOWN is the proto default: leaving it out keeps the JSON canonical (what decoding yields).
    const health = ep.health === "UNKNOWN" ? {} : { health_status: ep.health };
    g.lb.push({ endpoint: { address: addr }, ...health, load_balancing_weight: w, ...(extra ? extra(ep) : {}) });
    groups.set(key, g);
  }
  return [...groups.keys()].sort().map((k) => {
    const g = groups.get(k)!;
    // Everything at priority 0 (the default, so not spelled out): no gaps for gRPC's priority policy.
    return { locality: parseLocality(k), lb_endpoints: g.lb, load_balancing_weight: g.weight };
  });
}

/** The EDS ClusterLoadAssignment for one cluster; empty (no localities) when nothing is selected. */
export function loadAssignment(
  clusterName: string,
  service: Service,
  port: Port,
  eps: readonly Endpoint[],
  subsetLabels: Readonly<Record<string, string>> | undefined,
  flavor: ClusterFlavor,
): Json {
  const selected = selectEndpoints(eps, subsetLabels);
  // Istio labels identity-bearing mesh endpoints so the auto-mTLS transport socket match picks them.
  const tagMtls = flavor === "envoy" && service.location === "MESH_INTERNAL";
  const endpoints = localityEndpoints(
    selected,
    (ep) => {
      const p = endpointPort(ep, port);
      return p === undefined ? undefined : addressOf(ep, p, flavor);
    },
    tagMtls ? (ep) => (ep.serviceAccount ? { metadata: TLS_MODE_ISTIO_METADATA } : {}) : undefined,
  );
  return endpoints.length ? { cluster_name: clusterName, endpoints } : { cluster_name: clusterName };
}

/**
 * Inline endpoints of a DNS cluster: endpoint hostnames (or the service's own host when it has no endpoints;
 * wildcards cannot be resolved). `single` keeps only the first (LOGICAL_DNS takes exactly one).
 */
export function dnsLoadAssignment(clusterName: string, service: Service, port: Port, eps: readonly Endpoint[], subsetLabels: Readonly<Record<string, string>> | undefined, single: boolean): Json | undefined {
  let selected = selectEndpoints(eps, subsetLabels).filter((e) => e.address !== "" && !e.address.startsWith("unix://"));
  if (eps.length === 0) {
    if (service.hostname.includes("*")) return undefined;
    selected = [{ address: service.hostname, ports: {}, labels: {}, health: "HEALTHY", namespace: service.namespace, origin: service.origin }];
  }
  if (single) selected = selected.slice(0, 1);
  if (selected.length === 0) return undefined;
  const endpoints = localityEndpoints(selected, (ep) => {
    const p = endpointPort(ep, port);
    return p === undefined ? undefined : { socket_address: { address: ep.address, port_value: p } };
  });
  return { cluster_name: clusterName, endpoints };
}
