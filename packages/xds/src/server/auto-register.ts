// Glue between the ADS server and the auto-registration source: a stream whose node names a WorkloadGroup
// (AUTO_REGISTER_GROUP) registers its workload while it is open, its HealthInformation requests set the
// workload's health, and every registry snapshot hands the source the current WorkloadGroups.
//
// Streams are admitted (and, on the secure port, their certificate checked against NAMESPACE and
// SERVICE_ACCOUNT) before `connected` runs, so what the view claims is what the certificate proves there.
import { AutoRegistrationSource, DEFAULT_CLEANUP_GRACE_PERIOD_MS, type WorkloadConnection } from "@vmpilot/registry/auto-registration";
import type { RegistrySnapshot } from "@vmpilot/registry";
import { createLogger, type Logger } from "@vmpilot/registry/logger";
import type { HealthReport, XdsStream } from "./stream.js";

export interface AutoRegistrarOptions {
  cleanupGracePeriodMs?: number;
  log?: Logger;
}

export class AutoRegistrar {
  readonly source: AutoRegistrationSource;
  private readonly log: Logger;

  constructor(opts: AutoRegistrarOptions = {}) {
    this.log = opts.log ?? createLogger("auto-registration");
    this.source = new AutoRegistrationSource({ cleanupGracePeriodMs: opts.cleanupGracePeriodMs ?? DEFAULT_CLEANUP_GRACE_PERIOD_MS, logger: this.log });
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

  setGracePeriod(ms: number): void {
    this.source.setGracePeriod(ms);
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
