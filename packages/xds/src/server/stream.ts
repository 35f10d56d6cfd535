// What SotW and delta streams share: the proxy view from the first request, per-type ACK/NACK bookkeeping,
// the one-response-in-flight rule, make-before-break sequencing, and the status /debug/syncz shows.
import type { ProxyView } from "../proxy-view.js";
import type { SendBudget } from "./send-budget.js";
import { byPushOrder, changedSince, type EncodedResource, HEALTH_TYPE_URL, removalRank, type ResourceSource, shortType } from "./resources.js";

export type Protocol = "sotw" | "delta";

/** What a stream tells the server about its life (metrics, logs); all optional. */
export interface StreamObserver {
  /** A health report (Istio's HealthInformation request) from the proxy's agent. */
  health?(stream: XdsStream, report: HealthReport): void;
  sent?(stream: XdsStream, typeUrl: string, resources: number, removed: number): void;
  acked?(stream: XdsStream, typeUrl: string, latencyMs: number | undefined): void;
  nacked?(stream: XdsStream, typeUrl: string, message: string): void;
  /** The source failed to produce this type for this proxy: nothing is sent for it until the next push. */
  sourceFailed?(stream: XdsStream, typeUrl: string, error: unknown): void;
}

export interface HealthReport {
  healthy: boolean;
  /** error_detail's message when unhealthy. */
  message?: string;
  at: number;
}

export interface Sent {
  nonce: string;
  version: string;
  at: number;
  resources: number;
  removed: number;
}

export interface Nack {
  nonce: string;
  version: string;
  message: string;
  at: number;
}

/** Per-type state common to both protocols. */
export interface TypeState {
  typeUrl: string;
  wildcard: boolean;
  /** Explicitly subscribed names (besides a wildcard). */
  names: Set<string>;
  /** The response waiting for its ACK/NACK: at most one per type. */
  inflight?: Sent & { triggeredAt?: number };
  lastSent?: Sent;
  acked?: { nonce: string; version: string; at: number };
  lastNack?: Nack;
  /** Respond even if the content equals what was sent (a new subscription wants an answer). */
  force: boolean;
  /** Earliest push trigger whose change has not been sent yet (push latency is measured from it). */
  dirtySince?: number;
  /** Bumped by every request for this type and every response. */
  gen: number;
  /**
   * A source map whose content (restricted to the subscription) is exactly what this proxy was sent. While it
   * holds, a newer map that descends from it (resources.ts lineage) is diffed only over the names that changed,
   * so a push costs what changed, not what the proxy subscribes to. Dropped when the subscription changes.
   */
  synced?: ReadonlyMap<string, EncodedResource>;
  /**
   * The last plan, valid while neither the source map nor this state changed (`gen`): a stream that waited for the
   * send budget and is resumed, possibly several times in a storm, does not diff 3,000 resources again each time.
   */
  planned?: { all: ReadonlyMap<string, EncodedResource>; gen: number; plan: Plan };
}

/** The differences between what a proxy should have and what it was sent. */
export interface Plan {
  /** What the proxy should have: the source's resources restricted to the subscription. */
  desired: ReadonlyMap<string, EncodedResource>;
  /** Resources to (re)send: new, changed or forced. */
  upserts: EncodedResource[];
  /** Names the proxy has that no longer exist for it: deferred until nothing can still reference them. */
  removals: string[];
  /** Names to report absent that the proxy never had (delta: subscribed names that do not exist). */
  notices: string[];
  /**
   * SotW RDS/EDS: names the proxy was sent that no longer exist. Those responses cannot remove anything (the
   * client keeps what it has), so they are only forgotten, with the next response.
   */
  gone: string[];
  /**
   * Once this plan is applied in full, the proxy has exactly this source map (SotW: the stream may then keep a
   * reference to the shared map as its record of what was sent instead of a copy per proxy).
   */
  complete?: ReadonlyMap<string, EncodedResource>;
}

