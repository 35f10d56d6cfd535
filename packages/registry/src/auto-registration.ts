// WorkloadGroup auto-registration (Istio's, without Kubernetes): a proxy whose node metadata names a
// WorkloadGroup gets a WorkloadEntry `<group>-<ip>` in its namespace while it is connected, created from the
// group's template, and removed a grace period after its last stream is gone. The agent's probe verdicts
// (Istio HealthInformation requests) become the entry's `status.health`.
//
// The source holds only what it was told: the live streams per workload, the lingering workloads waiting out
// their grace period, and each workload's last health report. Entries are derived from those and the current
// WorkloadGroups (setGroups, fed from every registry snapshot), so a group edit re-derives its entries and a
// deleted group takes its entries with it. Nothing here does I/O; the xDS server glue calls in.
//
// Only auto-registered entries take health reports: a file WorkloadEntry belongs to the file source, and its
// health stays what the file says (HEALTHY).
//
// Several replicas (DESIGN.md "Scale-out"). With Consul configured, every replica registers the workloads
// connected to it in the Consul catalog (consul/workload-publisher.ts) and reads the other replicas'
// registrations back (ConsulSource -> setRemote). Chosen over session-bound KV keys because the catalog is where
// Consul operators and Consul-native clients look (UI, `consul catalog`, DNS, `?passing`), and because Consul's
// own agent then does the lifecycle the mesh needs: a TTL check that goes critical when a replica stops renewing
// (the endpoint turns UNHEALTHY, not removed) and DeregisterCriticalServiceAfter for the removal
// `autoRegistration.consul.deregisterAfter` later (default 10 m; not the grace period: a replica merely cut off
// from Consul must not have its live workloads removed by the others). The price is about one TTL renewal per workload per third of the TTL (see workload-records.ts for the
// two checks), all to the replica's local agent.
//
// What a registration carries are the facts of the workload (address, its own labels, service account,
// locality, proxy id, its health report), not the derived entry: every replica derives the entry from its own
// copy of the WorkloadGroup with the same code, so a workload's entry is the same object whichever replica its
// streams reach, and moving between replicas changes nothing a proxy sees. Per entry key this source merges the
// local workload (if any) with the remote registrations (Consul instances of other replicas):
// - the describing registration is the one whose replica holds a stream (connected) over one waiting out its
//   grace period (lingering) over one whose replica stopped renewing (gone); local before remote on a tie;
// - health: the describer's own report, else the local workload's own report, else the newest report of a
//   replica that is alive, else none (Istio's rule then applies: a probed group is UNHEALTHY until vouched for).
//   So when the Envoy stream and the agent's health stream reach different replicas, the health follows the
//   entry; and a workload that moves is not marked UNHEALTHY while its new replica waits for the first report;
// - only gone registrations left (its replica died or lost Consul): the entry stays, UNHEALTHY, until Consul
//   deregisters it: max(autoRegistration.consul.deregisterAfter, 1 m) after the TTL expired, plus up to
//   Consul's 30 s reaper interval (default deregisterAfter 10 m);
// - Consul unreachable: the remote set is not touched (errors never remove anything), local entries are served.
// - a registration that vanishes while its replica held a stream (the Consul agent lost its state) is kept as
//   gone for about one TTL (`vanishedHoldMs`), the time its replica needs to register it again (setRemote).
import { EventEmitter } from "node:events";
import net from "node:net";
import type { WorkloadEntrySpec } from "./api.js";
import { createLogger, type Logger } from "./logger.js";
import type { AnyConfig, ConfigObject, ConfigProblem, HealthStatus, Origin, RegistrySource, Severity, SourceState, SourceStatus } from "./model.js";
import { configKey } from "./model.js";
import { formatOrigin } from "./validate.js";

export type WorkloadEntryConfig = ConfigObject<"WorkloadEntry">;
export type WorkloadGroupConfig = ConfigObject<"WorkloadGroup">;

/** Istio's PILOT_WORKLOAD_ENTRY_GRACE_PERIOD default. */
export const DEFAULT_CLEANUP_GRACE_PERIOD_MS = 10_000;

