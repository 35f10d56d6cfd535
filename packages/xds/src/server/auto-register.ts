// Glue between the ADS server and the auto-registration source: a stream whose node names a WorkloadGroup
// (AUTO_REGISTER_GROUP) registers its workload while it is open, its HealthInformation requests set the
// workload's health, and every registry snapshot hands the source the current WorkloadGroups.
//
// Streams are admitted (and, on the secure port, their certificate checked against NAMESPACE and
// SERVICE_ACCOUNT) before `connected` runs, so what the view claims is what the certificate proves there.
//
// With Consul configured (DESIGN.md "Scale-out"), this is also where the two Consul halves meet the source:
// the ConsulWorkloadPublisher registers this replica's workloads (agent services with TTL checks, renewed
// here, deregistered by Consul `deregisterAfter` after nobody renews them), and the ConsulSource's
// read-back of every replica's registrations feeds `setRemote`, so every replica serves every workload.
// The read-back is applied only once that ConsulSource has synced: a fresh one (startup, a SIGHUP that
// replaced the sources) has seen only part of the catalog, and handing that on would drop the other entries.
import os from "node:os";
import { randomBytes } from "node:crypto";
import { AutoRegistrationSource, DEFAULT_CLEANUP_GRACE_PERIOD_MS, type WorkloadConnection } from "@vmpilot/registry/auto-registration";
import {
  ConsulWorkloadPublisher,
  DEFAULT_WORKLOAD_SERVICE_PREFIX,
  sanitizeReplicaName,
  type ConsulSource,
  type ConsulSourceOptions,
  type WorkloadPublisherOptions,
} from "@vmpilot/registry/consul/index";
import type { RegistrySnapshot } from "@vmpilot/registry";
import { createLogger, type Logger } from "@vmpilot/registry/logger";
import type { HealthReport, XdsStream } from "./stream.js";

export interface AutoRegistrarOptions {
  cleanupGracePeriodMs?: number;
  /** This replica's name in Consul (default: host name plus a random suffix, new on every start). */
  replica?: string;
  log?: Logger;
}

/** How workloads are published to Consul (server config `autoRegistration.consul`). */
export interface ConsulPublishing {
  /** The Consul connection (the server's `consul:` section). */
  consul: ConsulSourceOptions;
  /** Default true: register in Consul whenever Consul is configured. */
  register?: boolean;
  /** TTL of the registrations' checks; renewed every third of it. Default 30 s. */
  ttlMs?: number;
  /**
   * DeregisterCriticalServiceAfter of the liveness check: when Consul removes the registrations of a replica
   * that stopped renewing (died, or cut off from Consul). Default 10 m; Consul floors it at 1 m.
   */
  deregisterAfterMs?: number;
  /**
   * Consul service name = prefix + namespace + `--` + group name. Default `vmpilot-`. The ConsulSource must read
   * back with the same prefix (its `workloadServicePrefix`); the ACL policy on it is the trust boundary.
   */
  servicePrefix?: string;
}

/** A change of Consul settings, built by AutoRegistrar.prepare() and applied by commit(). */
export interface ConsulPlan {
  readonly source: ConsulSource | undefined;
  readonly gracePeriodMs: number;
  /** The registrations' TTL (every replica's, as they share the config). */
  readonly ttlMs: number;
  /** The publisher settings (undefined: no publishing); equal to the running one's: it stays. */
  readonly key: string | undefined;
  /** Built for new settings, not started yet. */
  readonly publisher: ConsulWorkloadPublisher | undefined;
}

export const DEFAULT_CONSUL_TTL_MS = 30_000;
/**
 * Default `autoRegistration.consul.deregisterAfter`. Long on purpose: a replica cut off from Consul looks dead
 * to the others, and its workloads are live; they stay UNHEALTHY (harmless) this long before they are removed.
 */
export const DEFAULT_CONSUL_DEREGISTER_AFTER_MS = 10 * 60_000;
/** Consul floors DeregisterCriticalServiceAfter at this (check_deregister_interval_min). */
const CONSUL_DEREGISTER_MIN_MS = 60_000;

export class AutoRegistrar {
  readonly source: AutoRegistrationSource;
  readonly replica: string;
  /** Random per start, so a successor with the same configured replica name tells its predecessor's registrations apart. */
  readonly incarnation = randomBytes(4).toString("hex");
  private readonly log: Logger;
  private consulSource: ConsulSource | undefined;
  private readonly onConsul = (): void => this.readBack();
  private publisher: ConsulWorkloadPublisher | undefined;
  private publisherKey: string | undefined;
  private readonly onLocal = (): void => this.publisher?.notify();

  constructor(opts: AutoRegistrarOptions = {}) {
    this.log = opts.log ?? createLogger("auto-registration");
    this.replica = sanitizeReplicaName(opts.replica ?? `${os.hostname()}-${randomBytes(3).toString("hex")}`);
    this.source = new AutoRegistrationSource({ cleanupGracePeriodMs: opts.cleanupGracePeriodMs ?? DEFAULT_CLEANUP_GRACE_PERIOD_MS, logger: this.log, replica: this.replica, incarnation: this.incarnation });
    this.source.on("local", this.onLocal);
  }

  /** The publisher writing this replica's workloads to Consul, if any. */
  get consulPublisher(): ConsulWorkloadPublisher | undefined {
    return this.publisher;
  }

  /**
   * Reads other replicas' workloads from `source` and publishes ours as `publishing` says; undefined for
   * either turns that half off. At startup; a reload uses prepare() and commit() so it can fail cleanly.
   */
  useConsul(source: ConsulSource | undefined, publishing: ConsulPublishing | undefined): void {
    this.commit(this.prepare(source, publishing));
  }