export interface TypeStatus {
  type: string;
  typeUrl: string;
  subscription: { wildcard: boolean; names: string[] };
  sent?: Sent;
  acked?: { nonce: string; version: string; at: number };
  /** A response is waiting for its ACK/NACK. */
  pending: boolean;
  lastNack?: Nack;
}

export interface StreamStatus {
  streamId: string;
  proxyId: string;
  kind: ProxyView["kind"];
  namespace: string;
  protocol: Protocol;
  peer: string;
  connectedAt: number;
  types: TypeStatus[];
  /** The latest health report on this stream, if its agent sends them. */
  health?: HealthReport;
}

export type Writer = (message: Buffer) => void;

/** What respond() sent: the response's version and nonce, and how many resources and removals it carried. */
export interface Responded {
  version: string;
  nonce: string;
  resources: number;
  removed: number;
}

/** Per set of subscribed names (never changed in place), whether it names every resource of a source map. */
const coverage = new WeakMap<ReadonlySet<string>, WeakMap<ReadonlyMap<string, EncodedResource>, boolean>>();

function covers(names: ReadonlySet<string>, all: ReadonlyMap<string, EncodedResource>, frozen: boolean): boolean {
  if (names.size < all.size) return false;
  let byMap = frozen ? coverage.get(names) : undefined;
  const known = byMap?.get(all);
  if (known !== undefined) return known;
  let out = true;
  for (const n of all.keys())
    if (!names.has(n)) {
      out = false;
      break;
    }
  if (frozen) {
    if (!byMap) coverage.set(names, (byMap = new WeakMap()));
    byMap.set(all, out);
  }
  return out;
}

/**
 * Responses that take a stream to a shared source map are the same bytes for every proxy of the scope but for the
 * nonce: all of the map (a sidecar's 3,000 clusters, its first 3,000 assignments), or what changed between the
 * shared map it had and this one (a 400 KB route config after a VirtualService change). They are encoded once per
 * (map, type, version, what the stream moves from, removals) with a nonce of their own, and that one buffer goes to
 * every such stream: a connect storm encodes a scope's 1.9 MB once, not once per proxy (and makes that much less
 * garbage). A nonce only has to be unique within a stream: one that would get the same shared response twice in a
 * row gets its own encoding.
 */
const sharedResponses = new WeakMap<ReadonlyMap<string, EncodedResource>, Map<string, { nonce: string; message: Buffer }>>();
/** A number per source map, for keys of responses that depend on which map a stream moves from. */
const mapIds = new WeakMap<ReadonlyMap<string, EncodedResource>, number>();
let mapCounter = 0;
export function mapId(map: ReadonlyMap<string, EncodedResource>): number {
  let id = mapIds.get(map);
  if (id === undefined) mapIds.set(map, (id = ++mapCounter));
  return id;
}

/** Responses kept per map (versions differ only for streams whose earlier state differed: few). */
const SHARED_RESPONSES_PER_MAP = 4;
let sharedNonces = 0;

function sharedResponse(
  map: ReadonlyMap<string, EncodedResource>,
  key: string,
  lastNonce: string | undefined,
  encode: (nonce: string) => Buffer,
): { nonce: string; message: Buffer } {
  let byKey = sharedResponses.get(map);
  if (!byKey) sharedResponses.set(map, (byKey = new Map()));
  let r = byKey.get(key);
  if (r && r.nonce === lastNonce) {
    const nonce = `${process.pid.toString(36)}-s${(++sharedNonces).toString(36)}`;
    return { nonce, message: encode(nonce) };
  }
  if (!r) {
    const nonce = `${process.pid.toString(36)}-s${(++sharedNonces).toString(36)}`;
    r = { nonce, message: encode(nonce) };
    if (byKey.size >= SHARED_RESPONSES_PER_MAP) byKey.delete(byKey.keys().next().value!);
    byKey.set(key, r);
  }
  return r;
}

let streamCounter = 0;

