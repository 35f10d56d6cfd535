// Incremental ADS (DeltaAggregatedResources): what Envoy speaks with `DELTA_GRPC`.
//
// Per type we track what the client has, name -> version: seeded from `initial_resource_versions` on the
// first request of a (reconnected) stream, updated optimistically with every response. A response carries
// only resources whose version differs from that, plus `removed_resources` for names the client has (or
// asked for) that do not exist for it. Requests are diffs, so subscription changes apply even when the
// nonce they carry is stale; only the ACK/NACK part needs the latest nonce.
//
// A stream in sync holds that record as a reference to the source map it converged on plus its own
// differences (see Known): the thousand sidecars of one scope share one 6,000-entry map, not a copy each.
import { COMPLETE_TYPES, type EncodedResource, SetVersion } from "./resources.js";
import { type DeltaRequest, encodeDeltaResponse } from "./ads.js";
import { mapId, type Plan, type Responded, type TypeState, XdsStream } from "./stream.js";

/** Marks a name we told the client does not exist, so the notice is not repeated. */
const ABSENT = "\0absent";
/** In `Known.own`: the base map has the name, the client does not. */
const LACKS = "\0lacks";

/**
 * What the client has of one type, name -> version (or ABSENT). Once the client has exactly what a source map
 * holds within its subscription, that map (shared by every stream of the scope, never changed) becomes `base`
 * and `own` keeps only this stream's differences from it: ABSENT markers, and whatever responses sent since.
 * The next sync moves the base on. The record is exact at every step; sharing is only how it is stored.
 */
class Known {
  private base: ReadonlyMap<string, EncodedResource> | undefined;
  private own = new Map<string, string>();

  constructor(private readonly state: { wildcard: boolean; names: ReadonlySet<string> }) {}

  private fromBase(name: string): string | undefined {
    if (!this.base || (!this.state.wildcard && !this.state.names.has(name))) return undefined;
    return this.base.get(name)?.version;
  }

  get(name: string): string | undefined {
    const v = this.own.get(name);
    if (v !== undefined) return v === LACKS ? undefined : v;
    return this.fromBase(name);
  }

  has(name: string): boolean {
    return this.get(name) !== undefined;
  }

  /** Records `version` (undefined: the client no longer has it). */
  set(name: string, version: string | undefined): void {
    const b = this.fromBase(name);
    if (version === b) this.own.delete(name);
    else this.own.set(name, version ?? LACKS);
  }

  *keys(): Generator<string> {
    for (const [n, v] of this.own) if (v !== LACKS) yield n;
    if (!this.base) return;
    for (const n of this.state.wildcard ? this.base.keys() : this.state.names) if (!this.own.has(n) && this.base.has(n)) yield n;
  }

  /** Entries held for this stream alone. */
  get ownSize(): number {
    return this.own.size;
  }

  /**
   * The shared map the client has exactly within its subscription, when all it holds of its own besides are notices
   * that names absent from `next` do not exist: then what it needs of `next` depends on that map alone.
   */
  pureBase(next: ReadonlyMap<string, EncodedResource>): ReadonlyMap<string, EncodedResource> | undefined {
    if (!this.base) return undefined;
    for (const [n, v] of this.own) if (v !== ABSENT || next.has(n)) return undefined;
    return this.base;
  }

  /** Whether `base` is `map`. */
  isBasedOn(map: ReadonlyMap<string, EncodedResource>): boolean {
    return this.base === map;
  }

  /** Holds everything per stream again: called before the subscription changes (the base is read through it). */
  materialize(): void {
    if (!this.base) return;
    const own = new Map<string, string>();
    for (const n of this.keys()) own.set(n, this.get(n)!);
    this.base = undefined;
    this.own = own;
  }

  /** The client has exactly `map` within its subscription, plus ABSENT markers: share `map` from now on. */
  rebase(map: ReadonlyMap<string, EncodedResource>): void {
    const own = new Map<string, string>();
    for (const [n, v] of this.own) if (v === ABSENT && !map.has(n)) own.set(n, v);
    this.base = map;
    this.own = own;
  }
}

