// Keeps the Consul agent in step with this replica's auto-registered workloads (workload-records.ts says what one
// registration holds): registers a workload when it appears or its facts change, sets its two TTL checks when
// their status changes and renews each every third of its TTL (so one lost renewal does not expire it),
// deregisters it when the local source drops it (grace period over, group gone).
//
// It reconciles instead of replaying events: every pass compares what the source publishes with what it believes
// Consul holds. A TTL update answered 404, or older agents' 500 "does not have associated TTL" (the agent lost or
// reaped the service: a Consul restart without its data, or this replica was cut off from Consul longer than
// TTL + `deregisterAfter`) forgets the belief, and the next pass registers the workload again; lost again
// before a TTL update succeeded, it is registered again on the next renewal tick, not in a loop. Failures are retried on the next renewal tick; nothing is lost meanwhile, the
// local source keeps serving its entries. A write that gets no answer at all (refused, reset, timed out) ends
// the pass there, and stop() aborts the writes in flight: a Consul that accepts connections but never answers
// costs one request timeout per tick, and never holds a shutdown.
//
// stop() deregisters nothing, on purpose: a replica that shuts down (or is killed) leaves its registrations to
// expire. Proxies it drained reconnect elsewhere, and that replica's connected registration describes them at
// once; the others turn UNHEALTHY after the TTL and are removed by Consul `deregisterAfter` later, exactly as if
// the replica had died, which no code here could handle anyway.
import { readFileSync } from "node:fs";
import type { PublishedWorkload } from "../auto-registration.js";
import { ConsulHttp, ConsulHttpError, consulStatusCode, type AgentServiceRegistration } from "./client.js";
import { resolveConsulOptions, type ConsulSourceOptions } from "./config.js";
import type { ConsulLogger } from "./source.js";
import {
  HEALTH_TTL_FACTOR,
  healthCheckId,
  healthCheckOf,
  livenessCheckId,
  livenessOf,
  publishableNamespace,
  registrationFingerprint,
  registrationOf,
  type CheckState,
  type WorkloadRegistrationOptions,
} from "./workload-records.js";

export interface WorkloadPublisherOptions extends WorkloadRegistrationOptions {
  /** The Consul connection (address, token file, TLS, request timeout) the ConsulSource uses too. */
  consul: ConsulSourceOptions;
  /** Writes in flight at once. Default 8. */
  concurrency?: number;
  /** Called when the current failure (undefined: none) changes. */
  onError?: (message: string | undefined) => void;
  logger?: ConsulLogger;
}

/** What this replica believes the agent holds for one workload. */
interface Held {
  id: string;
  fingerprint: string;
  live: CheckState;
  health: CheckState;
  /** Renewal ticks since the health check was last set (its TTL is HEALTH_TTL_FACTOR times longer). */
  healthAge: number;
}

/** A check state no update can equal: the next pass sets the check. */
const UNKNOWN: CheckState = { status: "critical", output: "\u0000unknown" };

const silent: ConsulLogger = { info: () => undefined, warn: () => undefined, debug: () => undefined };

export class ConsulWorkloadPublisher {
  private readonly http: ConsulHttp;
  private readonly log: ConsulLogger;
  private readonly held = new Map<string, Held>();
  /** Workloads whose registration the agent lost, not confirmed by a TTL update since. */
  private readonly lostOnce = new Set<string>();
  /** ... and lost again: registered again on the next renewal tick only. */
  private readonly lostTwice = new Set<string>();
  private readonly tokenFile: string | undefined;
  private token: string | undefined;
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  /** Aborted by stop(): a Consul that accepts connections but never answers must not hold a shutdown. */
  private readonly abort = new AbortController();
  private current: Promise<void> | undefined;
  private again = false;
  private renewDue = false;
  private scheduled = false;
  private failure: string | undefined;
  /** Passes completed (tests and /debug views wait on it). */
  passes = 0;

  constructor(
    readonly options: WorkloadPublisherOptions,
    private readonly workloads: () => readonly PublishedWorkload[],
  ) {
    const resolved = resolveConsulOptions(options.consul);
    this.tokenFile = resolved.tokenFile;
    this.http = new ConsulHttp(resolved, () => this.token);
    this.log = options.logger ?? silent;
  }

  /** Registrations this replica holds in Consul (workload key -> service ID). */
  registrations(): Map<string, string> {
    return new Map([...this.held].map(([k, h]) => [k, h.id]));
  }