export abstract class XdsStream {
  readonly streamId: string;
  readonly connectedAt = Date.now();
  protected readonly types = new Map<string, TypeState>();
  private nonceCounter = 0;
  private closed = false;
  private health: HealthReport | undefined;
  /** Shared cap on response bytes not yet taken by the transport (see send-budget.ts); none in unit tests. */
  sendBudget: SendBudget | undefined;
  /** Waiting for the send budget: whether a push arrived meanwhile, and its earliest trigger. */
  private budgetWait: { triggeredAt: number | undefined } | undefined;

  constructor(
    readonly protocol: Protocol,
    readonly view: ProxyView,
    readonly peer: string,
    protected readonly source: ResourceSource,
    private readonly writer: Writer,
    protected readonly observer: StreamObserver = {},
  ) {
    this.streamId = `${process.pid.toString(36)}-${(++streamCounter).toString(36)}`;
  }

  /** Handles one decoded request. Throws for protocol violations (the stream ends with INVALID_ARGUMENT). */
  abstract handle(request: unknown): void;

  /** The source changed: send every type whose content differs from what this proxy was sent. */
  push(triggeredAt: number): void {
    this.evaluate(triggeredAt);
  }

  close(): void {
    this.closed = true;
    this.sendBudget?.forget(this);
  }

  /** The send budget has room again: send what waited for it. */
  resume(): void {
    const wait = this.budgetWait;
    this.budgetWait = undefined;
    this.evaluate(wait?.triggeredAt);
  }

  /** Takes a HealthInformation request (true) or says it is not one (false). Never answered. */
  protected handleHealth(typeUrl: string, error: { message: string } | undefined): boolean {
    if (typeUrl !== HEALTH_TYPE_URL) return false;
    this.health = error ? { healthy: false, message: error.message, at: Date.now() } : { healthy: true, at: Date.now() };
    this.observer.health?.(this, this.health);
    return true;
  }

  /**
   * How many name -> version entries this stream records for itself rather than sharing with the streams of its
   * scope (the rest is a reference to a shared source map): what a connected proxy costs beyond the shared config.
   */
  abstract ownEntries(): number;

  get isClosed(): boolean {
    return this.closed;
  }

  status(): StreamStatus {
    const types = [...this.types.values()]
      .sort((a, b) => byPushOrder(a.typeUrl, b.typeUrl))
      .map((t): TypeStatus => {
        const s: TypeStatus = {
          type: shortType(t.typeUrl),
          typeUrl: t.typeUrl,
          subscription: { wildcard: t.wildcard, names: [...t.names].sort() },
          pending: t.inflight !== undefined,
        };
        if (t.lastSent) s.sent = { ...t.lastSent };
        if (t.acked) s.acked = { ...t.acked };
        if (t.lastNack) s.lastNack = { ...t.lastNack };
        return s;
      });
    return {
      streamId: this.streamId,
      proxyId: this.view.id,
      kind: this.view.kind,
      namespace: this.view.namespace,
      protocol: this.protocol,
      peer: this.peer,
      connectedAt: this.connectedAt,
      types,
      ...(this.health ? { health: { ...this.health } } : {}),
    };
  }

  /**
   * The differences for one type between `desired` and what the proxy was sent (no side effects). With
   * `candidates`, only those names can differ (the rest is known to be in sync) and `desired` holds just them.
   */
  protected abstract plan(state: TypeState, desired: ReadonlyMap<string, EncodedResource>, all: ReadonlyMap<string, EncodedResource>, candidates?: ReadonlySet<string>): Plan;

  /** Nothing to send, and the proxy has what `all` holds for its subscription. */
  protected markSynced(state: TypeState, all: ReadonlyMap<string, EncodedResource>): void {
    state.synced = all;
  }

  /** Sends one response for `state` made of `upserts`, `removals` (allowed now) and `notices`. */
  protected abstract respond(state: TypeState, plan: Plan, removeNow: boolean, nonce: string): Responded | undefined;

