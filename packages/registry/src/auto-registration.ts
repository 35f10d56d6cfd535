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
// Not yet done (DESIGN.md "Scale-out"): with several replicas, the entries live only in the memory of the replica
// the workload's streams reached. Publishing them through Consul has open choices: per-entry agent services with
// TTL checks (visible to Consul-native clients, but one TTL update per entry per period, and the ConsulSource would
// also turn them into `NAME.service.consul` services) versus KV keys bound to one session per replica (one renewal
// per replica, deleted by Consul when the replica dies, read back by a KV watch). Either way, a workload whose Envoy
// and health streams reach different replicas needs the health to follow the entry across replicas.

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
  logger?: Logger;
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
  /** Derived from the group and `latest`/`health`; absent when the workload cannot be registered (see problem). */
  entry?: WorkloadEntryConfig;
  problem?: ConfigProblem;
  /** What `entry` was built from, so an unchanged workload keeps its object. */
  builtFrom?: { group: WorkloadGroupConfig; latest: WorkloadConnection; health: HealthReport | undefined };
}

const SOURCE_NAME = "auto-registration";

export class AutoRegistrationSource extends EventEmitter<{ change: [] }> implements RegistrySource {
  readonly name = SOURCE_NAME;
  private readonly log: Logger;
  private gracePeriodMs: number;
  private readonly workloads = new Map<string, Workload>();
  /** Stream id -> its workload's key, or a problem when the stream names no usable address. */
  private readonly streams = new Map<string, { workload: string } | { problem: ConfigProblem }>();
  private configs: ReadonlyMap<string, AnyConfig> = new Map();
  /** Registries that started this source and have not stopped it (a SIGHUP reload attaches it to a successor first). */
  private starts = 0;
  private state: SourceState | undefined;

  constructor(opts: AutoRegistrationOptions = {}) {
    super();
    this.log = opts.logger ?? createLogger(SOURCE_NAME);
    this.gracePeriodMs = opts.cleanupGracePeriodMs ?? DEFAULT_CLEANUP_GRACE_PERIOD_MS;
  }

  async start(): Promise<void> {
    this.starts++;
  }

  /** The last registry using it stops it: pending removals are dropped with everything else. */
  async stop(): Promise<void> {
    if (this.starts > 0) this.starts--;
    if (this.starts > 0) return;
    for (const w of this.workloads.values()) if (w.removal) clearTimeout(w.removal);
    this.workloads.clear();
    this.streams.clear();
    this.state = undefined;
  }

  setGracePeriod(ms: number): void {
    this.gracePeriodMs = ms;
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
    let w = this.workloads.get(key);
    if (!w) {
      w = { key, namespace: conn.namespace, name, group: conn.group, address, streams: new Map(), latest: conn };
      this.workloads.set(key, w);
    } else if (w.removal) {
      clearTimeout(w.removal);
      w.removal = undefined;
      this.log.info(`workload ${key} reconnected within the grace period; keeping its entry`, { proxy: conn.proxyId });
    }
    w.streams.set(conn.streamId, conn);
    w.latest = conn;
    this.streams.set(conn.streamId, { workload: key });
    const had = w.entry;
    this.derive(w);
    if (w.entry && !had) this.log.info(`auto-registered WorkloadEntry ${key} from WorkloadGroup ${conn.namespace}/${conn.group}`, { proxy: conn.proxyId, address });
    else if (w.problem && !had) this.log.warn(w.problem.message);
    this.changed();
  }

  /** A stream closed. The workload's last one starts the grace period (or removes an unregistered workload now). */
  disconnect(streamId: string): void {
    const s = this.streams.get(streamId);
    if (!s) return;
    this.streams.delete(streamId);
    if (!("workload" in s)) return this.changed();
    const w = this.workloads.get(s.workload);
    if (!w) return;
    w.streams.delete(streamId);
    if (w.streams.size > 0) {
      // Describe the workload by a stream that is still there.
      if (w.latest.streamId === streamId) w.latest = [...w.streams.values()].at(-1)!;
      if (this.derive(w)) this.changed();
      return;
    }
    if (!w.entry) {
      this.workloads.delete(w.key);
      return this.changed();
    }
    const timer = setTimeout(() => this.expire(w), this.gracePeriodMs);
    timer.unref();
    w.removal = timer;
    this.log.info(`workload ${w.key} has no stream left; its entry goes in ${this.gracePeriodMs} ms unless it reconnects`);
  }

  /**
   * A health report on one of the workload's streams: healthy -> HEALTHY, unhealthy -> UNHEALTHY. Returns false
   * when the stream belongs to no auto-registered workload (file WorkloadEntries take no health reports).
   */
  reportHealth(streamId: string, report: HealthReport): boolean {
    const key = this.workloadOf(streamId);
    const w = key ? this.workloads.get(key) : undefined;
    if (!w) return false;
    const flipped = w.health?.healthy !== report.healthy;
    w.health = report;
    if (flipped && w.entry) this.log.info(`workload ${w.key} is ${report.healthy ? "healthy" : `unhealthy: ${report.message ?? "probe failing"}`}`);
    if (this.derive(w)) this.changed();
    return true;
  }

