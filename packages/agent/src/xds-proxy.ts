// A local xDS proxy for proxyless gRPC applications on this VM (what Istio's agent does for its gRPC bootstrap).
//
// grpc-js-xds can only reach its xDS server with "insecure" or "google_default" channel credentials, so it
// cannot present the workload certificate that the control plane's secure port demands. The agent listens on a
// local endpoint (a unix socket in the agent's private output directory by default: only processes that may
// read the workload key may talk to it) and forwards every ADS stream, SotW or delta, byte for byte to the
// control plane over mTLS with the CURRENT workload certificate. Messages are not decoded: the proxy adds no
// latency to speak of and stays correct whatever the control plane sends.
//
// Rotation: each downstream stream opens its own upstream channel with the certificate current at that moment;
// established streams keep their TLS session (the control plane checked the identity at the handshake).
import fs from "node:fs/promises";
import * as grpc from "@grpc/grpc-js";
import { securePortClient } from "@vmpilot/xds/ca/client";
import type { CertificateBundle } from "./certs.js";
import { controlPlaneTarget, type AgentConfig } from "./config.js";
import type { Logger } from "./log.js";

const ADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService";
export const ADS_METHODS = {
  StreamAggregatedResources: `${ADS}/StreamAggregatedResources`,
  DeltaAggregatedResources: `${ADS}/DeltaAggregatedResources`,
} as const;

const identity = (b: Buffer): Buffer => b;

function passthroughMethod(path: string): grpc.MethodDefinition<Buffer, Buffer> {
  return {
    path,
    requestStream: true,
    responseStream: true,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  };
}

export interface XdsProxyOptions {
  /** Where the control plane's secure port is, and who it must be. */
  upstream: { address: string; rootCaFile: string; expectedSan: string };
  /** The workload certificate to present; read per stream so renewals apply to new streams. */
  certificate: () => CertificateBundle | undefined;
  logger: Logger;
}

export class XdsProxy {
  private readonly server = new grpc.Server();
  /** Downstream call -> its upstream stream and channel (absent until the upstream is open). */
  private readonly active = new Map<grpc.ServerDuplexStream<Buffer, Buffer>, { up?: grpc.ClientDuplexStream<Buffer, Buffer>; client?: grpc.Client }>();
  private streams = 0;

  constructor(private readonly opts: XdsProxyOptions) {
    const handler = (path: string) => (call: grpc.ServerDuplexStream<Buffer, Buffer>) => void this.forward(path, call);
    this.server.addService(
      { StreamAggregatedResources: passthroughMethod(ADS_METHODS.StreamAggregatedResources), DeltaAggregatedResources: passthroughMethod(ADS_METHODS.DeltaAggregatedResources) },
      { StreamAggregatedResources: handler(ADS_METHODS.StreamAggregatedResources), DeltaAggregatedResources: handler(ADS_METHODS.DeltaAggregatedResources) },
    );
  }

  /** Counters for /status. */
  status(): { activeStreams: number; totalStreams: number } {
    return { activeStreams: this.active.size, totalStreams: this.streams };
  }

  /** Binds `target` (`unix:///path` or `host:port`, plaintext); returns the bound port (0 for unix sockets). */
  async listen(target: string): Promise<number> {
    if (target.startsWith("unix://")) await fs.rm(target.slice("unix://".length), { force: true }); // a stale socket from a crash
    return new Promise((resolve, reject) =>
      this.server.bindAsync(target, grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))),
    );
  }

  async close(): Promise<void> {
    for (const [call, { up, client }] of [...this.active]) {
      this.active.delete(call);
      up?.cancel();
      client?.close();
      call.emit("error", { code: grpc.status.UNAVAILABLE, details: "vmpilot-agent is shutting down" });
    }
    await new Promise<void>((resolve) => this.server.tryShutdown(() => resolve()));
  }

  private async forward(path: string, call: grpc.ServerDuplexStream<Buffer, Buffer>): Promise<void> {
    this.streams++;
    const entry: { up?: grpc.ClientDuplexStream<Buffer, Buffer>; client?: grpc.Client } = {};
    this.active.set(call, entry);
    const fail = (code: grpc.status, details: string) => {
      if (!this.active.delete(call)) return;
      call.emit("error", { code, details });
    };
    const cert = this.opts.certificate();
    if (!cert) return fail(grpc.status.UNAVAILABLE, "vmpilot-agent has no workload certificate yet");
    let rootCaPem: string;
    try {
      rootCaPem = await fs.readFile(this.opts.upstream.rootCaFile, "utf8");
    } catch (e) {
      return fail(grpc.status.UNAVAILABLE, `vmpilot-agent cannot read the mesh root: ${(e as Error).message}`);
    }
    const client = securePortClient(this.opts.upstream.address, { rootCaPem, expectedServerSan: this.opts.upstream.expectedSan, clientKeyCert: { keyPem: cert.keyPem, certChainPem: cert.chainPem.join("") } });
    const up = client.makeBidiStreamRequest(path, identity, identity, call.metadata);
    entry.up = up;
    entry.client = client;
    const finish = () => {
      this.active.delete(call);
      client.close();
    };
    call.on("data", (m: Buffer) => up.write(m));
    call.on("end", () => up.end());
    call.on("cancelled", () => {
      up.cancel();
      finish();
    });
    up.on("data", (m: Buffer) => call.write(m));
    up.on("error", (e: grpc.ServiceError) => {
      this.opts.logger.warn(`xDS proxy: upstream stream ended: ${e.details || e.message}`);
      fail(e.code, e.details || e.message);
      finish();
    });
    up.on("end", () => {
      if (this.active.has(call)) call.end();
      finish();
    });
  }
}

/** The proxy as the agent configures it (its listen address is the gRPC bootstrap's xds server_uri). */
export function xdsProxyFor(cfg: AgentConfig, certificate: () => CertificateBundle | undefined, logger: Logger): XdsProxy {
  return new XdsProxy({
    upstream: { address: controlPlaneTarget(cfg), rootCaFile: cfg.controlPlane.rootCertFile, expectedSan: cfg.controlPlane.san },
    certificate,
    logger,
  });
}
