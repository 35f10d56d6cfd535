// The Consul catalog as a registry source: a blocking watch on the service list, one on each service's health,
// each answer converted and kept. Errors never remove anything: the last good catalog stays, marked stale.
//
// Instances vmpilot registered for auto-registered workloads (workload-records.ts: meta `vmpilot-auto-registered`)
// are not Consul mesh services: they are split off each answer and handed out as RemoteWorkloads
// (`remoteWorkloads()`, event `workloads`), which the auto-registration source turns back into WorkloadEntries.
// They ride on the same blocking queries, so they follow the same index, backoff and keep-on-error rules.
import { EventEmitter } from "node:events";
import { readFileSync, unwatchFile, watchFile } from "node:fs";
import type { RemoteWorkload } from "../auto-registration.js";
import type { ConfigProblem, Endpoint, Service, SourceState, SourceStatus, RegistrySource } from "../model.js";
import { ConsulHttp, consulStatusCode, type CatalogServices } from "./client.js";
import { resolveConsulOptions, type ConsulSourceOptions, type ResolvedConsulOptions } from "./config.js";
import { convertConsulService, isRoutableConsulService, type ConsulHealthEntry, type ConvertedService } from "./convert.js";
import { BlockingWatch, type QueryMeta, type QueryResult } from "./watch.js";
import { isAutoRegisteredInstance, remoteWorkloadOf } from "./workload-records.js";

/** Minimal logger (winston's Logger fits). */
export interface ConsulLogger {
  info(message: string): unknown;
  warn(message: string): unknown;
  debug(message: string): unknown;
}

const silent: ConsulLogger = { info: () => undefined, warn: () => undefined, debug: () => undefined };

const CATALOG_KEY = "catalog/services";
const healthKey = (name: string) => `health/service/${name}`;

interface ServiceEntry {
  watch: BlockingWatch<ConsulHealthEntry[]>;
  /** Undefined until the first answer; `null` once converted to nothing (not a destination). */
  converted?: ConvertedService | null;
  fingerprint?: string;
  /** Auto-registered workloads among the instances (other replicas' and our own). */
  workloads?: RemoteWorkload[];
  workloadProblems?: ConfigProblem[];
  workloadFingerprint?: string;
}

export class ConsulSource extends EventEmitter implements RegistrySource {
  readonly name = "consul";
  readonly options: ResolvedConsulOptions;
  private readonly log: ConsulLogger;
  private http: ConsulHttp | undefined;
  private catalogWatch: BlockingWatch<CatalogServices> | undefined;
  private readonly services = new Map<string, ServiceEntry>();
  /** Watch key -> current failure (removed on the next success). */
  private readonly failures = new Map<string, { message: string; status?: number }>();
  private readonly filteredByAcls = new Set<string>();
  private catalogIndex = 0;
  private catalogSeen = false;
  private synced = false;
  private lastError: string | undefined;
  private token: string | undefined;
  private tokenProblem: string | undefined;
  private running = false;
  private firstOutcome: (() => void) | undefined;
  /** Settled by the first outcome of the current start, or of the next one when none runs yet. */
  private outcome!: Promise<void>;
  private cached: SourceState | undefined;
  private metaFingerprint = "";
  private emitScheduled = false;
  private workloadsCached: RemoteWorkload[] | undefined;
  private workloadsEmitScheduled = false;

  constructor(options: ConsulSourceOptions, logger?: ConsulLogger) {
    super();
    this.options = resolveConsulOptions(options);
    this.log = logger ?? silent;
    this.newOutcome();
  }

