// Reports the application probe's verdict to the control plane, the way Istio's agent does: on an ADS stream, a
// DiscoveryRequest of type `type.googleapis.com/istio.v1.HealthInformation`; healthy = no error_detail,
// unhealthy = error_detail { code, message }. The control plane marks the auto-registered WorkloadEntry's
// endpoint HEALTHY / UNHEALTHY from it.
//
// Envoy talks to the control plane directly (its own mTLS stream), so the agent opens a stream of its own for
// health, with the workload certificate and the SAME node (id and metadata, AUTO_REGISTER_GROUP included) as the
// sidecar: the control plane attributes it to the same workload. The stream is re-opened with backoff when it
// breaks, and the latest state is re-sent first thing on every new stream.
import fs from "node:fs/promises";
import * as grpc from "@grpc/grpc-js";
import { securePortClient } from "@vmpilot/xds/ca/client";
import { encodeJson } from "@vmpilot/xds/protojson";
import { Backoff, sleep } from "./backoff.js";
import type { XdsNodeJson } from "./bootstrap/node.js";
import type { CertificateBundle } from "./certs.js";
import type { Logger } from "./log.js";
import { ADS_METHODS } from "./xds-proxy.js";

/** Istio's type URL for health reports (pilot/pkg/xds/v3: HealthInfoType). */
export const HEALTH_TYPE_URL = "type.googleapis.com/istio.v1.HealthInformation";

/** What the agent needs from any health transport. */
export interface HealthReporter {
  report(healthy: boolean, detail?: string): void;
  close(): Promise<void>;
}

export interface XdsHealthReporterOptions {
  upstream: { address: string; rootCaFile: string; expectedSan: string };
  node: XdsNodeJson;
  certificate: () => CertificateBundle | undefined;
  logger: Logger;
  minBackoffMs?: number;
  maxBackoffMs?: number;
}

const raw = (b: Buffer) => b;

/** DiscoveryRequest bytes for one health report (the node only on a stream's first message, as Envoy does). */
export function healthRequest(healthy: boolean, detail: string | undefined, node: XdsNodeJson | undefined): Buffer {
  const body: Record<string, unknown> = { type_url: HEALTH_TYPE_URL };
  if (node) body.node = { id: node.id, cluster: node.cluster, metadata: node.metadata };
  // Any non-OK status means unhealthy; UNAVAILABLE says "not serving" without blaming the request.
  if (!healthy) body.error_detail = { code: grpc.status.UNAVAILABLE, message: detail ?? "application probe failing" };
  return Buffer.from(encodeJson("envoy.service.discovery.v3.DiscoveryRequest", body));
}

export class XdsHealthReporter implements HealthReporter {
  private state: { healthy: boolean; detail?: string } | undefined;
  private call: grpc.ClientDuplexStream<Buffer, Buffer> | undefined;
  private client: grpc.Client | undefined;
  private readonly abort = new AbortController();
  private readonly loop: Promise<void>;
  private wake: (() => void) | undefined;
  private readonly backoff: Backoff;
  sent = 0;

  constructor(private readonly opts: XdsHealthReporterOptions) {
    this.backoff = new Backoff(opts.minBackoffMs ?? 1000, opts.maxBackoffMs ?? 30_000);
    this.loop = this.run();
  }

  report(healthy: boolean, detail?: string): void {
    this.state = detail === undefined ? { healthy } : { healthy, detail };
    if (this.call) this.send(false);
    else this.wake?.();
  }

  async close(): Promise<void> {
    this.abort.abort();
    this.wake?.();
    this.call?.end();
    this.client?.close();
    await this.loop;
  }

  private send(first: boolean): void {
    if (!this.call || !this.state) return;
    this.call.write(healthRequest(this.state.healthy, this.state.detail, first ? this.opts.node : undefined));
    this.sent++;
  }

  /** Keeps one stream open while there is something to report; re-sends the latest state on each new stream. */
  private async run(): Promise<void> {
    while (!this.abort.signal.aborted) {
      const cert = this.opts.certificate();
      if (!this.state || !cert) {
        await new Promise<void>((resolve) => (this.wake = resolve));
        this.wake = undefined;
        continue;
      }
      const ended = await this.openStream(cert);
      if (this.abort.signal.aborted) return;
      const delay = ended.stable ? (this.backoff.reset(), this.backoff.next()) : this.backoff.next();
      this.opts.logger.warn(`health stream to the control plane ended (${ended.reason}); reconnecting in ${delay} ms`);
      await sleep(delay, this.abort.signal);
    }
  }

  private async openStream(cert: CertificateBundle): Promise<{ reason: string; stable: boolean }> {
    const opened = Date.now();
    try {
      const rootCaPem = await fs.readFile(this.opts.upstream.rootCaFile, "utf8");
      this.client = securePortClient(this.opts.upstream.address, { rootCaPem, expectedServerSan: this.opts.upstream.expectedSan, clientKeyCert: { keyPem: cert.keyPem, certChainPem: cert.chainPem.join("") } });
      const call = this.client.makeBidiStreamRequest(ADS_METHODS.StreamAggregatedResources, raw, raw);
      this.call = call;
      const ended = new Promise<string>((resolve) => {
        call.on("data", () => undefined); // the control plane owes no answer to a health report
        call.on("error", (e: grpc.ServiceError) => resolve(e.details || e.message));
        call.on("end", () => resolve("closed by the control plane"));
      });
      this.send(true);
      const reason = await ended;
      return { reason, stable: Date.now() - opened > 60_000 };
    } catch (e) {
      return { reason: (e as Error).message, stable: false };
    } finally {
      this.call = undefined;
      this.client?.close();
      this.client = undefined;
    }
  }
}