/** Annotations Istio puts on auto-registered entries (operators' tooling looks for them). */
export const AUTO_REGISTRATION_GROUP_ANNOTATION = "istio.io/autoRegistrationGroup";
export const HEALTH_CHECK_ANNOTATION = "proxy.istio.io/health-checks-enabled";

/** One xDS stream of a proxy that asked to be auto-registered (AUTO_REGISTER_GROUP in its node metadata). */
export interface WorkloadConnection {
  /** Unique per stream: a workload has several (Envoy's, the agent's health stream, reconnects overlapping). */
  streamId: string;
  proxyId: string;
  namespace: string;
  group: string;
  /** INSTANCE_IPS (else the node id's IP); the first is the entry's address. */
  ips: readonly string[];
  labels: Readonly<Record<string, string>>;
  /** SERVICE_ACCOUNT; on the secure port already checked against the client certificate. */
  serviceAccount?: string;
  /** The bootstrap node's locality; overrides the template's (as in Istio). */
  locality?: { region?: string; zone?: string; sub_zone?: string };
}

export interface HealthReport {
  healthy: boolean;
  message?: string;
  at: number;
}

export interface AutoRegistrationOptions {
  /** How long an entry outlives its last stream; a reconnect within it keeps the entry. */
  cleanupGracePeriodMs?: number;
  /** This replica's name in Consul registrations. */
  replica?: string;
  /** This process's incarnation (random per start): registrations with our name and incarnation are our own. */
  incarnation?: string;
  /** How long a registration that vanished while its replica held a stream is kept, UNHEALTHY (see setRemote). */
  vanishedHoldMs?: number;
  logger?: Logger;
}

/** Default of `vanishedHoldMs`: the default Consul TTL, within which the owner notices and registers again. */
export const DEFAULT_VANISHED_HOLD_MS = 30_000;

/**
 * One registration of a workload by another replica, read back from Consul. The facts are what the replica's
 * stream said; `state` is the liveness check (connected: passing, lingering: warning, gone: critical).
 */
/** What a replica knows of one auto-registered workload, and publishes about it through Consul. */
export interface WorkloadFacts {
  namespace: string;
  group: string;
  /** Entry name (`<group>-<ip>`). */
  name: string;
  address: string;
  proxyId: string;
  /** The workload's own labels (node metadata), not the group's. */
  labels: Readonly<Record<string, string>>;
  serviceAccount?: string;
  locality?: { region?: string; zone?: string; sub_zone?: string };
}

export interface RemoteWorkload extends WorkloadFacts {
  /** Replica that registered it, and that process's incarnation. */
  replica: string;
  incarnation?: string;
  /** `NODE/SERVICE_ID` in Consul: one per replica and workload. */
  registration: string;
  state: "connected" | "lingering" | "gone";
  /** The workload's own health report as its replica heard it; undefined when it has none. */
  health?: { healthy: boolean; message?: string };
  /** Consul ModifyIndex of the health check: among reports, a higher one is newer. */
  healthIndex: number;
}

/** A local workload as the Consul publisher registers it (only those with an entry). */
export interface PublishedWorkload extends WorkloadFacts {
  key: string;
  /** A stream to this replica is open; false while the grace period runs. */
  connected: boolean;
  /** Since when it has no stream (connected false). */
  disconnectedAt?: number;
  /** Its own health report on this replica's streams. */
  health?: HealthReport;
  /** The group has a probe: no report means "not vouched for yet". */
  probed: boolean;
  /** The entry's ports (template). */
  ports: Readonly<Record<string, number>>;
}

interface Workload {
  /** `namespace/name` of the entry. */
  key: string;
  namespace: string;
  name: string;
  group: string;
  address: string;
  streams: Map<string, WorkloadConnection>;
  /** The most recently connected stream: its metadata describes the workload (and survives it during grace). */
  latest: WorkloadConnection;
  health?: HealthReport;
  removal?: NodeJS.Timeout;
  disconnectedAt?: number;
}

