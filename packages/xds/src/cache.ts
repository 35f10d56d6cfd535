// The encoded-resource cache: what the ADS server asks for each proxy, encoded once and shared.
//
// Design
// ------
// Generation is split into parts by what they depend on (see generators/index.ts), and each part is cached at
// the level where proxies share it:
//
//   unit (flavor, service, DestinationRule, SDS paths)   clusters and ClusterLoadAssignments of one service.
//       Shared by every scope whose proxies resolve the same DestinationRule for that service: a CLA served to
//       1,000 proxies in 50 namespaces is encoded once. Inputs are checked by identity: the registry keeps the
//       same frozen Service / endpoint list / config object when they did not change, so a unit is reused
//       exactly when its inputs are the same objects. Clusters depend on endpoints only through the identities
//       (SANs, auto mTLS) and, for DNS resolution, the inline endpoints; a fingerprint of just that decides
//       whether an endpoint change touches the clusters, so an endpoint change to service X re-encodes X's CLAs
//       and nothing else.
//   scope (kind, namespace, selected labels, interception mode, SDS paths)   the complete per-type maps (CDS, EDS,
//       LDS, RDS) for the outbound side. Proxies with the same scope key get the SAME map objects. Labels count
//       only where some selector looks at them (RoutingIndex.effectiveLabels): without a Sidecar, DestinationRule
//       or VirtualService that selects workloads, a namespace's proxies share one scope whatever their labels. Listeners and
//       route configs are aggregates over all visible services and are encoded per scope.
//   Listeners and route configs are aggregates built per scope, but most of them come out byte-identical in
//   many scopes (a gRPC client's `HOST:PORT` listener is the same in every namespace) and across snapshots;
//   an intern table keyed by their JSON text (kept for the current and the previous snapshot) encodes each
//   distinct one once, so a VirtualService change re-encodes only the resources whose content changed. Entries
//   are reference-counted by the scope maps holding them and released one snapshot after those maps are
//   dropped, so a resource that comes out the same after a change is reused, not re-encoded.
//   view (scope + instance IPs + workload name)   a sidecar's own inbound clusters and virtualInbound listener,
//       laid over the scope's CDS/LDS map with a read-only overlay (no copy of the scope map per proxy).
//
// update(snapshot) walks only the change set: removed/changed services and changed DestinationRules evict
// their units; a scope's maps are dropped only if a changed service is (or becomes) visible to it, or routing
// changed; an endpoint-only change drops just the EDS map (and the CDS map when the service's cluster-relevant
// endpoint facts changed) of scopes that see the service; inbound parts are dropped for proxies whose own
// services changed. Nothing is regenerated in update(): maps are rebuilt lazily by the next resources() call,
// from cached units, so per-snapshot work is proportional to the change times the scopes it reaches, and
// encoding work to the resources whose content changed.
//
// Versions are content hashes of the encoded bytes (hash.ts): stable across views, instances and restarts.
import type { Endpoint, RegistrySnapshot, Service } from "@vmpilot/registry";
import { blackholeCluster, passthroughCluster, serviceClusters, serviceLoadAssignments } from "./generators/clusters.js";
import {
  buildScope,
  contextOf,
  RoutingIndex,
  scopeKey,
  serviceInScope,
  workloadKeyOf,
  type DestinationRuleConfig,
  type GenContext,
  type Scope,
} from "./generators/context.js";
import { flavorOf } from "./generators/flavor.js";
import { inboundParts, scopeHttp } from "./generators/index.js";
import type { ClusterFlavor } from "./generators/policy.js";
import { contentVersion } from "./hash.js";
import { encodeJson } from "./protojson.js";
import { TypeUrl, typeNameOfUrl } from "./protos.js";
import type { ProxyView } from "./proxy-view.js";
import { changedSince, diffNames, recordLineage } from "./server/resources.js";

export interface EncodedResource {
  name: string;
  typeUrl: string;
  /** Content hash of `bytes`. */
  version: string;
  bytes: Uint8Array;
}

export interface ResourceCacheOptions {
  /** Called once per resource encoding (tests count them; metrics may too). */
  onEncode?: (typeUrl: string, name: string) => void;
}

type Json = Record<string, unknown>;
type ResourceMap = ReadonlyMap<string, EncodedResource>;

const EMPTY: ResourceMap = new Map();

/**
 * Scopes and views nobody asked about for this many snapshots are forgotten (proxies that left, label sets no
 * longer in use); a connected proxy that is asked about again is simply rebuilt from the service units.
 */