  /**
   * The registry's merged config (every snapshot): groups that appear, change or vanish re-derive their
   * entries. A workload waiting out its grace period whose group is gone is removed now.
   */
  setGroups(configs: ReadonlyMap<string, AnyConfig>): void {
    this.configs = configs;
    let changed = false;
    for (const w of [...this.workloads.values()]) {
      if (w.streams.size === 0 && !this.groupOf(w)) {
        this.remove(w);
        changed = true;
        continue;
      }
      const had = w.entry;
      if (!this.derive(w)) continue;
      changed = true;
      if (!had && w.entry) this.log.info(`auto-registered WorkloadEntry ${w.key}: WorkloadGroup ${w.namespace}/${w.group} now exists`);
      if (had && !w.entry) this.log.warn(`removed auto-registered WorkloadEntry ${w.key}: ${w.problem?.message ?? "its WorkloadGroup is gone"}`);
    }
    if (changed) this.changed();
  }

  private groupOf(w: Workload): WorkloadGroupConfig | undefined {
    const g = this.configs.get(`WorkloadGroup/${w.namespace}/${w.group}`);
    return g?.kind === "WorkloadGroup" ? (g as WorkloadGroupConfig) : undefined;
  }

  /** Re-derives a workload's entry (or problem); true if either changed. */
  private derive(w: Workload): boolean {
    const group = this.groupOf(w);
    const b = w.builtFrom;
    if (group && b && b.group === group && b.latest === w.latest && b.health === w.health && w.entry) return false;
    const before = { entry: w.entry, problem: w.problem };
    w.builtFrom = undefined;
    w.entry = undefined;
    w.problem = undefined;
    if (!group) {
      w.problem = this.problem(
        w.latest,
        `proxy ${w.latest.proxyId} asks to be auto-registered in WorkloadGroup ${w.namespace}/${w.group}, which does not exist; it is served, but not registered`,
      );
    } else {
      const template = group.spec.template;
      const sa = w.latest.serviceAccount;
      if (template.serviceAccount && sa && sa !== template.serviceAccount) {
        // Registering it would put an endpoint whose certificate says `sa` behind services whose clients
        // verify the group's identity: refuse instead of advertising an endpoint every mTLS call would reject.
        w.problem = this.problem(
          w.latest,
          `proxy ${w.latest.proxyId} runs as service account ${sa}, but WorkloadGroup ${w.namespace}/${w.group} registers workloads of service account ${template.serviceAccount}; not registered`,
          "error",
        );
      } else {
        w.entry = this.buildEntry(w, group);
        w.builtFrom = { group, latest: w.latest, health: w.health };
      }
    }
    if (before.entry && w.entry && canonical(before.entry) === canonical(w.entry)) w.entry = before.entry;
    if (before.problem && w.problem && canonical(before.problem) === canonical(w.problem)) w.problem = before.problem;
    return before.entry !== w.entry || before.problem !== w.problem;
  }

  private buildEntry(w: Workload, group: WorkloadGroupConfig): WorkloadEntryConfig {
    const conn = w.latest;
    const { template, metadata: meta, probe } = group.spec;
    // Istio's precedence: node metadata > WorkloadGroup metadata > template.
    const labels = { ...(template.labels ?? {}), ...(meta?.labels ?? {}), ...conn.labels };
    const spec: WorkloadEntrySpec = { ...template, address: w.address, labels };
    const sa = template.serviceAccount ?? conn.serviceAccount;
    if (sa) spec.serviceAccount = sa;
    const locality = localityOf(conn.locality);
    if (locality) spec.locality = locality;
    const annotations: Record<string, string> = { ...(meta?.annotations ?? {}), [AUTO_REGISTRATION_GROUP_ANNOTATION]: w.group };
    if (probe) annotations[HEALTH_CHECK_ANNOTATION] = "true";
    const origin: Origin = { type: "auto-registered", group: w.group, namespace: w.namespace, proxyId: conn.proxyId };
    const entry: WorkloadEntryConfig = {
      kind: "WorkloadEntry",
      apiVersion: group.apiVersion,
      metadata: { name: w.name, namespace: w.namespace, labels: { ...labels }, annotations },
      spec,
      origin,
    };
    const health = healthOf(w.health, probe !== undefined);
    if (health) entry.status = { health };
    return entry;
  }

  private expire(w: Workload): void {
    if (this.workloads.get(w.key) !== w || w.streams.size > 0) return;
    this.log.info(`removed auto-registered WorkloadEntry ${w.key}: no stream for ${this.gracePeriodMs} ms`);
    this.remove(w);
    this.changed();
  }

  private remove(w: Workload): void {
    if (w.removal) clearTimeout(w.removal);
    this.workloads.delete(w.key);
  }

  private problem(conn: WorkloadConnection, message: string, severity: Severity = "warning"): ConfigProblem {
    const origin: Origin = { type: "auto-registered", group: conn.group, namespace: conn.namespace, proxyId: conn.proxyId };
    return { severity, message, file: formatOrigin(origin), line: 0, column: 0, kind: "WorkloadGroup", name: conn.group, namespace: conn.namespace };
  }

  private buildState(): SourceState {
    const objects: WorkloadEntryConfig[] = [];
    const problems: ConfigProblem[] = [];
    for (const w of this.workloads.values()) {
      if (w.entry) objects.push(w.entry);
      if (w.problem) problems.push(w.problem);
    }
    for (const s of this.streams.values()) if ("problem" in s) problems.push(s.problem);
    objects.sort((a, b) => compare(configKey(a), configKey(b)));
    const status: SourceStatus = { name: SOURCE_NAME, synced: true, stale: false, revision: `${objects.length} registered` };
    return { objects, problems, status };
  }

  private changed(): void {
    this.state = undefined;
    this.emit("change");
  }
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