/** Everything known about one entry key: the local workload and other replicas' registrations. */
interface Slot {
  key: string;
  namespace: string;
  name: string;
  group: string;
  local?: Workload;
  remote: readonly RemoteWorkload[];
  /** Derived from the group and the merged facts; absent when the workload cannot be registered (see problem). */
  entry?: WorkloadEntryConfig;
  problem?: ConfigProblem;
  /** What `entry` was built from, so an unchanged slot keeps its object without re-deriving. */
  builtFrom?: { group: WorkloadGroupConfig; facts: WorkloadConnection; health: HealthReport | undefined; gone: boolean };
}

/** One candidate description of a slot's workload. */
interface Candidate {
  facts: WorkloadConnection;
  state: RemoteWorkload["state"];
  local: boolean;
  report?: HealthReport;
  index: number;
}

const STATE_RANK: Record<RemoteWorkload["state"], number> = { connected: 0, lingering: 1, gone: 2 };

const SOURCE_NAME = "auto-registration";

export class AutoRegistrationSource extends EventEmitter<{ change: []; local: [] }> implements RegistrySource {
  readonly name = SOURCE_NAME;
  readonly replica: string | undefined;
  readonly incarnation: string | undefined;
  private readonly log: Logger;
  private gracePeriodMs: number;
  /** Entry key -> slot (local workload and/or remote registrations). */
  private readonly slots = new Map<string, Slot>();
  /** Stream id -> its workload's key, or a problem when the stream names no usable address. */
  private readonly streams = new Map<string, { workload: string } | { problem: ConfigProblem }>();
  private configs: ReadonlyMap<string, AnyConfig> = new Map();
  /** Registries that started this source and have not stopped it (a SIGHUP reload attaches it to a successor first). */
  private starts = 0;
  private state: SourceState | undefined;
  private remoteCount = 0;
  private startGate: (() => Promise<void>) | undefined;
  private publishError: string | undefined;
  private vanishedHoldMs: number;
  /** The registrations of the last setRemote. */
  private lastRemote: readonly RemoteWorkload[] = [];
  /** Registration -> a vanished registration kept (as gone) until `until` (see setRemote). */
  private readonly vanished = new Map<string, { record: RemoteWorkload; until: number }>();
  private vanishedTimer: NodeJS.Timeout | undefined;

  constructor(opts: AutoRegistrationOptions = {}) {
    super();
    this.log = opts.logger ?? createLogger(SOURCE_NAME);
    this.gracePeriodMs = opts.cleanupGracePeriodMs ?? DEFAULT_CLEANUP_GRACE_PERIOD_MS;
    this.replica = opts.replica;
    this.incarnation = opts.incarnation;
    this.vanishedHoldMs = opts.vanishedHoldMs ?? DEFAULT_VANISHED_HOLD_MS;
  }

  /**
   * A registry starting this source waits for `gate` too: the Consul read-back, so the other replicas' workloads
   * are known when the registry first builds (their entries follow as soon as the groups are known), whatever
   * order the sources' start-up events happen to come in.
   */
  setStartGate(gate: (() => Promise<void>) | undefined): void {
    this.startGate = gate;
  }

  async start(): Promise<void> {
    this.starts++;
    await this.startGate?.();
  }

  /** Publishing this replica's workloads (to Consul) fails: shown as the source's lastError. Undefined clears it. */
  setPublishError(message: string | undefined): void {
    if (message === this.publishError) return;
    this.publishError = message;
    this.changed();
  }

  /** The last registry using it stops it: pending removals are dropped with everything else. */
  async stop(): Promise<void> {
    if (this.starts > 0) this.starts--;
    if (this.starts > 0) return;
    for (const s of this.slots.values()) if (s.local?.removal) clearTimeout(s.local.removal);
    this.slots.clear();
    this.streams.clear();
    this.remoteCount = 0;
    this.lastRemote = [];
    this.vanished.clear();
    if (this.vanishedTimer) clearTimeout(this.vanishedTimer);
    this.vanishedTimer = undefined;
    this.state = undefined;
  }

  /** How long a vanished registration is kept (the Consul TTL the replicas use); 0 drops them at once. */
  setVanishedHold(ms: number): void {
    this.vanishedHoldMs = ms;
  }

  setGracePeriod(ms: number): void {
    this.gracePeriodMs = ms;
  }