  /**
   * Builds what a change of Consul settings needs, touching nothing that runs: the publisher for new
   * settings is constructed here (reading the TLS files, which can throw), not started. Hand the result to
   * commit(), or to discard() when the rest of the reload failed.
   */
  prepare(source: ConsulSource | undefined, publishing: ConsulPublishing | undefined, gracePeriodMs = this.source.gracePeriod): ConsulPlan {
    const options = this.publisherOptions(publishing, gracePeriodMs);
    const key = options ? JSON.stringify(options) : undefined;
    let publisher: ConsulWorkloadPublisher | undefined;
    if (options && key !== this.publisherKey) {
      const p: ConsulWorkloadPublisher = new ConsulWorkloadPublisher(
        { ...options, logger: this.log, onError: (m) => this.publisher === p && this.source.setPublishError(m) },
        () => this.source.published(),
      );
      publisher = p;
    }
    return { source, gracePeriodMs, ttlMs: publishing?.ttlMs ?? DEFAULT_CONSUL_TTL_MS, key, publisher };
  }

  /** Applies a prepared change in one step (nothing here throws): grace period, read-back source, publisher. */
  commit(plan: ConsulPlan): void {
    this.source.setGracePeriod(plan.gracePeriodMs);
    // A registration that vanishes from Consul while held is kept for about one TTL (its owner's repair time).
    this.source.setVanishedHold(plan.ttlMs);
    const source = plan.source;
    if (this.consulSource !== source) {
      this.consulSource?.off("workloads", this.onConsul);
      this.consulSource?.off("change", this.onConsul);
      this.consulSource = source;
      source?.on("workloads", this.onConsul);
      source?.on("change", this.onConsul);
      // No Consul any more: other replicas' workloads cannot be known.
      if (!source) this.source.clearRemote();
      // A registry starting with this source holds its first snapshot until the read-back is in.
      this.source.setStartGate(
        source
          ? async () => {
              await source.started();
              if (this.consulSource === source) this.readBack();
            }
          : undefined,
      );
      // A reload commits after the new source has synced: its answers so far came before we listened.
      this.readBack();
    }
    if (plan.key === this.publisherKey) return;
    const old = this.publisher;
    this.publisher = plan.publisher;
    this.publisherKey = plan.key;
    void old?.stop();
    this.source.setPublishError(undefined);
    const publisher = plan.publisher;
    if (!publisher) return;
    publisher.start();
    const options = publisher.options;
    this.log.info(`auto-registered workloads are registered in Consul as replica ${this.replica}`, { consul: options.consul.address, ttlMs: options.ttlMs });
    if (options.deregisterAfterMs < CONSUL_DEREGISTER_MIN_MS) {
      // Consul's check_deregister_interval_min (not user-configurable): say it where operators will look.
      this.log.info(
        `a dead replica's workloads are removed by Consul no sooner than 1m after their TTL expired (Consul's floor for DeregisterCriticalServiceAfter), not after the configured ${options.deregisterAfterMs} ms; they are UNHEALTHY meanwhile`,
      );
    }
  }

  /** Drops a prepared change that will not be committed. */
  discard(plan: ConsulPlan): void {
    if (plan.publisher && plan.publisher !== this.publisher) void plan.publisher.stop();
  }

  /** Stops publishing (registrations are left to expire: see ConsulWorkloadPublisher). */
  async close(): Promise<void> {
    this.consulSource?.off("workloads", this.onConsul);
    this.consulSource?.off("change", this.onConsul);
    this.consulSource = undefined;
    const p = this.publisher;
    this.publisher = undefined;
    this.publisherKey = undefined;
    await p?.stop();
  }

  private readBack(): void {
    const s = this.consulSource;
    if (!s || !s.current().status.synced) return;
    this.source.setRemote(s.remoteWorkloads());
  }

  private publisherOptions(p: ConsulPublishing | undefined, gracePeriodMs: number): Omit<WorkloadPublisherOptions, "logger" | "onError"> | undefined {
    if (!p || p.register === false) return undefined;
    return {
      consul: p.consul,
      replica: this.replica,
      incarnation: this.incarnation,
      servicePrefix: p.servicePrefix ?? DEFAULT_WORKLOAD_SERVICE_PREFIX,
      ttlMs: p.ttlMs ?? DEFAULT_CONSUL_TTL_MS,
      gracePeriodMs,
      deregisterAfterMs: p.deregisterAfterMs ?? DEFAULT_CONSUL_DEREGISTER_AFTER_MS,
    };
  }

  connected(stream: XdsStream): void {
    const conn = connectionOf(stream);
    if (conn) this.source.connect(conn);
  }

  disconnected(stream: XdsStream): void {
    this.source.disconnect(stream.streamId);
  }

  /** Applies a stream's health report to its workload; reports of other proxies are only shown in /debug/syncz. */
  health(stream: XdsStream, report: HealthReport): void {
    if (this.source.reportHealth(stream.streamId, report)) return;
    this.log.debug("health report from a proxy that is not auto-registered; only auto-registered WorkloadEntries take health", { proxy: stream.view.id });
  }

  snapshot(snap: RegistrySnapshot): void {
    this.source.setGroups(snap.configs);
  }
}

/** What the source needs from an auto-registering stream; undefined for every other stream. */
export function connectionOf(stream: XdsStream): WorkloadConnection | undefined {
  const v = stream.view;
  if (!v.autoRegisterGroup) return undefined;
  const conn: WorkloadConnection = {
    streamId: stream.streamId,
    proxyId: v.id,
    namespace: v.namespace,
    group: v.autoRegisterGroup,
    ips: v.ips,
    labels: v.labels,
  };
  if (v.serviceAccount) conn.serviceAccount = v.serviceAccount;
  if (v.locality) conn.locality = v.locality;
  return conn;
}