const IDLE_GENERATIONS = 100;

interface ClusterEntry {
  service: Service;
  dr: DestinationRuleConfig | undefined;
  fp: string;
  resources: EncodedResource[];
}

interface ClaEntry {
  service: Service;
  dr: DestinationRuleConfig | undefined;
  eps: readonly Endpoint[];
  resources: EncodedResource[];
}

interface Unit {
  serviceKey: string;
  drKey: string;
  clusters?: ClusterEntry;
  clas?: ClaEntry;
}

interface ScopeEntry {
  key: string;
  /** Intern keys of the listeners and route configs in `maps`. */
  internKeys: string[];
  /** Rebuilt lazily after a change that may alter visibility. */
  scope?: Scope;
  maps: Map<string, ResourceMap>;
  /**
   * Maps dropped by update() and not rebuilt yet: the rebuilt map records which names differ from them, so
   * streams compare only those (per scope O(services) once, instead of per proxy).
   */
  replaced: Map<string, ResourceMap>;
  /**
   * An EDS map dropped for endpoint-only changes: rebuilt as a copy of `base` with just these services'
   * ClusterLoadAssignments replaced (their names depend on the service and DestinationRule, which did not change).
   */
  edsPatch?: { base: ResourceMap; services: Set<string> };
  lastUsed: number;
}

interface ViewEntry {
  key: string;
  view: ProxyView;
  inbound?: { clusters: ResourceMap; listeners: ResourceMap; serviceKeys: string[] };
  overlays: Map<string, { base: ResourceMap; extra: ResourceMap; map: ResourceMap }>;
  lastUsed: number;
}

/** Identity facts of endpoints that clusters depend on (SANs, auto mTLS, and DNS clusters' inline endpoints). */
const clusterFpMemo = new WeakMap<readonly Endpoint[], { identity: string; full: string }>();
function clusterFingerprint(service: Service, eps: readonly Endpoint[]): string {
  let fp = clusterFpMemo.get(eps);
  if (!fp) {
    const ids = [...new Set(eps.map((e) => e.spiffeId ?? ""))].sort().join(",");
    const identity = `${ids}|${eps.length > 0 && eps.every((e) => e.serviceAccount) ? 1 : 0}|${eps.length === 0 ? 0 : 1}`;
    const full = `${identity}|${JSON.stringify(eps.map((e) => [e.address, e.ports, e.labels, e.locality ?? "", e.weight ?? 0, e.health]))}`;
    fp = { identity, full };
    clusterFpMemo.set(eps, fp);
  }
  return service.resolution === "DNS" || service.resolution === "DNS_ROUND_ROBIN" ? fp.full : fp.identity;
}

/** A view over a base map with a few more entries; avoids copying a scope map per proxy. */
class OverlayMap implements ReadonlyMap<string, EncodedResource> {
  constructor(
    private readonly base: ResourceMap,
    private readonly extra: ResourceMap,
  ) {}
  get size(): number {
    return this.base.size + this.extra.size;
  }
  get(k: string): EncodedResource | undefined {
    return this.extra.get(k) ?? this.base.get(k);
  }
  has(k: string): boolean {
    return this.extra.has(k) || this.base.has(k);
  }
  *entries(): MapIterator<[string, EncodedResource]> {
    yield* this.base.entries();
    yield* this.extra.entries();
  }
  *keys(): MapIterator<string> {
    yield* this.base.keys();
    yield* this.extra.keys();
  }
  *values(): MapIterator<EncodedResource> {
    yield* this.base.values();
    yield* this.extra.values();
  }
  [Symbol.iterator](): MapIterator<[string, EncodedResource]> {
    return this.entries();
  }
  forEach(cb: (value: EncodedResource, key: string, map: ReadonlyMap<string, EncodedResource>) => void, thisArg?: unknown): void {
    for (const [k, v] of this.entries()) cb.call(thisArg, v, k, this);
  }
}

/**
 * A view's key: its scope plus the facts that decide its inbound side. With `routing`, the scope part counts only
 * the labels some selector looks at (see scopeKey), as the cache does.
 */