  get gracePeriod(): number {
    return this.gracePeriodMs;
  }

  current(): SourceState {
    this.state ??= this.buildState();
    return this.state;
  }

  /** The workload entry key (`namespace/name`) a stream counts for, if any. */
  workloadOf(streamId: string): string | undefined {
    const s = this.streams.get(streamId);
    return s && "workload" in s ? s.workload : undefined;
  }

  /** A stream of an auto-registering proxy opened. */
  connect(conn: WorkloadConnection): void {
    const address = conn.ips.find((ip) => net.isIP(ip) !== 0);
    if (!address) {
      const problem = this.problem(conn, `proxy ${conn.proxyId} asks to be auto-registered in WorkloadGroup ${conn.namespace}/${conn.group} but has no IP address (INSTANCE_IPS or the node id's IP field)`);
      this.log.warn(problem.message);
      this.streams.set(conn.streamId, { problem });
      this.changed();
      return;
    }
    const name = autoRegisteredName(conn.group, address);
    const key = `${conn.namespace}/${name}`;
    const slot = this.slotFor(key, conn.namespace, name, conn.group);
    let w = slot.local;
    if (!w) {
      w = { key, namespace: conn.namespace, name, group: conn.group, address, streams: new Map(), latest: conn };
      slot.local = w;
    } else if (w.removal) {
      clearTimeout(w.removal);
      w.removal = undefined;
      this.log.info(`workload ${key} reconnected within the grace period; keeping its entry`, { proxy: conn.proxyId });
    }
    w.disconnectedAt = undefined;
    w.streams.set(conn.streamId, conn);
    w.latest = conn;
    this.streams.set(conn.streamId, { workload: key });
    const had = slot.entry;
    this.derive(slot);
    if (slot.entry && !had) this.log.info(`auto-registered WorkloadEntry ${key} from WorkloadGroup ${conn.namespace}/${conn.group}`, { proxy: conn.proxyId, address });
    else if (slot.problem && !had) this.log.warn(slot.problem.message);
    this.changed(true);
  }

  /** A stream closed. The workload's last one starts the grace period (or removes an unregistered workload now). */
  disconnect(streamId: string): void {
    const s = this.streams.get(streamId);
    if (!s) return;
    this.streams.delete(streamId);
    if (!("workload" in s)) return this.changed();
    const slot = this.slots.get(s.workload);
    const w = slot?.local;
    if (!slot || !w) return;
    w.streams.delete(streamId);
    if (w.streams.size > 0) {
      // Describe the workload by a stream that is still there.
      if (w.latest.streamId === streamId) w.latest = [...w.streams.values()].at(-1)!;
      if (this.derive(slot)) this.changed(true);
      return;
    }
    const group = this.groupOf(slot);
    if (!group || refusesIdentity(group, w.latest)) {
      // Never registered: nothing to keep through a grace period.
      this.dropLocal(slot);
      return this.changed(true);
    }
    const timer = setTimeout(() => this.expire(slot, w), this.gracePeriodMs);
    timer.unref();
    w.removal = timer;
    w.disconnectedAt = Date.now();
    this.log.info(`workload ${w.key} has no stream left; its entry goes in ${this.gracePeriodMs} ms unless it reconnects`);
    // Lingering changes what Consul is told (the liveness check turns warning); the entry only when another
    // replica's connected registration now describes the workload.
    if (this.derive(slot)) this.changed();
    this.emit("local");
  }

  /**
   * A health report on one of the workload's streams: healthy -> HEALTHY, unhealthy -> UNHEALTHY. Returns false
   * when the stream belongs to no auto-registered workload (file WorkloadEntries take no health reports).
   */
  reportHealth(streamId: string, report: HealthReport): boolean {
    const key = this.workloadOf(streamId);
    const slot = key ? this.slots.get(key) : undefined;
    const w = slot?.local;
    if (!slot || !w) return false;
    const flipped = w.health?.healthy !== report.healthy;
    const news = flipped || w.health?.message !== report.message;
    w.health = report;
    if (flipped && slot.entry) this.log.info(`workload ${w.key} is ${report.healthy ? "healthy" : `unhealthy: ${report.message ?? "probe failing"}`}`);
    if (this.derive(slot)) this.changed();
    // Agents repeat their verdict: only a new one is worth a Consul update.
    if (news) this.emit("local");
    return true;
  }

