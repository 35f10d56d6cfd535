// State-of-the-world ADS (StreamAggregatedResources): what Envoy with `GRPC` and every gRPC xDS client speak.
//
// Per type: the subscription restated in full by every request; the content of the last response; its nonce.
// LDS/CDS responses carry everything the proxy should have (absence = removal). RDS/EDS responses are
// incremental: they carry only the subscribed resources that are new or changed since the last response, and
// a resource left out is kept by the client, not removed (the xDS protocol: only LDS/CDS are "state of the
// world"; Envoy, grpc-js-xds since grpc/grpc-node#1925, and Istio's incremental EDS rely on it). So one
// endpoint change sends one ClusterLoadAssignment, not every cluster's. A request whose nonce is not the latest we sent for its type is stale and ignored (the
// client sends another once it has processed the latest response).
import { COMPLETE_TYPES, type EncodedResource, SetVersion } from "./resources.js";
import { encodeSotwResponse, type SotwRequest } from "./ads.js";
import { mapId, type Plan, type Responded, type TypeState, XdsStream } from "./stream.js";

interface SotwTypeState extends TypeState {
  /**
   * What the proxy has from us, by name (for RDS/EDS the sum of the incremental responses). When the proxy has
   * exactly a source map (a wildcard CDS/LDS, or EDS subscribed to every cluster), this IS that shared map, not a
   * copy: a thousand proxies of one scope hold one map. `sentOwned` says it is a private copy we may change.
   */
  sent: ReadonlyMap<string, EncodedResource>;
  sentOwned: boolean;
  /** The version of `sent`: a response's version_info. */
  sentVersion: SetVersion;
  /** resource_names of the last request: a restatement of the same list changes nothing. */
  lastNames?: readonly string[];
}

/**
 * The explicit names of a request's list as a set. The request decoder hands every stream that restates the same
 * bytes the same array (ads.ts), so streams of one scope share one set too. Never changed once made.
 */
const nameSets = new WeakMap<readonly string[], ReadonlySet<string>>();
function nameSetOf(resourceNames: readonly string[]): Set<string> {
  let set = nameSets.get(resourceNames);
  if (!set) nameSets.set(resourceNames, (set = new Set(resourceNames.filter((n) => n !== "*"))));
  return set as Set<string>;
}

export class SotwStream extends XdsStream {
  protected declare readonly types: Map<string, SotwTypeState>;

  handle(request: unknown): void {
    const req = request as SotwRequest;
    if (!req.type_url) throw new Error("DiscoveryRequest without type_url");
    if (this.handleHealth(req.type_url, req.error_detail)) return;
    let state = this.types.get(req.type_url);
    if (!state) {
      // First request for this type on this stream (a reconnecting client may carry a nonce and a version
      // from its previous stream: neither means anything here, and it always gets an answer).
      state = { typeUrl: req.type_url, wildcard: false, names: new Set(), sent: new Map(), sentOwned: true, sentVersion: new SetVersion(), force: true, gen: 0 };
      this.types.set(req.type_url, state);
      this.subscribe(state, req.resource_names, true);
      this.evaluate();
      return;
    }
    if (req.response_nonce !== state.lastSent?.nonce) return; // stale: superseded by a later response
    state.gen++;
    this.settle(state, req.response_nonce, req.error_detail);
    this.subscribe(state, req.resource_names, false);
    // Any ACK can unblock another type's queued response or deferred removals.
    this.evaluate();
  }

  /** Applies the restated subscription; a subscription that grows is answered even if nothing changed. */
  private subscribe(state: SotwTypeState, resourceNames: readonly string[], first: boolean): void {
    // Envoy restates its whole subscription with every ACK (thousands of EDS names): the usual case is the
    // same list again, checked without building anything.
    // (The ADS server's decoder hands back the very same array when the bytes are the same.)
    const last = state.lastNames;
    if (!first && last && (last === resourceNames || (last.length === resourceNames.length && resourceNames.every((n, i) => n === last[i])))) return;
    state.lastNames = resourceNames;
    const names = nameSetOf(resourceNames);
    // Legacy wildcard: an empty list for LDS/CDS (Envoy), or an explicit "*" for any type.
    const wildcard = resourceNames.includes("*") || (resourceNames.length === 0 && COMPLETE_TYPES.has(state.typeUrl) && (first || state.wildcard));
    let grew = wildcard && !state.wildcard;
    if (!grew)
      for (const n of names)
        if (!state.names.has(n)) {
          grew = true;
          break;
        }
    if (!first && grew) state.force = true;
    if (wildcard !== state.wildcard || names.size !== state.names.size || grew) state.synced = undefined;
    state.wildcard = wildcard;
    state.names = names;
    if (!wildcard) {
      const dropped = [...state.sent.keys()].filter((n) => !names.has(n));
      for (const n of dropped) {
        state.sentVersion.remove(n, state.sent.get(n)!);
        this.ownSent(state).delete(n);
      }
    }
  }