  /**
   * Resolves after the first full sync or the first failure, whichever comes first; never rejects because Consul is
   * unreachable (the source keeps retrying and `status.synced` says where it is). Throws only on bad local settings
   * (unreadable TLS files).
   */
  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    // A start after stop() syncs afresh: the watches of the previous run are gone.
    this.services.clear();
    this.workloadsCached = undefined;
    this.failures.clear();
    this.filteredByAcls.clear();
    this.catalogIndex = 0;
    this.catalogSeen = false;
    this.synced = false;
    this.lastError = undefined;
    this.cached = undefined;
    if (!this.firstOutcome) this.newOutcome(); // the previous run's outcome is settled
    const outcome = this.outcome;
    this.http = new ConsulHttp(this.options, () => this.token);
    this.catalogWatch = new BlockingWatch<CatalogServices>(
      CATALOG_KEY,
      (index, signal) => this.http!.catalogServices(index, signal),
      { result: (r) => this.onCatalog(r), error: (e, n) => this.onError(CATALOG_KEY, e, n) },
      this.options,
    );
    const { tokenFile } = this.options;
    if (tokenFile) {
      // Stat polling survives atomic replaces and ..data symlink swaps, which inotify on the file itself does not.
      watchFile(tokenFile, { interval: this.options.tokenFilePollInterval, persistent: false }, () => this.reloadToken());
      this.readToken();
    }
    if (tokenFile && this.token === undefined) {
      // Without its token an ACL-enabled Consul would answer with filtered (empty) lists and we would drop every
      // service: wait for the file instead.
      this.resolveFirstOutcome();
    } else {
      this.catalogWatch.start();
    }
    this.refreshMeta();
    await outcome;
  }

  /**
   * What start() waits for (first full sync or first failure), for others that must not run ahead of it; asked
   * before start() (sources start side by side), it is the coming start's.
   */
  started(): Promise<void> {
    return this.outcome;
  }

  private newOutcome(): void {
    this.outcome = new Promise<void>((resolve) => (this.firstOutcome = resolve));
  }

  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    if (this.options.tokenFile) unwatchFile(this.options.tokenFile);
    const watches = [this.catalogWatch, ...[...this.services.values()].map((s) => s.watch)];
    await Promise.all(watches.map((w) => w?.stop()));
    this.http?.destroy();
    this.resolveFirstOutcome();
  }

  current(): SourceState {
    if (!this.cached) this.cached = this.build();
    return this.cached;
  }

  /**
   * Every auto-registered workload instance in the catalog as last read (all replicas', ours included). Kept
   * through failures like everything else; a service that a successful answer no longer lists takes its workloads
   * with it.
   */
  remoteWorkloads(): readonly RemoteWorkload[] {
    this.workloadsCached ??= [...this.services.keys()].sort().flatMap((n) => this.services.get(n)!.workloads ?? []);
    return this.workloadsCached;
  }

  private build(): SourceState {
    const services: Service[] = [];
    const endpoints = new Map<string, readonly Endpoint[]>();
    const problems: ConfigProblem[] = [...this.sourceProblems()];
    for (const name of [...this.services.keys()].sort()) {
      const c = this.services.get(name)!.converted;
      const wp = this.services.get(name)!.workloadProblems;
      if (wp) problems.push(...wp);
      if (!c) continue;
      services.push(c.service);
      endpoints.set(c.service.key, c.endpoints);
      problems.push(...c.problems);
    }
    return { objects: [], services, endpoints, problems, status: this.status() };
  }

  private status(): SourceStatus {
    const s: SourceStatus = {
      name: this.name,
      synced: this.synced,
      stale: this.synced && this.failures.size > 0,
      revision: String(this.catalogIndex),
    };
    if (this.lastError !== undefined) s.lastError = this.lastError;
    return s;
  }

  private sourceProblems(): ConfigProblem[] {
    const out: ConfigProblem[] = [];
    const at = { file: this.options.address, line: 0, column: 0 };
    if (this.tokenProblem) out.push({ severity: "error", message: this.tokenProblem, ...at });
    for (const [, f] of [...this.failures].sort(([a], [b]) => a.localeCompare(b))) {
      if (f.status === 401 || f.status === 403) {
        const where = this.options.tokenFile ? ` (token from ${this.options.tokenFile})` : " (no token configured)";
        out.push({ severity: "error", message: `Consul denied access: ${f.message}${where}`, ...at });
      }
    }
    for (const key of [...this.filteredByAcls].sort()) {
      out.push({ severity: "warning", message: `Consul filtered ${key} by ACLs: the token cannot read every service`, ...at });
    }
    return out;
  }

  private onCatalog(r: QueryResult<CatalogServices>): void {
    this.noteSuccess(CATALOG_KEY, r.meta);
    this.catalogIndex = r.meta.index;
    this.catalogSeen = true;
    const names = new Set(Object.keys(r.body ?? {}).filter((n) => isRoutableConsulService(n)));
    for (const [name, entry] of this.services) {
      if (names.has(name)) continue;
      // Gone from a successful answer: deregistered. (Errors never get here.)
      this.services.delete(name);
      this.failures.delete(healthKey(name));
      this.filteredByAcls.delete(healthKey(name));
      void entry.watch.stop();
      if (entry.converted) this.invalidate();
      if (entry.workloads?.length) this.workloadsChanged();
    }
    for (const name of names) if (!this.services.has(name)) this.watchService(name);
    this.refreshMeta();
  }

  private watchService(name: string): void {
    const key = healthKey(name);
    const watch: BlockingWatch<ConsulHealthEntry[]> = new BlockingWatch<ConsulHealthEntry[]>(
      key,
      (index, signal) => this.http!.healthService(name, index, signal),
      {
        result: (r) => {
          if (this.services.get(name)?.watch !== watch) return; // answer for a service removed meanwhile
          this.onHealth(name, r);
        },
        error: (e, n) => {
          if (this.services.get(name)?.watch !== watch) return;
          this.onError(key, e, n);
        },
      },
      this.options,
    );
    this.services.set(name, { watch });
    watch.start();
  }

  private onHealth(name: string, r: QueryResult<ConsulHealthEntry[]>): void {
    const entry = this.services.get(name)!;
    this.noteSuccess(healthKey(name), r.meta);
    const all = Array.isArray(r.body) ? r.body : [];
    const entries = all.filter((e) => !isAutoRegisteredInstance(e));
    this.noteWorkloads(name, entry, all.filter(isAutoRegisteredInstance));
    // A service whose instances are all vmpilot's registrations is not a Consul mesh service.
    const onlyWorkloads = all.length > 0 && entries.length === 0;
    const converted = onlyWorkloads
      ? null
      : convertConsulService(name, entries, {
        domain: this.options.domain,
        namespace: this.options.namespace,
        trustDomain: this.options.trustDomain,
        datacenter: this.options.datacenter ?? entries[0]?.Node.Datacenter ?? "",
        index: r.meta.index,
        problemFile: this.options.address,
      }) ?? null;
    const fingerprint = JSON.stringify(converted);
    if (fingerprint !== entry.fingerprint) {
      entry.converted = converted;
      entry.fingerprint = fingerprint;
      this.invalidate();
    }
    this.refreshMeta();
  }

  private noteWorkloads(name: string, entry: ServiceEntry, instances: ConsulHealthEntry[]): void {
    const workloads: RemoteWorkload[] = [];
    const problems: ConfigProblem[] = [];
    // An unchanged registration keeps its object, so consumers can skip it by identity.
    const previous = new Map((entry.workloads ?? []).map((w) => [JSON.stringify(w), w]));
    for (const e of instances) {
      const w = remoteWorkloadOf(e, this.options.workloadServicePrefix);
      if (typeof w === "string") {
        problems.push({ severity: "warning", message: `Consul service ${name}: ${w}`, file: this.options.address, line: 0, column: 0 });
      } else workloads.push(previous.get(JSON.stringify(w)) ?? w);
    }
    const fp = JSON.stringify([workloads, problems]);
    if (fp === entry.workloadFingerprint) return;
    const hadProblems = (entry.workloadProblems?.length ?? 0) > 0 || problems.length > 0;
    entry.workloads = workloads;
    entry.workloadProblems = problems.length > 0 ? problems : undefined;
    entry.workloadFingerprint = fp;
    if (hadProblems) this.invalidate();
    this.workloadsChanged();
  }

  /** Coalesces `workloads` events like `change`. */
  private workloadsChanged(): void {
    this.workloadsCached = undefined;
    if (this.workloadsEmitScheduled || !this.running) return;
    this.workloadsEmitScheduled = true;
    setImmediate(() => {
      this.workloadsEmitScheduled = false;
      if (this.running) this.emit("workloads");
    });
  }

  private noteSuccess(key: string, meta: QueryMeta): void {
    if (meta.filteredByAcls) this.filteredByAcls.add(key);
    else this.filteredByAcls.delete(key);
    if (!meta.knownLeader) {
      // A server without a leader still answers (we asked for stale reads), but nothing it says is being updated:
      // keep and apply it, and say the data may be stale, as during any other outage.
      const message = `${key}: Consul has no known leader (X-Consul-KnownLeader: false); answers may be stale`;
      if (this.failures.get(key)?.message !== message) this.log.warn(`consul ${message}`);
      this.failures.set(key, { message });
      this.lastError = message;
      return;
    }
    this.failures.delete(key);
    if (this.failures.size === 0) this.lastError = undefined;
  }


  private onError(key: string, err: unknown, consecutive: number): void {
    const status = consulStatusCode(err);
    // HTTP errors already name the request; connection errors name only the client call.
    const message = status !== undefined ? (err as Error).message : `${key}: ${err instanceof Error ? err.message : String(err)}`;
    const was = this.failures.get(key);
    this.failures.set(key, status === undefined ? { message } : { message, status });
    this.lastError = message;
    if (!was || was.message !== message) {
      // In an outage every service watch fails at once: one warning (the catalog's), the rest at debug level.
      const level = key === CATALOG_KEY || !this.failures.has(CATALOG_KEY) ? "warn" : "debug";
      this.log[level](`consul ${message} (attempt ${consecutive}; retrying with backoff)`);
    }
    if ((status === 401 || status === 403) && this.options.tokenFile) this.reloadToken();
    this.resolveFirstOutcome();
    this.refreshMeta();
  }

  private readToken(): boolean {
    const file = this.options.tokenFile!;
    let token: string | undefined;
    try {
      token = readFileSync(file, "utf8").trim();
      this.tokenProblem = token === "" ? `Consul ACL token file ${file} is empty` : undefined;
      if (token === "") token = undefined;
    } catch (e) {
      this.tokenProblem = `cannot read Consul ACL token file ${file}: ${(e as Error).message}`;
    }
    const changed = token !== this.token;
    this.token = token;
    return changed;
  }

  private reloadToken(): void {
    if (!this.running) return;
    const changed = this.readToken();
    if (changed && this.token !== undefined) {
      this.log.info(`consul: ACL token from ${this.options.tokenFile} changed; re-querying`);
      this.catalogWatch!.start(); // no-op when already running
      this.catalogWatch!.kick();
      for (const s of this.services.values()) s.watch.kick();
    }
    this.refreshMeta();
  }

  private resolveFirstOutcome(): void {
    const f = this.firstOutcome;
    this.firstOutcome = undefined;
    f?.();
  }

  /** Recomputes synced and emits `change` if anything a consumer sees (other than the bare index) changed. */
  private refreshMeta(): void {
    if (!this.synced && this.catalogSeen && [...this.services.values()].every((s) => s.converted !== undefined)) {
      this.synced = true;
      this.log.info(`consul: synced ${this.services.size} services at index ${this.catalogIndex}`);
      this.resolveFirstOutcome();
    }
    const { revision: _ignored, ...status } = this.status();
    const fp = JSON.stringify([status, this.sourceProblems()]);
    if (fp !== this.metaFingerprint) {
      this.metaFingerprint = fp;
      this.invalidate();
    } else if (this.cached) {
      // Only the index moved: keep the revision current without telling anyone.
      this.cached = { ...this.cached, status: this.status() };
    }
  }

  private invalidate(): void {
    this.cached = undefined;
    if (this.emitScheduled || !this.running) return;
    this.emitScheduled = true;
    // Coalesce everything one tick of answers changed into one event.
    setImmediate(() => {
      this.emitScheduled = false;
      if (this.running) this.emit("change");
    });
  }
}