  /**
   * Every replica's registrations as Consul last answered (the whole set each time). This process's own are
   * ignored (the local workloads are the truth, Consul's copy lags); a predecessor's with the same configured
   * replica name (another incarnation) counts like any other replica's and is left to expire.
   */
  setRemote(records: readonly RemoteWorkload[]): void {
    // A registration whose replica holds a stream does not go away on its own: its replica deregisters it
    // only after the grace period (lingering first), Consul only after its TTL expired (gone first). One that
    // vanishes while connected was lost by the Consul agent (restarted without its data, say), which its
    // replica repairs within about a TTL (its next TTL update is answered 404 and it registers again). Until
    // then it is kept as gone (UNHEALTHY: sent, not routed to) rather than every replica dropping the entry.
    const present = new Set(records.map((r) => r.registration));
    const until = Date.now() + this.vanishedHoldMs;
    const held: RemoteWorkload[] = [];
    for (const r of this.lastRemote) {
      if (this.vanishedHoldMs > 0 && r.state === "connected" && !this.isOwn(r) && !present.has(r.registration) && !this.vanished.has(r.registration)) {
        this.vanished.set(r.registration, { record: { ...r, state: "gone" }, until });
        held.push(r);
      }
    }
    if (held.length > 0) {
      const first = held[0]!;
      this.log.warn(
        `${held.length} registration(s) vanished from Consul while their replicas held the workloads (first: ${first.registration}, ${first.namespace}/${first.name}); kept UNHEALTHY for ${this.vanishedHoldMs} ms for their replicas to register them again`,
      );
    }
    for (const k of present) this.vanished.delete(k);
    this.lastRemote = records;
    this.applyRemote();
  }

  /** Consul is no longer configured: every other replica's registration is forgotten at once. */
  clearRemote(): void {
    this.vanished.clear();
    this.lastRemote = [];
    this.applyRemote();
  }

  private applyRemote(): void {
    const now = Date.now();
    let next = Infinity;
    for (const [k, v] of this.vanished) {
      if (v.until <= now) this.vanished.delete(k);
      else next = Math.min(next, v.until);
    }
    if (this.vanishedTimer) clearTimeout(this.vanishedTimer);
    this.vanishedTimer = undefined;
    if (next !== Infinity) {
      this.vanishedTimer = setTimeout(() => this.applyRemote(), next - now);
      this.vanishedTimer.unref();
    }
    const records = this.vanished.size === 0 ? this.lastRemote : [...this.lastRemote, ...[...this.vanished.values()].map((v) => v.record)];
    const byKey = new Map<string, RemoteWorkload[]>();
    let count = 0;
    for (const r of records) {
      const key = `${r.namespace}/${r.name}`;
      const list = byKey.get(key);
      if (list) list.push(r);
      else byKey.set(key, [r]);
      count++;
    }
    let changed = count !== this.remoteCount;
    this.remoteCount = count;
    for (const [key, list] of byKey) {
      list.sort((a, b) => compare(a.registration, b.registration));
      const first = list[0]!;
      const slot = this.slotFor(key, first.namespace, first.name, first.group);
      // The ConsulSource hands out the same record object while a registration does not change: most slots
      // are skipped by identity, without looking inside.
      if (list.length === slot.remote.length && list.every((r, i) => r === slot.remote[i])) continue;
      slot.remote = list;
      if (this.derive(slot)) changed = true;
    }
    for (const slot of [...this.slots.values()]) {
      if (byKey.has(slot.key) || slot.remote.length === 0) continue;
      slot.remote = [];
      if (!slot.local) {
        this.slots.delete(slot.key);
        changed = true;
      } else if (this.derive(slot)) changed = true;
    }
    if (changed) this.changed();
  }