  /**
   * Writes a response that carries a whole shared source map (see sharedResponse), or one encoded for this stream
   * alone when `map` is undefined. Returns the nonce the response went out with.
   */
  protected writeResponse(
    state: TypeState,
    map: ReadonlyMap<string, EncodedResource> | undefined,
    key: string,
    nonce: string,
    encode: (nonce: string) => Buffer,
  ): string {
    if (!map) {
      this.write(encode(nonce));
      return nonce;
    }
    const r = sharedResponse(map, key, state.lastSent?.nonce, encode);
    this.write(r.message);
    return r.nonce;
  }

  /** What exists for this proxy, restricted to the subscription. */
  protected desired(state: TypeState, all: ReadonlyMap<string, EncodedResource>): ReadonlyMap<string, EncodedResource> {
    // A subscription to every name of the map (Envoy's EDS subscription: every cluster it has) wants the map itself.
    if (state.wildcard || covers(state.names, all, this.namesFrozen(state))) return all;
    const out = new Map<string, EncodedResource>();
    for (const name of state.names) {
      const r = all.get(name);
      if (r) out.set(name, r);
    }
    return out;
  }

  /** `desired` restricted to `names`. */
  private desiredAmong(state: TypeState, all: ReadonlyMap<string, EncodedResource>, names: ReadonlySet<string>): ReadonlyMap<string, EncodedResource> {
    const out = new Map<string, EncodedResource>();
    for (const name of names) {
      if (!state.wildcard && !state.names.has(name)) continue;
      const r = all.get(name);
      if (r) out.set(name, r);
    }
    return out;
  }

  /** Whether `state.names` is never changed in place (then what it covers is remembered per set). */
  protected namesFrozen(_state: TypeState): boolean {
    return true;
  }

  protected available(typeUrl: string): ReadonlyMap<string, EncodedResource> {
    return this.source.resources(this.view, typeUrl);
  }

  protected nextNonce(): string {
    return `${this.streamId}-${(++this.nonceCounter).toString(36)}`;
  }

  /** Whether `nonce` answers the response in flight for `state`, and if so records the ACK or NACK. */
  protected settle(state: TypeState, nonce: string, error: { message: string } | undefined): "ack" | "nack" | "none" {
    const inflight = state.inflight;
    if (!inflight || nonce !== inflight.nonce) return "none";
    state.gen++;
    state.inflight = undefined;
    const now = Date.now();
    if (error) {
      // A NACK: the proxy keeps what it had. What we sent stays recorded as sent, so the same content is not
      // offered again until it changes (no NACK loop). gRPC reports a partial NACK with the new version, so
      // only error_detail decides.
      state.lastNack = { nonce, version: inflight.version, message: error.message, at: now };
      this.observer.nacked?.(this, state.typeUrl, error.message);
      return "nack";
    }
    state.acked = { nonce, version: inflight.version, at: now };
    this.observer.acked?.(this, state.typeUrl, inflight.triggeredAt !== undefined ? now - inflight.triggeredAt : undefined);
    return "ack";
  }