  ownEntries(): number {
    let n = 0;
    for (const s of this.types.values()) if (s.sentOwned) n += s.sent.size;
    return n;
  }

  /** `sent` as a private map we may change (copied from the shared one first if need be). */
  private ownSent(state: SotwTypeState): Map<string, EncodedResource> {
    if (!state.sentOwned) {
      state.sent = new Map(state.sent);
      state.sentOwned = true;
    }
    return state.sent as Map<string, EncodedResource>;
  }

  protected override markSynced(state: TypeState, all: ReadonlyMap<string, EncodedResource>): void {
    const s = state as SotwTypeState;
    // A shared `sent` stands for "exactly the synced map"; when the map moved on in ways this proxy does not
    // subscribe to, what it was sent is no longer that map: keep a private record.
    if (!s.sentOwned && s.sent !== all) this.ownSent(s);
    super.markSynced(state, all);
  }

  protected plan(state: TypeState, desired: ReadonlyMap<string, EncodedResource>, all: ReadonlyMap<string, EncodedResource>, candidates?: ReadonlySet<string>): Plan {
    const s = state as SotwTypeState;
    const upserts: EncodedResource[] = [];
    for (const r of desired.values()) if (s.sent.get(r.name)?.version !== r.version) upserts.push(r);
    // RDS/EDS responses cannot express a removal (the client keeps what it has until it unsubscribes), so
    // only LDS/CDS have removals to send; for RDS/EDS a vanished resource is just forgotten.
    const removals: string[] = [];
    const gone: string[] = [];
    const into = COMPLETE_TYPES.has(s.typeUrl) ? removals : gone;
    for (const n of candidates ?? s.sent.keys()) if (s.sent.has(n) && !desired.has(n)) into.push(n);
    // After this plan the proxy has exactly `all` if it takes everything in it: a wildcard, a subscription that
    // covers every name (full diff), or one that covered the previous map (a shared `sent`) and covers every
    // name that changed since.
    let complete: ReadonlyMap<string, EncodedResource> | undefined;
    if (s.wildcard) complete = all;
    else if (!candidates) complete = desired.size === all.size ? all : undefined;
    else if (!s.sentOwned && s.sent === s.synced && [...candidates].every((n) => !all.has(n) || s.names.has(n))) complete = all;
    return { desired, upserts, removals, notices: [], gone, ...(complete ? { complete } : {}) };
  }

  protected respond(state: TypeState, plan: Plan, removeNow: boolean, nonce: string): Responded | undefined {
    const s = state as SotwTypeState;
    // The shared map the proxy had (if it had exactly one): with the map it goes to, it decides the response.
    const from = s.sentOwned ? undefined : s.sent;
    // Removals deferred: LDS/CDS keep offering the removed resources (as last sent) so the response stays complete.
    const dropped = removeNow ? [...plan.gone, ...plan.removals] : plan.gone;
    if (plan.complete && (removeNow || plan.removals.length === 0)) {
      // The proxy now has exactly the shared map: its record is that map, and its version the map's.
      s.sent = plan.complete;
      s.sentOwned = false;
      s.sentVersion.assign(SetVersion.of(plan.complete));
    } else {
      for (const r of plan.upserts) {
        const old = s.sent.get(r.name);
        if (old) s.sentVersion.remove(r.name, old);
        s.sentVersion.add(r.name, r);
      }
      for (const n of dropped) s.sentVersion.remove(n, s.sent.get(n)!);
      const sent = this.ownSent(s);
      for (const r of plan.upserts) sent.set(r.name, r);
      for (const n of dropped) sent.delete(n);
    }
    const complete = COMPLETE_TYPES.has(s.typeUrl);
    const list = complete ? s.sent : plan.upserts;
    const count = complete ? s.sent.size : plan.upserts.length;
    // The same bytes for every stream of the scope that goes to the same shared map from the same place (see
    // sharedResponse): CDS/LDS carry the whole map; EDS/RDS either all of it, or what differs from the shared map
    // the proxy had (the proxy then had exactly that map and now has exactly this one).
    const to = s.sentOwned ? undefined : s.sent;
    let shared: ReadonlyMap<string, EncodedResource> | undefined;
    let from_ = "";
    if (complete) shared = to;
    else if (to && plan.complete === to) {
      if (plan.desired === to && count === to.size) shared = to;
      else if (from) [shared, from_] = [to, `${mapId(from)}`];
    }
    const version = s.sentVersion.toString();
    const sent = this.writeResponse(s, shared, `${s.typeUrl}\0${version}\0${from_}`, nonce, (n) =>
      encodeSotwResponse({ version_info: version, type_url: s.typeUrl, nonce: n, resources: [...list.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)) }),
    );
    return { version, nonce: sent, resources: count, removed: removeNow ? plan.removals.length : 0 };
  }
}