  /** The local workloads that have an entry, as the Consul publisher registers them. */
  published(): PublishedWorkload[] {
    const out: PublishedWorkload[] = [];
    for (const slot of this.slots.values()) {
      const w = slot.local;
      const group = this.groupOf(slot);
      if (!w || !slot.entry || !group || refusesIdentity(group, w.latest)) continue;
      const conn = w.latest;
      const p: PublishedWorkload = {
        key: slot.key,
        namespace: w.namespace,
        group: w.group,
        name: w.name,
        address: w.address,
        proxyId: conn.proxyId,
        labels: conn.labels,
        connected: w.streams.size > 0,
        probed: group.spec.probe !== undefined,
        ports: group.spec.template.ports ?? {},
      };
      const sa = group.spec.template.serviceAccount ?? conn.serviceAccount;
      if (sa) p.serviceAccount = sa;
      if (conn.locality) p.locality = conn.locality;
      if (w.disconnectedAt !== undefined) p.disconnectedAt = w.disconnectedAt;
      if (w.health) p.health = w.health;
      out.push(p);
    }
    return out.sort((a, b) => compare(a.key, b.key));
  }

  /**
   * The registry's merged config (every snapshot): groups that appear, change or vanish re-derive their
   * entries. A workload waiting out its grace period whose group is gone is removed now.
   */
  setGroups(configs: ReadonlyMap<string, AnyConfig>): void {
    this.configs = configs;
    let changed = false;
    let local = false;
    for (const slot of [...this.slots.values()]) {
      const w = slot.local;
      if (w && w.streams.size === 0 && !this.groupOf(slot)) {
        this.dropLocal(slot);
        changed = local = true;
        if (!this.slots.has(slot.key)) continue;
      }
      const had = slot.entry;
      if (!this.derive(slot)) continue;
      changed = true;
      if (slot.local) local = true;
      if (!had && slot.entry) this.log.info(`auto-registered WorkloadEntry ${slot.key}: WorkloadGroup ${slot.namespace}/${slot.group} now exists`);
      if (had && !slot.entry) this.log.warn(`removed auto-registered WorkloadEntry ${slot.key}: ${slot.problem?.message ?? "its WorkloadGroup is gone"}`);
    }
    if (changed) this.changed(local);
  }

  private slotFor(key: string, namespace: string, name: string, group: string): Slot {
    let slot = this.slots.get(key);
    if (!slot) {
      slot = { key, namespace, name, group, remote: [] };
      this.slots.set(key, slot);
    }
    return slot;
  }

  private groupOf(slot: Pick<Slot, "namespace" | "group">): WorkloadGroupConfig | undefined {
    const g = this.configs.get(`WorkloadGroup/${slot.namespace}/${slot.group}`);
    return g?.kind === "WorkloadGroup" ? (g as WorkloadGroupConfig) : undefined;
  }

  private isOwn(r: RemoteWorkload): boolean {
    return this.replica !== undefined && r.replica === this.replica && r.incarnation === this.incarnation;
  }

  /** Who describes the slot's workload and with which health (see the header). */
  private merged(slot: Slot): { facts: WorkloadConnection; health: HealthReport | undefined; gone: boolean } | undefined {
    const candidates: Candidate[] = [];
    const w = slot.local;
    if (w) candidates.push({ facts: w.latest, state: w.streams.size > 0 ? "connected" : "lingering", local: true, report: w.health, index: Infinity });
    for (const r of slot.remote) {
      if (this.isOwn(r)) continue;
      const c: Candidate = { facts: remoteFacts(r), state: r.state, local: false, index: r.healthIndex };
      if (r.health) c.report = { ...r.health, at: 0 };
      candidates.push(c);
    }
    if (candidates.length === 0) return undefined;
    candidates.sort((a, b) => STATE_RANK[a.state] - STATE_RANK[b.state] || Number(b.local) - Number(a.local));
    const describer = candidates[0]!;
    if (describer.state === "gone") return { facts: describer.facts, health: undefined, gone: true };
    let health = describer.report ?? w?.health;
    if (!health) {
      const alive = candidates.filter((c) => c.state !== "gone" && c.report).sort((a, b) => b.index - a.index);
      health = alive[0]?.report;
    }
    return { facts: describer.facts, health, gone: false };
  }