  /** The last write failure, cleared by a pass without one. */
  get lastError(): string | undefined {
    return this.failure;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    const period = Math.max(Math.floor(this.options.ttlMs / 3), 50);
    this.timer = setInterval(() => {
      this.renewDue = true;
      this.notify();
    }, period);
    this.timer.unref();
    this.notify();
  }

  /** The local workloads changed: reconcile soon (coalesced). */
  notify(): void {
    if (!this.running) return;
    if (this.current) {
      this.again = true;
      return;
    }
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      if (!this.running || this.current) return;
      this.current = this.loop().finally(() => (this.current = undefined));
    });
  }

  /** Resolves once every change notified so far has been attempted. */
  async settled(): Promise<void> {
    while (this.current || this.scheduled) {
      await (this.current ?? new Promise((r) => setImmediate(r)));
    }
  }

  /**
   * Stops renewing, at once: writes in flight are aborted and none is started after this call (the rest of
   * a pass is dropped). Deregisters nothing (see the header).
   */
  async stop(): Promise<void> {
    this.running = false;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.abort.abort();
    await this.current;
    this.http.destroy();
  }

  private async loop(): Promise<void> {
    do {
      this.again = false;
      // Consul not answering: what changed meanwhile waits for the next renewal tick, not a tight retry loop.
      if (!(await this.pass())) break;
    } while (this.again && this.running);
  }

  /** One reconciliation; false when Consul did not answer (or the pass could not run). */
  private async pass(): Promise<boolean> {
    if (this.tokenFile && !this.readToken()) return false;
    const renew = this.renewDue;
    this.renewDue = false;
    const o = this.options;
    const ops: (() => Promise<void>)[] = [];
    const errors: string[] = [];
    const desired = new Map<string, PublishedWorkload>();
    const refused: string[] = [];
    for (const p of this.workloads()) {
      // Its service name could be mistaken for another namespace's (workload-records.ts): served here only.
      if (publishableNamespace(p.namespace)) desired.set(p.key, p);
      else refused.push(`${p.key}: namespace "${p.namespace}" is not a DNS label without "--"`);
    }
    const signal = this.abort.signal;
    // A write that got no HTTP answer (refused, reset, timed out) ends the pass: the rest would only wait out
    // their own timeouts one after another; the next renewal tick tries again.
    let unreachable = false;
    const attempt = async (what: string, fn: () => Promise<void>, on404?: () => void): Promise<void> => {
      try {
        await fn();
      } catch (err) {
        if (signal.aborted) return;
        if (on404 && goneFromAgent(err)) return on404();
        if (!(err instanceof ConsulHttpError)) unreachable = true;
        errors.push(`${what}: ${err instanceof Error ? err.message : String(err)}`);
      }
    };

    for (const [key, p] of desired) {
      const reg = registrationOf(p, o);
      const fp = registrationFingerprint(reg);
      const h = this.held.get(key);
      if (!h || h.fingerprint !== fp) {
        // Lost again right after registering: wait for the renewal tick rather than loop (see `lostTwice`).
        if (!h && this.lostTwice.has(key) && !renew) continue;
        this.lostTwice.delete(key);
        ops.push(() => attempt(`register ${reg.ID}`, () => this.register(key, reg, fp, signal)));
        continue;
      }
      const live = livenessOf(p, o);
      const health = healthCheckOf(p);
      const lost = () => {
        // The agent no longer has it: register it again, at once the first time; when it is lost again before
        // a TTL update succeeded (an agent that keeps forgetting it, a load balancer spreading the writes over
        // several agents), on the next renewal tick, not in a tight loop.
        if (this.held.get(key) !== h) return;
        this.held.delete(key);
        if (this.lostOnce.has(key)) {
          this.lostTwice.add(key);
          this.log.warn(`consul: registration ${h.id} is gone from the agent again; registering it again on the next renewal tick`);
          return;
        }
        this.lostOnce.add(key);
        this.log.info(`consul: registration ${h.id} is gone from the agent; registering it again`);
        this.again = true;
      };
      const updated = () => this.lostOnce.delete(key);
      if (renew || !sameCheck(h.live, live)) {
        ops.push(() => attempt(`update ${livenessCheckId(h.id)}`, async () => {
          await this.http.updateTtlCheck(livenessCheckId(h.id), live.status, live.output, signal);
          h.live = live;
          updated();
        }, lost));
      }
      if (renew) h.healthAge++;
      if (h.healthAge >= HEALTH_TTL_FACTOR || !sameCheck(h.health, health)) {
        ops.push(() => attempt(`update ${healthCheckId(h.id)}`, async () => {
          await this.http.updateTtlCheck(healthCheckId(h.id), health.status, health.output, signal);
          h.health = health;
          h.healthAge = 0;
          updated();
        }, lost));
      }
    }
    for (const key of [...this.lostOnce, ...this.lostTwice]) {
      if (desired.has(key)) continue;
      this.lostOnce.delete(key);
      this.lostTwice.delete(key);
    }
    for (const [key, h] of this.held) {
      if (desired.has(key)) continue;
      ops.push(() =>
        attempt(
          `deregister ${h.id}`,
          async () => {
            await this.http.deregisterService(h.id, signal);
            if (this.held.get(key) === h) this.held.delete(key);
            this.log.info(`consul: deregistered auto-registered workload ${key} (${h.id})`);
          },
          () => {
            if (this.held.get(key) === h) this.held.delete(key);
          },
        ),
      );
    }
    const skipped = await runLimited(ops, this.options.concurrency ?? 8, () => this.running && !unreachable);
    this.passes++;
    if (!this.running) return false; // stopped: nothing to report
    if (errors.length > 0 || refused.length > 0) {
      const rest = skipped > 0 ? `; ${skipped} more write(s) left for the next renewal tick (Consul did not answer)` : "";
      const failed = errors.length > 0 ? `${errors.length} Consul write(s) failed, first: ${errors[0]}${rest}` : undefined;
      const notPublished = refused.length > 0 ? `${refused.length} workload(s) not registered in Consul (served by this replica only), first: ${refused[0]}` : undefined;
      const message = [failed, notPublished].filter((m) => m !== undefined).join("; ");
      if (this.failure === undefined) this.log.warn(`consul: ${message}; retrying every renewal period, entries keep being served`);
      this.setFailure(message);
    } else if (this.failure !== undefined) {
      this.log.info("consul: auto-registration writes succeed again");
      this.setFailure(undefined);
    }
    return !unreachable;
  }

  private setFailure(message: string | undefined): void {
    if (message === this.failure) return;
    this.failure = message;
    this.options.onError?.(message === undefined ? undefined : `registering auto-registered workloads in Consul: ${message}`);
  }

  private async register(key: string, reg: AgentServiceRegistration, fingerprint: string, signal: AbortSignal): Promise<void> {
    await this.http.registerService(reg, signal);
    const fresh = !this.held.has(key);
    // Consul's agent keeps the status and output of checks that already existed (it restores them on a
    // re-registration, whatever Status the body says), and we cannot tell whether they did (a predecessor with
    // the same replica name, a lost response): state them explicitly in a follow-up pass.
    this.held.set(key, { id: reg.ID, fingerprint, live: UNKNOWN, health: UNKNOWN, healthAge: 0 });
    this.again = true;
    if (fresh) this.log.info(`consul: registered auto-registered workload ${key} as ${reg.Name} (${reg.ID})`);
  }

  /** False (and no pass) while the token file cannot be read: an anonymous write would only be denied. */
  private readToken(): boolean {
    try {
      const t = readFileSync(this.tokenFile!, "utf8").trim();
      this.token = t === "" ? undefined : t;
      return t !== "";
    } catch (err) {
      const message = `cannot read Consul ACL token file ${this.tokenFile}: ${(err as Error).message}`;
      if (this.failure !== message) this.log.warn(`consul: ${message}; auto-registered workloads are not published`);
      this.setFailure(message);
      return false;
    }
  }
}

/**
 * The agent does not hold the check (any more): 404 "Unknown check ID" (Consul 1.11 and later), or the 500
 * "CheckID ... does not have associated TTL" older agents answer for an unknown check (and every version for a
 * check that exists without a TTL, which a registration of ours then needs to restore).
 */
function goneFromAgent(err: unknown): boolean {
  if (consulStatusCode(err) === 404) return true;
  return err instanceof ConsulHttpError && err.status === 500 && /does not have associated TTL/.test(err.body);
}

function sameCheck(a: CheckState, b: CheckState): boolean {
  return a.status === b.status && a.output === b.output;
}

/** Runs `ops`, `limit` at a time, while `proceed()` holds; returns how many were not started. */
async function runLimited(ops: (() => Promise<void>)[], limit: number, proceed: () => boolean): Promise<number> {
  let next = 0;
  const worker = async () => {
    while (next < ops.length && proceed()) await ops[next++]!();
  };
  await Promise.all(Array.from({ length: Math.min(limit, ops.length) }, worker));
  return ops.length - next;
}