export function viewKey(view: ProxyView, routing?: RoutingIndex): string {
  const own = `|${[...view.ips].sort().join(",")}|${workloadKeyOf(view) ?? ""}`;
  // gRPC servers' listeners also depend on the service account (generators/grpc-server-listeners.ts).
  const inbound = view.kind === "sidecar" && view.interceptionMode !== "NONE" ? own : view.kind === "grpc" ? `${own}|${view.serviceAccount ?? ""}` : "";
  return scopeKey(view, routing) + inbound;
}

/**
 * Views with a part of their own: sidecars with capture (inbound side), gRPC nodes that can be servers (their server
 * listeners; a node with neither IPs nor a workload name has no instance, and shares its scope's maps as before).
 */
function hasInbound(view: ProxyView): boolean {
  if (view.kind === "grpc") return view.ips.length > 0 || view.workloadName !== undefined;
  return view.kind === "sidecar" && view.interceptionMode !== "NONE";
}

export class ResourceCache {
  private ctx: GenContext | undefined;
  private readonly units = new Map<string, Unit>();
  private readonly unitsByService = new Map<string, Set<string>>();
  private readonly unitsByDr = new Map<string, Set<string>>();
  private readonly scopes = new Map<string, ScopeEntry>();
  private readonly views = new Map<string, ViewEntry>();
  /** Fixed resources (PassthroughCluster, BlackHoleCluster) are the same everywhere: encoded once. */
  private fixed: EncodedResource[] | undefined;
  private generation = 0;
  /** Interned aggregate resources (listeners, route configs) by type + JSON text, with holder counts. */
  private readonly interned = new Map<string, { resource: EncodedResource; refs: number }>();
  /** Intern keys of scope maps dropped by the last update; released at the next one. */
  private releaseQueue: string[] = [];
  /** Each proxy view's scope and view keys under the current routing index (asked for on every push). */
  private readonly keysOf = new WeakMap<ProxyView, { routing: RoutingIndex; scope: string; view: string }>();

  constructor(private readonly opts: ResourceCacheOptions = {}) {}

  get snapshot(): RegistrySnapshot | undefined {
    return this.ctx?.snapshot;
  }

  /** How many scopes (sets of proxies sharing outbound config) and views are cached: for tests and metrics. */
  get size(): { scopes: number; views: number } {
    return { scopes: this.scopes.size, views: this.views.size };
  }

  /** The scope and view keys of `view` now (labels no selector looks at do not count). */
  keys(view: ProxyView): { scope: string; view: string } {
    const routing = this.ctx!.routing;
    let k = this.keysOf.get(view);
    if (!k || k.routing !== routing) this.keysOf.set(view, (k = { routing, scope: scopeKey(view, routing), view: viewKey(view, routing) }));
    return k;
  }

  /** Switch to a new snapshot; drops only cached entries the snapshot's change set touches. */
  update(snapshot: RegistrySnapshot): void {
    const prev = this.ctx?.snapshot;
    if (prev === snapshot) return;
    this.generation++;
    this.releaseInterned();
    // A change set describes the step from the previous snapshot; anything else is a full rebuild.
    if (!prev || !this.ctx || snapshot.changes.full || snapshot.version !== prev.version + 1) {
      this.reset(snapshot);
      return;
    }
    const ctx = this.ctx;
    const { changes } = snapshot;
    const routingChanged = changes.routing.size > 0;
    const drChanged = [...changes.routing].some((key) => key.startsWith("DestinationRule/"));
    ctx.snapshot = snapshot;
    if (routingChanged) ctx.routing = new RoutingIndex(snapshot.configs);
    for (const key of new Set([...changes.services, ...changes.endpoints])) ctx.inbound.set(key, snapshot.endpoints.get(key));

    // Units: a changed or removed service, or a changed DestinationRule, evicts; endpoint changes drop CLAs.
    for (const key of changes.services) this.evictUnits(this.unitsByService.get(key));
    for (const key of changes.routing) if (key.startsWith("DestinationRule/")) this.evictUnits(this.unitsByDr.get(key));
    for (const key of changes.endpoints) for (const u of this.unitsByService.get(key) ?? []) delete this.units.get(u)!.clas;

    // Endpoint-only changes: which of them change cluster-relevant facts?
    const endpointOnly: { key: string; clusters: boolean }[] = [];
    for (const key of changes.endpoints) {
      if (changes.services.has(key)) continue;
      const service = snapshot.services.get(key);
      if (!service) continue;
      const clusters = clusterFingerprint(service, prev.endpoints.get(key) ?? []) !== clusterFingerprint(service, snapshot.endpoints.get(key) ?? []);
      endpointOnly.push({ key, clusters });
    }

    for (const [skey, entry] of this.scopes) {
      if (this.generation - entry.lastUsed > IDLE_GENERATIONS) {
        this.dropAggregates(entry);
        this.scopes.delete(skey);
        continue;
      }
      const scope = entry.scope;
      if (!scope || routingChanged || this.visibilityTouched(scope, changes.services, snapshot)) {
        entry.scope = undefined;
        this.dropAggregates(entry);
        for (const t of new Set([...entry.maps.keys(), TypeUrl.ClusterLoadAssignment])) this.dropMap(entry, t);
        continue;
      }
      for (const e of endpointOnly) {
        if (!scope.serviceKeys.has(e.key)) continue;
        const eds = entry.maps.get(TypeUrl.ClusterLoadAssignment);
        if (eds) {
          entry.maps.delete(TypeUrl.ClusterLoadAssignment);
          entry.edsPatch = { base: eds, services: new Set([e.key]) };
        } else entry.edsPatch?.services.add(e.key);
        if (e.clusters) this.dropMap(entry, TypeUrl.Cluster);
      }
    }

    const touched = new Set([...changes.services, ...changes.endpoints]);
    for (const [vkey, v] of this.views) {
      if (this.generation - v.lastUsed > IDLE_GENERATIONS) {
        this.views.delete(vkey);
        continue;
      }
      if (!v.inbound) continue;
      // A gRPC server listener's TLS follows the DestinationRule published with its service (nothing else of routing).
      if (drChanged && v.view.kind === "grpc") {
        v.inbound = undefined;
        continue;
      }
      const now = ctx.inbound.servicesOf(v.view.ips, workloadKeyOf(v.view));
      if (now.join("\n") !== v.inbound.serviceKeys.join("\n") || now.some((k) => touched.has(k))) v.inbound = undefined;
    }
  }

