// What the ADS server needs from the layer below it, and the ordering rules between resource types.
import { createHash } from "node:crypto";
import type { EncodedResource } from "../cache.js";
import { TypeUrl } from "../protos.js";
import type { ProxyView } from "../proxy-view.js";

export type { EncodedResource };

/**
 * The complete set of resources of one type for one proxy view (ResourceCache implements it). The server
 * filters by subscription itself; the source answers "what exists for this proxy".
 */
export interface ResourceSource {
  resources(view: ProxyView, typeUrl: string): ReadonlyMap<string, EncodedResource>;
}

/**
 * Not a resource type: Istio's agents report their workload's health as DiscoveryRequests of this type
 * (healthy = no error_detail). Such requests are never answered.
 */
export const HEALTH_TYPE_URL = "type.googleapis.com/istio.v1.HealthInformation";

/**
 * Types whose state-of-the-world responses are complete (absence = removal), and which Envoy subscribes to
 * with a wildcard (an empty first resource list).
 */
export const COMPLETE_TYPES: ReadonlySet<string> = new Set([TypeUrl.Listener, TypeUrl.Cluster]);

/**
 * Make before break: a cluster exists (with its endpoints) before a listener or route points at it, so
 * additions and updates go CDS -> EDS -> LDS -> RDS. Removals go the other way round, once nothing that
 * could still reference the removed resource is waiting to be sent or acknowledged.
 */
export const PUSH_ORDER: readonly string[] = [TypeUrl.Cluster, TypeUrl.ClusterLoadAssignment, TypeUrl.Listener, TypeUrl.RouteConfiguration, TypeUrl.Secret];
export const REMOVAL_ORDER: readonly string[] = [TypeUrl.Listener, TypeUrl.RouteConfiguration, TypeUrl.Cluster, TypeUrl.ClusterLoadAssignment, TypeUrl.Secret];

function rank(order: readonly string[], typeUrl: string): number {
  const i = order.indexOf(typeUrl);
  return i < 0 ? order.length : i;
}

export function byPushOrder(a: string, b: string): number {
  return rank(PUSH_ORDER, a) - rank(PUSH_ORDER, b) || a.localeCompare(b);
}

export function removalRank(typeUrl: string): number {
  return rank(REMOVAL_ORDER, typeUrl);
}

/** Short display name of a type URL for logs, metrics and /debug/syncz ("Cluster", "Listener", ...). */
export function shortType(typeUrl: string): string {
  switch (typeUrl) {
    case TypeUrl.Listener:
      return "LDS";
    case TypeUrl.RouteConfiguration:
      return "RDS";
    case TypeUrl.Cluster:
      return "CDS";
    case TypeUrl.ClusterLoadAssignment:
      return "EDS";
    case TypeUrl.Secret:
      return "SDS";
  }
  return typeUrl.slice(typeUrl.lastIndexOf(".") + 1);
}

/**
 * A version for a set of (name, version) pairs: equal content gives an equal version on every stream and
 * every replica, so a reconnecting proxy's version_info means something to any of them.
 */
export function contentVersion(entries: Iterable<readonly [string, string]>): string {
  const sorted = [...entries].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const h = createHash("sha256");
  for (const [name, version] of sorted) h.update(name).update("\0").update(version).update("\n");
  return h.digest("hex").slice(0, 16);
}