  /** Re-derives a slot's entry (or problem); true if either changed. */
  private derive(slot: Slot): boolean {
    const group = this.groupOf(slot);
    const m = this.merged(slot);
    const b = slot.builtFrom;
    if (group && m && b && b.group === group && b.facts === m.facts && b.health === m.health && b.gone === m.gone && slot.entry) return false;
    const before = { entry: slot.entry, problem: slot.problem };
    slot.builtFrom = undefined;
    slot.entry = undefined;
    slot.problem = undefined;
    if (m) {
      const facts = m.facts;
      if (!group) {
        slot.problem = this.problem(
          facts,
          `proxy ${facts.proxyId} asks to be auto-registered in WorkloadGroup ${slot.namespace}/${slot.group}, which does not exist; it is served, but not registered`,
        );
      } else if (refusesIdentity(group, facts)) {
        // Registering it would put an endpoint whose certificate says `sa` behind services whose clients
        // verify the group's identity: refuse instead of advertising an endpoint every mTLS call would reject.
        slot.problem = this.problem(
          facts,
          `proxy ${facts.proxyId} runs as service account ${facts.serviceAccount}, but WorkloadGroup ${slot.namespace}/${slot.group} registers workloads of service account ${group.spec.template.serviceAccount}; not registered`,
          "error",
        );
      } else {
        slot.entry = this.buildEntry(slot, group, facts, m.health, m.gone);
        slot.builtFrom = { group, facts, health: m.health, gone: m.gone };
      }
    }
    if (before.entry && slot.entry && canonical(before.entry) === canonical(slot.entry)) slot.entry = before.entry;
    if (before.problem && slot.problem && canonical(before.problem) === canonical(slot.problem)) slot.problem = before.problem;
    return before.entry !== slot.entry || before.problem !== slot.problem;
  }

  private buildEntry(slot: Slot, group: WorkloadGroupConfig, conn: WorkloadConnection, report: HealthReport | undefined, gone: boolean): WorkloadEntryConfig {
    const { template, metadata: meta, probe } = group.spec;
    // Istio's precedence: node metadata > WorkloadGroup metadata > template.
    const labels = { ...(template.labels ?? {}), ...(meta?.labels ?? {}), ...conn.labels };
    const address = slot.local?.address ?? conn.ips[0]!;
    const spec: WorkloadEntrySpec = { ...template, address, labels };
    const sa = template.serviceAccount ?? conn.serviceAccount;
    if (sa) spec.serviceAccount = sa;
    const locality = localityOf(conn.locality);
    if (locality) spec.locality = locality;
    const annotations: Record<string, string> = { ...(meta?.annotations ?? {}), [AUTO_REGISTRATION_GROUP_ANNOTATION]: slot.group };
    if (probe) annotations[HEALTH_CHECK_ANNOTATION] = "true";
    const origin: Origin = { type: "auto-registered", group: slot.group, namespace: slot.namespace, proxyId: conn.proxyId };
    const entry: WorkloadEntryConfig = {
      kind: "WorkloadEntry",
      apiVersion: group.apiVersion,
      metadata: { name: slot.name, namespace: slot.namespace, labels: { ...labels }, annotations },
      spec,
      origin,
    };
    // Its replica stopped renewing: nobody vouches for it any more, and Consul removes it `deregisterAfter` later.
    const health = gone ? "UNHEALTHY" : healthOf(report, probe !== undefined);
    if (health) entry.status = { health };
    return entry;
  }

  private expire(slot: Slot, w: Workload): void {
    if (slot.local !== w || w.streams.size > 0) return;
    this.log.info(`removed auto-registered WorkloadEntry ${w.key}: no stream for ${this.gracePeriodMs} ms`);
    this.dropLocal(slot);
    this.changed(true);
  }

  /** Forgets the local workload; the slot lives on while other replicas register the workload. */
  private dropLocal(slot: Slot): void {
    if (slot.local?.removal) clearTimeout(slot.local.removal);
    slot.local = undefined;
    if (slot.remote.length === 0) this.slots.delete(slot.key);
    else this.derive(slot);
  }