  /** Every resource of `typeUrl` this view should have (see the design note at the top). */
  resources(view: ProxyView, typeUrl: string): ResourceMap {
    if (!this.ctx) throw new Error("ResourceCache.resources() before the first update()");
    const entry = this.scopeEntry(view);
    const base = this.scopeMap(entry, typeUrl);
    if (!hasInbound(view) || (typeUrl !== TypeUrl.Cluster && typeUrl !== TypeUrl.Listener)) return base;
    const v = this.viewEntry(view);
    const inbound = this.inbound(v);
    const extra = typeUrl === TypeUrl.Cluster ? inbound.clusters : inbound.listeners;
    const cached = v.overlays.get(typeUrl);
    if (cached && cached.base === base && cached.extra === extra) return cached.map;
    const map = extra.size === 0 ? base : new OverlayMap(base, extra);
    if (cached && map !== base && map !== cached.map) {
      // The overlay's lineage: what changed in the scope map plus what changed in the proxy's own part.
      const changed = changedSince(base, cached.base);
      if (changed) recordLineage(map, cached.map, cached.extra === extra ? changed : new Set([...changed, ...diffNames(cached.extra, extra)]));
    }
    v.overlays.set(typeUrl, { base, extra, map });
    return map;
  }

  /** Drops a scope map, remembering the one streams were last given until its replacement is built. */
  private dropMap(entry: ScopeEntry, typeUrl: string): void {
    if (typeUrl === TypeUrl.ClusterLoadAssignment && entry.edsPatch) {
      // A patch pending on a map streams were given: that map is what the full rebuild must be compared with.
      if (!entry.replaced.has(typeUrl)) entry.replaced.set(typeUrl, entry.edsPatch.base);
      entry.edsPatch = undefined;
    }
    const old = entry.maps.get(typeUrl);
    if (!old) return;
    entry.maps.delete(typeUrl);
    if (!entry.replaced.has(typeUrl)) entry.replaced.set(typeUrl, old);
  }

  /** Records how a rebuilt scope map differs from the one it replaces (see ScopeEntry.replaced). */
  private linkReplaced(entry: ScopeEntry, typeUrl: string, map: ResourceMap): void {
    const old = entry.replaced.get(typeUrl);
    if (!old) return;
    entry.replaced.delete(typeUrl);
    recordLineage(map, old, diffNames(old, map));
  }

  // -------------------------------------------------------------------------------------------------------

  private reset(snapshot: RegistrySnapshot): void {
    this.ctx = contextOf(snapshot);
    this.interned.clear();
    this.releaseQueue = [];
    this.units.clear();
    this.unitsByService.clear();
    this.unitsByDr.clear();
    this.scopes.clear();
    this.views.clear();
  }