/**
 * First subscriptions in use, shared by content: the sidecars of one scope subscribe to the same thousands of EDS
 * names, and each would otherwise keep its own set of its own decoded strings. Entries go when no stream holds them.
 */
const sharedSubscriptions = new Map<string, WeakRef<Set<string>>>();
const sharedSubscriptionGone = new FinalizationRegistry<string>((key) => {
  if (!sharedSubscriptions.get(key)?.deref()) sharedSubscriptions.delete(key);
});

/** A set of `names`, the same object for every stream that subscribed to the same list (never changed: copy first). */
function sharedNameSet(typeUrl: string, names: readonly string[]): Set<string> {
  const key = `${typeUrl}\0${names.join("\0")}`;
  const hit = sharedSubscriptions.get(key)?.deref();
  if (hit) return hit;
  const set = new Set(names);
  sharedSubscriptions.set(key, new WeakRef(set));
  sharedSubscriptionGone.register(set, key);
  return set;
}

interface DeltaTypeState extends TypeState {
  clientHas: Known;
  /** `names` is a shared set (sharedNameSet): copied before this stream's subscription changes. */
  namesShared: boolean;
  /** The version of what the client has (ABSENT markers excluded): system_version_info. */
  hasVersion: SetVersion;
}

/** Records (or with `version` undefined, forgets) what the client has under `name`, keeping the version current. */
function setHas(s: DeltaTypeState, name: string, version: string | EncodedResource | undefined): void {
  const old = s.clientHas.get(name);
  if (old !== undefined && old !== ABSENT) s.hasVersion.remove(name, old);
  if (version === undefined) {
    s.clientHas.set(name, undefined);
    return;
  }
  const v = typeof version === "string" ? version : version.version;
  s.clientHas.set(name, v);
  if (v !== ABSENT) s.hasVersion.add(name, version);
}

function newState(typeUrl: string): DeltaTypeState {
  const state = { typeUrl, wildcard: false, names: new Set<string>(), namesShared: false, hasVersion: new SetVersion(), force: false, gen: 0 } as Omit<DeltaTypeState, "clientHas"> as DeltaTypeState;
  state.clientHas = new Known(state);
  return state;
}

export class DeltaStream extends XdsStream {
  protected declare readonly types: Map<string, DeltaTypeState>;

  ownEntries(): number {
    let n = 0;
    for (const s of this.types.values()) n += s.clientHas.ownSize;
    return n;
  }

  protected override markSynced(state: TypeState, all: ReadonlyMap<string, EncodedResource>): void {
    const s = state as DeltaTypeState;
    if (!s.clientHas.isBasedOn(all)) s.clientHas.rebase(all);
    super.markSynced(state, all);
  }

  handle(request: unknown): void {
    const req = request as DeltaRequest;
    if (!req.type_url) throw new Error("DeltaDiscoveryRequest without type_url");
    if (this.handleHealth(req.type_url, req.error_detail)) return;
    let state = this.types.get(req.type_url);
    if (!state) {
      state = newState(req.type_url);
      for (const [name, version] of Object.entries(req.initial_resource_versions)) setHas(state, name, version);
      // Envoy's delta wildcard: an empty first subscription for LDS/CDS, or "*".
      const sub = req.resource_names_subscribe;
      state.wildcard = sub.includes("*") || (sub.length === 0 && COMPLETE_TYPES.has(req.type_url));
      const initial = Object.keys(req.initial_resource_versions);
      if (initial.length === 0 && sub.length > 0) {
        state.names = sharedNameSet(req.type_url, sub.includes("*") ? sub.filter((n) => n !== "*") : sub);
        state.namesShared = true;
      } else {
        for (const n of sub) if (n !== "*") state.names.add(n);
        if (!state.wildcard) for (const n of initial) state.names.add(n);
      }
      // A fresh wildcard subscription is answered even when empty: Envoy waits for it to finish initialising.
      state.force = state.wildcard && initial.length === 0;
      this.types.set(req.type_url, state);
      this.evaluate();
      return;
    }
    state.gen++;
    if (req.response_nonce) this.settle(state, req.response_nonce, req.error_detail);
    if (req.resource_names_subscribe.length > 0 || req.resource_names_unsubscribe.length > 0) {
      state.synced = undefined;
      // The shared base is read through the subscription: hold the record per stream while it changes.
      state.clientHas.materialize();
      if (state.namesShared) {
        state.names = new Set(state.names);
        state.namesShared = false;
      }
    }
    for (const n of req.resource_names_subscribe) {
      if (n === "*") state.wildcard = true;
      else state.names.add(n);
    }
    for (const n of req.resource_names_unsubscribe) {
      if (n === "*") {
        state.wildcard = false;
        for (const has of [...state.clientHas.keys()]) if (!state.names.has(has)) setHas(state, has, undefined);
      } else {
        state.names.delete(n);
        // Under a wildcard the resource still belongs to the client; otherwise it forgets it.
        if (!state.wildcard) setHas(state, n, undefined);
      }
    }
    this.evaluate();
  }