  private problem(conn: Pick<WorkloadConnection, "group" | "namespace" | "proxyId">, message: string, severity: Severity = "warning"): ConfigProblem {
    const origin: Origin = { type: "auto-registered", group: conn.group, namespace: conn.namespace, proxyId: conn.proxyId };
    return { severity, message, file: formatOrigin(origin), line: 0, column: 0, kind: "WorkloadGroup", name: conn.group, namespace: conn.namespace };
  }

  private buildState(): SourceState {
    const objects: WorkloadEntryConfig[] = [];
    const problems: ConfigProblem[] = [];
    let local = 0;
    for (const slot of this.slots.values()) {
      if (slot.entry) objects.push(slot.entry);
      if (slot.problem) problems.push(slot.problem);
      if (slot.local && slot.entry) local++;
    }
    for (const s of this.streams.values()) if ("problem" in s) problems.push(s.problem);
    objects.sort((a, b) => compare(configKey(a), configKey(b)));
    const revision = this.replica === undefined ? `${objects.length} registered` : `${objects.length} registered (${local} through this replica, ${objects.length - local} through others)`;
    const status: SourceStatus = { name: SOURCE_NAME, synced: true, stale: false, revision };
    if (this.publishError !== undefined) status.lastError = this.publishError;
    return { objects, problems, status };
  }

  /** `local`: what the Consul publisher registers may have changed too. */
  private changed(local = false): void {
    this.state = undefined;
    this.emit("change");
    if (local) this.emit("local");
  }
}

/** Whether the group refuses the workload's identity (see derive). */
function refusesIdentity(group: WorkloadGroupConfig, facts: WorkloadConnection): boolean {
  const sa = facts.serviceAccount;
  const want = group.spec.template.serviceAccount;
  return want !== undefined && sa !== undefined && sa !== want;
}

/** Facts per remote record, so an unchanged record keeps its object (derive compares by identity first). */
const factsCache = new WeakMap<RemoteWorkload, WorkloadConnection>();

/** A remote registration as the connection facts its replica saw. */
function remoteFacts(r: RemoteWorkload): WorkloadConnection {
  const cached = factsCache.get(r);
  if (cached) return cached;
  const conn: WorkloadConnection = {
    streamId: `consul:${r.registration}`,
    proxyId: r.proxyId,
    namespace: r.namespace,
    group: r.group,
    ips: [r.address],
    labels: r.labels,
  };
  if (r.serviceAccount) conn.serviceAccount = r.serviceAccount;
  if (r.locality) conn.locality = r.locality;
  factsCache.set(r, conn);
  return conn;
}

/**
 * `<group>-<ip>` as a DNS-1123 subdomain, the way Istio names them: lowercase, IPv6 colons (and anything else
 * outside [a-z0-9.-]) become '-', so `reviews-10.0.0.7` and `reviews-fd00--7`.
 */
export function autoRegisteredName(group: string, ip: string): string {
  let name = `${group}-${ip}`.toLowerCase().replace(/[^a-z0-9.-]/g, "-");
  name = name.replace(/^[^a-z0-9]+/, "").replace(/[^a-z0-9]+$/, "");
  return name.slice(0, 253).replace(/[^a-z0-9]+$/, "");
}

/**
 * Istio's rule: an entry of a group with a probe is UNHEALTHY until the agent reports it healthy (an endpoint
 * nobody has vouched for gets no traffic). Without a probe, reports (if any) still apply; none leaves it healthy.
 */
function healthOf(report: HealthReport | undefined, probed: boolean): HealthStatus | undefined {
  if (report) return report.healthy ? "HEALTHY" : "UNHEALTHY";
  return probed ? "UNHEALTHY" : undefined;
}

function localityOf(l: WorkloadConnection["locality"]): string | undefined {
  if (!l?.region) return undefined;
  return [l.region, l.zone, l.sub_zone].filter((p) => p !== undefined && p !== "").join("/");
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function canonical(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => {
    if (v === null || typeof v !== "object" || Array.isArray(v)) return v;
    const sorted: Record<string, unknown> = {};
    for (const k of Object.keys(v).sort()) sorted[k] = (v as Record<string, unknown>)[k];
    return sorted;
  });
}