  private evictUnits(keys: Set<string> | undefined): void {
    for (const k of [...(keys ?? [])]) {
      const u = this.units.get(k);
      if (!u) continue;
      this.units.delete(k);
      this.unitsByService.get(u.serviceKey)?.delete(k);
      this.unitsByDr.get(u.drKey)?.delete(k);
    }
  }

  /** Whether a changed service is visible to the scope now or was before (then its maps must be rebuilt). */
  private visibilityTouched(scope: Scope, changed: ReadonlySet<string>, snapshot: RegistrySnapshot): boolean {
    for (const key of changed) {
      if (scope.serviceKeys.has(key)) return true;
      const s = snapshot.services.get(key);
      if (s && serviceInScope(s, scope.namespace, scope.sidecar)) return true;
    }
    return false;
  }

  private encode(typeUrl: string, json: Json, name: string): EncodedResource {
    const bytes = encodeJson(typeNameOfUrl(typeUrl), json);
    this.opts.onEncode?.(typeUrl, name);
    return { name, typeUrl, version: contentVersion(bytes), bytes };
  }

  private encodeAll(typeUrl: string, list: readonly Json[], nameKey = "name"): EncodedResource[] {
    return list.map((j) => this.encode(typeUrl, j, j[nameKey] as string));
  }

  /** Encodes, or reuses the resource already encoded for identical JSON; `keys` collects the holder's references. */
  private encodeInterned(typeUrl: string, list: readonly Json[], keys: string[]): EncodedResource[] {
    return list.map((j) => {
      const key = `${typeUrl}\u0000${JSON.stringify(j)}`;
      let e = this.interned.get(key);
      if (!e) this.interned.set(key, (e = { resource: this.encode(typeUrl, j, j.name as string), refs: 0 }));
      e.refs++;
      keys.push(key);
      return e.resource;
    });
  }

  /** A scope's listeners and route configs are going away: release their intern references next update. */
  private dropAggregates(entry: ScopeEntry): void {
    this.releaseQueue.push(...entry.internKeys);
    entry.internKeys = [];
  }

  private releaseInterned(): void {
    for (const key of this.releaseQueue) {
      const e = this.interned.get(key);
      if (e && --e.refs <= 0) this.interned.delete(key);
    }
    this.releaseQueue = [];
  }

  private scopeEntry(view: ProxyView): ScopeEntry {
    const key = this.keys(view).scope;
    let entry = this.scopes.get(key);
    if (!entry) this.scopes.set(key, (entry = { key, internKeys: [], maps: new Map(), replaced: new Map(), lastUsed: this.generation }));
    entry.lastUsed = this.generation;
    if (!entry.scope) entry.scope = buildScope(this.ctx!.snapshot, this.ctx!.routing, view);
    return entry;
  }

  private viewEntry(view: ProxyView): ViewEntry {
    const key = this.keys(view).view;
    let v = this.views.get(key);
    if (!v) this.views.set(key, (v = { key, view, overlays: new Map(), lastUsed: this.generation }));
    v.lastUsed = this.generation;
    return v;
  }

  private inbound(v: ViewEntry): NonNullable<ViewEntry["inbound"]> {
    if (v.inbound) return v.inbound;
    const ctx = this.ctx!;
    const parts = inboundParts(ctx, v.view);
    const toMap = (list: EncodedResource[]): ResourceMap => new Map(list.map((r) => [r.name, r]));
    v.inbound = {
      clusters: toMap(this.encodeAll(TypeUrl.Cluster, parts.clusters)),
      listeners: toMap(this.encodeAll(TypeUrl.Listener, parts.listeners)),
      serviceKeys: ctx.inbound.servicesOf(v.view.ips, workloadKeyOf(v.view)),
    };
    return v.inbound;
  }