  protected override namesFrozen(state: TypeState): boolean {
    return (state as DeltaTypeState).namesShared;
  }

  protected plan(state: TypeState, desired: ReadonlyMap<string, EncodedResource>, all: ReadonlyMap<string, EncodedResource>, candidates?: ReadonlySet<string>): Plan {
    const s = state as DeltaTypeState;
    const upserts: EncodedResource[] = [];
    for (const r of desired.values()) if (s.clientHas.get(r.name) !== r.version) upserts.push(r);
    const removals: string[] = [];
    const notices: string[] = [];
    for (const name of candidates ?? s.clientHas.keys()) {
      const version = s.clientHas.get(name);
      if (version !== undefined && version !== ABSENT && !desired.has(name)) removals.push(name);
    }
    // Subscribed names that do not exist: say so once, so the client stops waiting for them.
    for (const name of candidates ?? s.names) if (s.names.has(name) && !desired.has(name) && !s.clientHas.has(name)) notices.push(name);
    // After this plan the client has exactly `all` (within its subscription) when it wants all of it, or when it had
    // exactly the map it was last in sync with and subscribes to every name that changed since.
    let complete = desired === all;
    if (!complete && candidates && s.synced && s.clientHas.isBasedOn(s.synced)) {
      complete = true;
      for (const n of candidates)
        if (all.has(n) && !s.wildcard && !s.names.has(n)) {
          complete = false;
          break;
        }
    }
    return { desired, upserts, removals, notices, gone: [], ...(complete ? { complete: all } : {}) };
  }

  protected respond(state: TypeState, plan: Plan, removeNow: boolean, nonce: string): Responded | undefined {
    const s = state as DeltaTypeState;
    const removed = [...plan.notices, ...(removeNow ? plan.removals : [])].sort();
    const toMap = plan.complete && (removeNow || plan.removals.length === 0) ? plan.complete : undefined;
    // The shared map the client had exactly (if so): with the map it goes to, it decides the response.
    const from = toMap ? s.clientHas.pureBase(toMap) : undefined;
    if (toMap && plan.desired === toMap) {
      // The client will have exactly the shared map, all of it: share it and take its version.
      s.clientHas.rebase(toMap);
      s.hasVersion.assign(SetVersion.of(toMap));
    } else for (const r of plan.upserts) setHas(s, r.name, r);
    // A name still explicitly subscribed stays known as absent; otherwise the client forgets it entirely.
    for (const n of removed) setHas(s, n, s.names.has(n) ? ABSENT : undefined);
    const version = s.hasVersion.toString();
    // The same bytes for every stream of the scope that goes to the same shared map from the same place: every
    // resource of it (a first response), or what differs from the shared map the client had exactly.
    const whole = plan.complete !== undefined && plan.upserts.length === plan.complete.size;
    const shared = whole ? plan.complete : toMap && from ? toMap : undefined;
    const key = `${s.typeUrl}\0${version}\0${removed.join("\0")}\0${whole ? "" : from ? mapId(from) : ""}`;
    const sent = this.writeResponse(s, shared, key, nonce, (n) =>
      encodeDeltaResponse({
        system_version_info: version,
        type_url: s.typeUrl,
        nonce: n,
        resources: [...plan.upserts].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)),
        removed_resources: removed,
      }),
    );
    return { version, nonce: sent, resources: plan.upserts.length, removed: removed.length };
  }
}
