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

/**
 * How a resource map came about from the one it replaced: the names whose entry differs (added, changed or
 * removed). A source that rebuilds its maps after a change records this, so a stream that had everything of the
 * previous map only looks at the changed names instead of diffing thousands of unchanged ones per proxy.
 */
interface Lineage {
  prev: ReadonlyMap<string, EncodedResource> | undefined;
  changed: ReadonlySet<string>;
}

const lineage = new WeakMap<ReadonlyMap<string, EncodedResource>, Lineage>();

/** How far back a stream may walk: older links are cut so replaced maps can be collected. */
const MAX_LINEAGE = 8;

/** Records that `next` replaces `prev` and differs from it exactly in `changed`. */
export function recordLineage(next: ReadonlyMap<string, EncodedResource>, prev: ReadonlyMap<string, EncodedResource>, changed: ReadonlySet<string>): void {
  if (next === prev) return;
  lineage.set(next, { prev, changed });
  let link = lineage.get(prev);
  for (let depth = 1; link?.prev && depth < MAX_LINEAGE; depth++) {
    const older = lineage.get(link.prev);
    if (depth === MAX_LINEAGE - 1) link.prev = undefined;
    link = older;
  }
}

/** The names that differ between `base` and `map` if `map` descends from `base` (undefined: unknown, diff in full). */
export function changedSince(map: ReadonlyMap<string, EncodedResource>, base: ReadonlyMap<string, EncodedResource>): ReadonlySet<string> | undefined {
  if (map === base) return new Set();
  const first = lineage.get(map);
  if (!first) return undefined;
  if (first.prev === base) return first.changed;
  const out = new Set(first.changed);
  for (let link = first.prev ? lineage.get(first.prev) : undefined; link; link = link.prev ? lineage.get(link.prev) : undefined) {
    for (const n of link.changed) out.add(n);
    if (link.prev === base) return out;
  }
  return undefined;
}

/** The names whose entries differ between two maps (both directions). O(size): sources call it once per rebuilt map, not per proxy. */
export function diffNames(a: ReadonlyMap<string, EncodedResource>, b: ReadonlyMap<string, EncodedResource>): Set<string> {
  const out = new Set<string>();
  for (const [n, r] of a) if (b.get(n)?.version !== r.version) out.add(n);
  for (const n of b.keys()) if (!a.has(n)) out.add(n);
  return out;
}

const MASK64 = (1n << 64n) - 1n;
const mapVersions = new WeakMap<ReadonlyMap<string, EncodedResource>, SetVersion>();
const entryHashes = new WeakMap<EncodedResource, bigint>();

function entryHash(name: string, version: string): bigint {
  return BigInt("0x" + createHash("sha256").update(name).update("\0").update(version).digest("hex").slice(0, 16));
}

/**
 * The version of a set of (name, version) pairs, kept up to date entry by entry: the sum of per-entry hashes
 * modulo 2^64. Equal content gives an equal version on every stream and every replica (as contentVersion),
 * but a change of one entry costs one hash instead of re-hashing thousands of unchanged ones.
 */
export class SetVersion {
  private sum = 0n;
  /**
   * The version of a whole source map, made once per map: a stream that is sent all of a shared map (a sidecar's
   * first 3,000 clusters) takes it instead of adding 3,000 entries one by one (and making as many BigInts of garbage).
   */
  static of(map: ReadonlyMap<string, EncodedResource>): SetVersion {
    let v = mapVersions.get(map);
    if (!v) {
      v = new SetVersion();
      let sum = 0n;
      for (const r of map.values()) sum += hashOf(r.name, r);
      v.sum = sum & MASK64;
      mapVersions.set(map, v);
    }
    return v;
  }
  /** Takes `other`'s value. */
  assign(other: SetVersion): void {
    this.sum = other.sum;
  }
  add(name: string, version: string | EncodedResource): void {
    this.sum = (this.sum + hashOf(name, version)) & MASK64;
  }
  remove(name: string, version: string | EncodedResource): void {
    this.sum = (this.sum - hashOf(name, version)) & MASK64;
  }
  clear(): void {
    this.sum = 0n;
  }
  toString(): string {
    return this.sum.toString(16).padStart(16, "0");
  }
}

function hashOf(name: string, v: string | EncodedResource): bigint {
  if (typeof v === "string") return entryHash(name, v);
  let h = entryHashes.get(v);
  if (h === undefined) entryHashes.set(v, (h = entryHash(v.name, v.version)));
  return h;
}