  private scopeMap(entry: ScopeEntry, typeUrl: string): ResourceMap {
    const cached = entry.maps.get(typeUrl);
    if (cached) return cached;
    const scope = entry.scope!;
    const ctx = this.ctx!;
    const map = new Map<string, EncodedResource>();
    const add = (list: readonly EncodedResource[]): void => {
      for (const r of list) map.set(r.name, r);
    };
    switch (typeUrl) {
      case TypeUrl.Cluster:
        if (scope.kind === "sidecar") add((this.fixed ??= this.encodeAll(TypeUrl.Cluster, [passthroughCluster(), blackholeCluster()])));
        for (const s of scope.services) add(this.clusters(scope, s));
        break;
      case TypeUrl.ClusterLoadAssignment: {
        const patch = entry.edsPatch;
        if (patch) {
          // Endpoint-only changes: copy the map streams have and replace the changed services' entries.
          entry.edsPatch = undefined;
          const patched = new Map(patch.base);
          const changed = new Set<string>();
          for (const key of patch.services) {
            const service = ctx.snapshot.services.get(key);
            if (!service || !scope.serviceKeys.has(key)) continue;
            for (const r of this.loadAssignments(scope, service)) {
              if (patch.base.get(r.name)?.version !== r.version) changed.add(r.name);
              patched.set(r.name, r);
            }
          }
          entry.maps.set(typeUrl, patched);
          recordLineage(patched, patch.base, changed);
          return patched;
        }
        for (const s of scope.services) add(this.loadAssignments(scope, s));
        break;
      }
      case TypeUrl.Listener:
      case TypeUrl.RouteConfiguration: {
        const http = scopeHttp(ctx, scope);
        const listeners = new Map(this.encodeInterned(TypeUrl.Listener, http.listeners, entry.internKeys).map((r) => [r.name, r]));
        const routes = new Map(this.encodeInterned(TypeUrl.RouteConfiguration, http.routes, entry.internKeys).map((r) => [r.name, r]));
        entry.maps.set(TypeUrl.Listener, listeners);
        entry.maps.set(TypeUrl.RouteConfiguration, routes);
        this.linkReplaced(entry, TypeUrl.Listener, listeners);
        this.linkReplaced(entry, TypeUrl.RouteConfiguration, routes);
        return typeUrl === TypeUrl.Listener ? listeners : routes;
      }
      default:
        return EMPTY;
    }
    entry.maps.set(typeUrl, map);
    this.linkReplaced(entry, typeUrl, map);
    return map;
  }

  private unit(flavor: ClusterFlavor, scope: Scope, service: Service): { unit: Unit; dr: DestinationRuleConfig | undefined } {
    const ctx = this.ctx!;
    const dr = ctx.routing.destinationRule(scope.namespace, scope.labels, service.hostname, service.namespace);
    const drKey = dr ? `DestinationRule/${dr.metadata.namespace}/${dr.metadata.name}` : "";
    const sds = flavor === "envoy" && scope.sdsPaths ? `${scope.sdsPaths.default}|${scope.sdsPaths.ROOTCA}` : "";
    const key = `${flavor}\u0000${service.key}\u0000${drKey}\u0000${sds}`;
    let unit = this.units.get(key);
    if (!unit) {
      this.units.set(key, (unit = { serviceKey: service.key, drKey }));
      indexAdd(this.unitsByService, service.key, key);
      if (drKey) indexAdd(this.unitsByDr, drKey, key);
    }
    return { unit, dr };
  }

  private clusters(scope: Scope, service: Service): EncodedResource[] {
    const flavor = flavorOf(scope.kind);
    const { unit, dr } = this.unit(flavor, scope, service);
    const eps = this.ctx!.snapshot.endpoints.get(service.key) ?? [];
    const fp = clusterFingerprint(service, eps);
    const c = unit.clusters;
    if (c && c.service === service && c.dr === dr && c.fp === fp) return c.resources;
    const resources = this.encodeAll(TypeUrl.Cluster, serviceClusters(service, eps, dr, flavor, scope.sdsPaths));
    unit.clusters = { service, dr, fp, resources };
    return resources;
  }

  private loadAssignments(scope: Scope, service: Service): EncodedResource[] {
    const flavor = flavorOf(scope.kind);
    const { unit, dr } = this.unit(flavor, scope, service);
    const eps = this.ctx!.snapshot.endpoints.get(service.key) ?? [];
    const c = unit.clas;
    if (c && c.service === service && c.dr === dr && c.eps === eps) return c.resources;
    const resources = this.encodeAll(TypeUrl.ClusterLoadAssignment, serviceLoadAssignments(service, eps, dr, flavor), "cluster_name");
    unit.clas = { service, dr, eps, resources };
    return resources;
  }
}

function indexAdd(m: Map<string, Set<string>>, k: string, v: string): void {
  let s = m.get(k);
  if (!s) m.set(k, (s = new Set()));
  s.add(v);
}