  /**
   * Sends what each type needs, in make-before-break order, honouring one response in flight per type.
   * A type's removals wait until no other type has unsent or unacknowledged changes and every type earlier
   * in removal order has finished removing: otherwise a proxy could drop a cluster a listener still uses.
   */
  protected evaluate(triggeredAt?: number): void {
    if (this.closed) return;
    // While the send budget is spent, do not even plan: this stream is resumed (in turn) when there is room.
    if (this.sendBudget && !this.sendBudget.admit(this)) {
      const t = this.budgetWait?.triggeredAt;
      this.budgetWait = { triggeredAt: t === undefined ? triggeredAt : triggeredAt === undefined ? t : Math.min(t, triggeredAt) };
      return;
    }
    const states = [...this.types.values()].sort((a, b) => byPushOrder(a.typeUrl, b.typeUrl));
    const plans = new Map<TypeState, Plan>();
    const sources = new Map<TypeState, ReadonlyMap<string, EncodedResource>>();
    for (const s of states) {
      let all: ReadonlyMap<string, EncodedResource>;
      try {
        all = this.available(s.typeUrl);
      } catch (err) {
        // A generator bug for one view must not end the stream: the proxy keeps what it has, the next push retries.
        this.observer.sourceFailed?.(this, s.typeUrl, err);
        continue;
      }
      // Pushes reach every stream; most have nothing to do. When the proxy has what an earlier map held and the
      // source knows which names changed since, only those are compared: O(change), not O(subscription).
      sources.set(s, all);
      if (s.planned && s.planned.all === all && s.planned.gen === s.gen) {
        plans.set(s, s.planned.plan);
        continue;
      }
      const changed = !s.force && s.synced ? changedSince(all, s.synced) : undefined;
      if (changed && changed.size === 0) {
        plans.set(s, { desired: all, upserts: [], removals: [], notices: [], gone: [] });
        s.synced = all;
        continue;
      }
      const p = changed ? this.plan(s, this.desiredAmong(s, all, changed), all, changed) : this.plan(s, this.desired(s, all), all);
      const idle = p.upserts.length === 0 && p.removals.length === 0 && p.notices.length === 0;
      if (idle && !s.force && p.gone.length === 0) this.markSynced(s, all);
      plans.set(s, p);
      s.planned = { all, gen: s.gen, plan: p };
    }
    // A type whose source failed counts as busy: removals elsewhere wait for it.
    const hasChanges = (s: TypeState): boolean => {
      const p = plans.get(s);
      return !p || s.force || p.upserts.length > 0 || p.notices.length > 0;
    };
    for (const s of states) {
      const p = plans.get(s);
      if (!p) continue;
      const wants = hasChanges(s) || p.removals.length > 0;
      if (!wants) continue;
      if (s.inflight) {
        // Queued: sent after the ACK/NACK of the response in flight.
        if (triggeredAt !== undefined) s.dirtySince = Math.min(s.dirtySince ?? triggeredAt, triggeredAt);
        continue;
      }
      const removeNow =
        p.removals.length > 0 &&
        states.every((o) => o === s || (!o.inflight && !hasChanges(o) && (removalRank(o.typeUrl) >= removalRank(s.typeUrl) || plans.get(o)?.removals.length === 0)));
      if (!hasChanges(s) && !removeNow) continue;
      if (this.sendBudget && !this.sendBudget.admit(this)) {
        // Waits like a queued response: sent when the transport has drained enough (resume()).
        if (triggeredAt !== undefined) s.dirtySince = Math.min(s.dirtySince ?? triggeredAt, triggeredAt);
        return;
      }
      const out = this.respond(s, p, removeNow, this.nextNonce());
      // Everything planned went out unless removals were deferred: the proxy now has what `all` holds.
      const has = p.removals.length === 0 || removeNow ? sources.get(s) : undefined;
      if (has) this.markSynced(s, has);
      else s.synced = undefined;
      s.force = false;
      s.gen++;
      s.planned = undefined;
      if (!out) continue;
      const at = Date.now();
      const trigger = s.dirtySince ?? triggeredAt;
      s.dirtySince = undefined;
      s.lastSent = { nonce: out.nonce, version: out.version, at, resources: out.resources, removed: out.removed };
      s.inflight = { ...s.lastSent, ...(trigger !== undefined ? { triggeredAt: trigger } : {}) };
      this.observer.sent?.(this, s.typeUrl, out.resources, out.removed);
      // This type is now in flight: the types after it see that when deciding on their removals.
      plans.set(s, { desired: p.desired, upserts: [], removals: removeNow ? [] : p.removals, notices: [], gone: [] });
    }
  }

  protected write(message: Buffer): void {
    if (!this.closed) this.writer(message);
  }
}
