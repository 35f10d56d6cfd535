// `vmpilot-agent run`: identity first (nothing starts without a certificate), then bootstraps, then Envoy under
// supervision, the application probe and the status port. Stops in reverse order on SIGTERM.
// The DNS proxy (dns.enabled) starts before the certificate: with DNS captured, the VM's lookups reach it at
// once, and it forwards them upstream until the control plane's name table arrives.
import fs from "node:fs/promises";
import * as grpc from "@grpc/grpc-js";
import { SECURE_PORT_CHANNEL_OPTIONS, securePortChannelCredentials } from "@vmpilot/xds/ca/client";
import { credentialSdsSocket, envoyArgs, envoyBootstrap } from "./bootstrap/envoy.js";
import { grpcBootstrap } from "./bootstrap/grpc.js";
import { xdsNode, type NodeKind } from "./bootstrap/node.js";
import { caIssuer, CertificateRotator, type CertificateIssuer } from "./certs.js";
import { controlPlaneTarget, type AgentConfig } from "./config.js";
import { envoyReadiness, type EnvoyReadiness } from "./envoy-admin.js";
import { GatewayCredentials, missingCredentialHint } from "./gateway-credentials.js";
import { SdsServer } from "./sds-server.js";
import { EnvoySupervisor } from "./envoy-supervisor.js";
import { ensureDir, writeFileAtomic } from "./files.js";
import { XdsHealthReporter, type HealthReporter } from "./health-reporter.js";
import { findOnPath } from "./iptables-apply.js";
import { agentLogger, type Logger } from "./log.js";
import { DnsProxy, formatUpstream, subscribeNameTable, type NameTableSubscription } from "./dns/index.js";
import { Prober } from "./probes.js";
import { StatusServer, type Readiness } from "./status-server.js";
import { xdsProxyFor, type XdsProxy } from "./xds-proxy.js";

/** A start-up problem the operator must fix (missing Envoy binary, unreadable files): exit 1 with this message. */
export class AgentStartError extends Error {
  override name = "AgentStartError";
}

/** start() giving up because stop() was called meanwhile: not a failure. */
class StartAborted extends Error {}

export interface AgentOptions {
  /** Default: the control plane's CA, as configured. */
  issuer?: CertificateIssuer;
  logger?: Logger;
  /** Overrides proxy.envoyBinary (the `--envoy-bin` flag). */
  envoyBinary?: string;
  /** Envoy restart backoff bounds (tests shorten them). */
  envoyBackoff?: { minMs: number; maxMs: number };
  envoyStopGraceMs?: number;
  random?: () => number;
  /**
   * Where probe results go. Default: an ADS health stream to the control plane (health-reporter.ts) when the
   * workload is auto-registered and has a probe; otherwise none.
   */
  healthReporter?: HealthReporter;
}

export function runsEnvoy(cfg: AgentConfig): boolean {
  return cfg.proxy.kind !== "grpc";
}

export function runsGrpc(cfg: AgentConfig): boolean {
  return cfg.proxy.kind === "grpc" || cfg.proxy.kind === "both";
}

/** The kind the agent's own streams (health, name table) present: the same node as its proxy's bootstrap. */
export function agentNodeKind(cfg: AgentConfig): NodeKind {
  return cfg.proxy.kind === "grpc" ? "grpc" : cfg.proxy.kind === "gateway" ? "gateway" : "sidecar";
}

/** Writes the bootstrap file(s) this proxy kind needs; returns their paths. */
export async function writeBootstraps(cfg: AgentConfig): Promise<{ envoy?: string; grpc?: string }> {
  await ensureDir(cfg.output.dir);
  const out: { envoy?: string; grpc?: string } = {};
  if (runsEnvoy(cfg)) {
    await writeFileAtomic(cfg.output.envoyBootstrapFile, JSON.stringify(envoyBootstrap(cfg), null, 2) + "\n", 0o644);
    out.envoy = cfg.output.envoyBootstrapFile;
  }
  if (runsGrpc(cfg)) {
    await writeFileAtomic(cfg.output.grpcBootstrapFile, JSON.stringify(grpcBootstrap(cfg), null, 2) + "\n", 0o644);
    out.grpc = cfg.output.grpcBootstrapFile;
  }
  return out;
}

export class Agent {
  readonly rotator: CertificateRotator;
  readonly status: StatusServer;
  envoy: EnvoySupervisor | undefined;
  prober: Prober | undefined;
  xdsProxy: XdsProxy | undefined;
  health: HealthReporter | undefined;
  dns: DnsProxy | undefined;
  nameTables: NameTableSubscription | undefined;
  credentials: GatewayCredentials | undefined;
  sds: SdsServer | undefined;
  private envoyReady: EnvoyReadiness = { ready: false, reason: "envoy readiness not checked yet" };
  private envoyPoll: NodeJS.Timeout | undefined;
  private readonly log: Logger;
  private envoyBinary: string | undefined;
  private started = false;
  private startup: Promise<void> | undefined;
  private stopRequested = false;

  constructor(
    readonly cfg: AgentConfig,
    private readonly opts: AgentOptions = {},
  ) {
    this.log = opts.logger ?? agentLogger("run");
    this.rotator = new CertificateRotator(cfg, opts.issuer ?? caIssuer(cfg), { logger: this.log, ...(opts.random ? { random: opts.random } : {}) });
    this.status = new StatusServer({ readiness: () => this.readiness(), status: () => this.statusJson() });
  }

  /** Checks what can be checked before touching the network: a missing Envoy is a clear error, not a crash loop. */
  private async preflight(): Promise<void> {
    if (runsEnvoy(this.cfg)) {
      const bin = this.opts.envoyBinary ?? this.cfg.proxy.envoyBinary;
      this.envoyBinary = findOnPath(bin);
      if (!this.envoyBinary) {
        throw new AgentStartError(
          `envoy binary ${JSON.stringify(bin)} not found${bin.includes("/") ? "" : " on PATH"}; install Envoy, pass --envoy-bin PATH, or set proxy.kind: grpc for proxyless gRPC only`,
        );
      }
    }
    const uid = process.getuid?.();
    if (this.cfg.dns.capture && uid !== undefined && uid !== this.cfg.interception.proxyUid) {
      this.log.warn(
        `running as uid ${uid}, but the DNS capture rules exempt uid ${this.cfg.interception.proxyUid} (interception.proxyUid): the agent's own upstream DNS queries would be redirected back to it; run the agent as that user`,
      );
    }
    if (runsEnvoy(this.cfg) && this.cfg.interception.mode === "REDIRECT" && uid !== undefined && uid !== this.cfg.interception.proxyUid) {
      // Envoy inherits the agent's uid; the capture rules exempt only interception.proxyUid, so Envoy's own
      // outbound connections would be redirected back into Envoy.
      this.log.warn(
        `running as uid ${uid}, but the REDIRECT rules exempt uid ${this.cfg.interception.proxyUid} (interception.proxyUid): run the agent as that user (apply the rules with \`vmpilot-agent iptables\` as root beforehand) or Envoy's traffic will loop`,
      );
    }
    try {
      await fs.access(this.cfg.controlPlane.rootCertFile);
    } catch {
      throw new AgentStartError(`mesh root certificate ${this.cfg.controlPlane.rootCertFile} is not readable (controlPlane.rootCertFile)`);
    }
  }

  /**
   * Starts everything in order. A stop() that comes while this is under way (SIGTERM during start-up) makes it
   * return at its next step instead of opening more, and stop() tears down only once it has.
   */
  async start(): Promise<void> {
    this.startup = this.startInOrder().catch((e: unknown) => {
      if (!(e instanceof StartAborted)) throw e;
    });
    return this.startup;
  }

  private checkpoint(): void {
    if (this.stopRequested) throw new StartAborted();
  }

  private async startInOrder(): Promise<void> {
    await this.preflight();
    this.started = true;
    // Status first: load balancers see "not ready" (with reasons) while the agent is still getting its identity.
    const serveReadiness = !runsEnvoy(this.cfg);
    await this.status.start(
      { host: this.cfg.status.host, port: this.cfg.status.port },
      serveReadiness ? { host: this.cfg.status.readinessHost, port: this.cfg.status.readinessPort } : undefined,
    );
    this.checkpoint();
    if (this.cfg.dns.enabled) {
      const d = this.cfg.dns;
      this.dns = new DnsProxy({ address: d.address, port: d.port, ...(d.upstreams ? { upstreams: d.upstreams } : {}), log: this.log });
      await this.dns.start();
      this.checkpoint();
    }
    await this.rotator.start();
    this.checkpoint();
    if (this.dns) this.subscribeNameTable(this.dns);
    if (this.cfg.proxy.kind === "gateway") {
      // Before Envoy: its sds-grpc cluster connects to the socket, and credentials present now are served at once
      // (a missing one only keeps its own listener warming until its files appear).
      const credentialsDir = this.cfg.gateway.credentialsDir;
      this.sds = new SdsServer({ logger: this.log, missingHint: (name) => missingCredentialHint(credentialsDir, name) });
      await this.sds.listen(credentialSdsSocket(this.cfg));
      this.checkpoint();
      this.credentials = new GatewayCredentials({ sourceDir: credentialsDir, sds: this.sds, legacySdsDir: this.cfg.output.credentialSdsDir, logger: this.log });
      await this.credentials.start();
      this.checkpoint();
    }
    const files = await writeBootstraps(this.cfg);
    this.checkpoint();
    if (files.grpc) {
      if (this.cfg.grpc.xdsProxy) {
        this.xdsProxy = xdsProxyFor(this.cfg, () => this.rotator.current, this.log);
        await this.xdsProxy.listen(this.cfg.grpc.xdsServerUri);
        this.checkpoint();
      }
      this.log.info(`gRPC xDS bootstrap written to ${files.grpc} (set GRPC_XDS_BOOTSTRAP to it); xDS server ${this.cfg.grpc.xdsServerUri}${this.xdsProxy ? " (the agent's xDS proxy)" : ""}`);
    }
    if (files.envoy && this.envoyBinary) {
      this.envoy = new EnvoySupervisor({
        binary: this.envoyBinary,
        args: envoyArgs(this.cfg, files.envoy),
        logger: this.log,
        ...(this.opts.envoyBackoff ? { minBackoffMs: this.opts.envoyBackoff.minMs, maxBackoffMs: this.opts.envoyBackoff.maxMs } : {}),
        stopGraceMs: this.opts.envoyStopGraceMs ?? this.cfg.proxy.drainMs + 5000,
      });
      this.envoy.on("state", () => {
        this.envoyReady = { ready: false, reason: "envoy readiness not checked yet" };
      });
      this.envoy.on("exit", () => void fs.rm(this.cfg.output.envoyAdminAddressFile, { force: true }));
      this.envoy.start();
      this.pollEnvoy();
    }
    if (this.cfg.probe) {
      this.prober = new Prober(this.cfg.probe);
      this.health = this.opts.healthReporter ?? (this.cfg.autoRegisterGroup ? this.xdsHealthReporter() : undefined);
      let reported: boolean | undefined;
      this.prober.on("result", (ready: boolean, last?: { detail: string }) => {
        if (ready === reported) return;
        reported = ready;
        this.health?.report(ready, ready ? undefined : last?.detail);
      });
      this.prober.on("change", (ready: boolean, last?: { detail: string }) =>
        this.log.info(`application ${ready ? "ready" : "not ready"}${last ? ` (${last.detail})` : ""}`),
      );
      this.prober.start();
    }
  }

  async stop(): Promise<void> {
    if (this.stopRequested) return;
    this.stopRequested = true;
    // Start-up may be waiting for the first certificate: stopping the rotator releases it (start() then returns
    // at its next checkpoint), so what it would have opened next is never opened behind the teardown below.
    await this.rotator.stop();
    await this.startup?.catch(() => undefined);
    if (!this.started) return;
    this.started = false;
    this.prober?.stop();
    if (this.envoyPoll) clearTimeout(this.envoyPoll);
    this.envoyPoll = undefined;
    await this.health?.close();
    this.nameTables?.close();
    this.nameTables = undefined;
    await this.dns?.stop();
    await this.envoy?.stop("SIGTERM");
    await this.credentials?.stop();
    await this.sds?.close();
    await this.xdsProxy?.close();
    await this.rotator.stop();
    await this.status.stop();
  }

  /** Asks Envoy's admin API about once a second while it runs; /healthz/ready reads the latest answer. */
  private pollEnvoy(): void {
    this.envoyPoll = setTimeout(async () => {
      if (this.envoy?.status().state === "running") this.envoyReady = await envoyReadiness(this.cfg.output.envoyAdminAddressFile);
      if (this.started) this.pollEnvoy();
    }, this.envoyReady.ready ? 1000 : 200);
  }

  /**
   * The name table over the control plane's secure port, as the same node as the proxy (so the table is the
   * proxy's: its namespace's exportTo and Sidecar scope), with the certificate current at each connection.
   */
  private subscribeNameTable(dns: DnsProxy): void {
    const cfg = this.cfg;
    this.nameTables = subscribeNameTable({
      address: controlPlaneTarget(cfg),
      node: xdsNode(cfg, agentNodeKind(cfg)),
      credentials: async (): Promise<grpc.ChannelCredentials> => {
        const cert = this.rotator.current;
        if (!cert) throw new Error("no workload certificate yet");
        const rootCaPem = await fs.readFile(cfg.controlPlane.rootCertFile, "utf8");
        return securePortChannelCredentials({ rootCaPem, expectedServerSan: cfg.controlPlane.san, clientKeyCert: { keyPem: cert.keyPem, certChainPem: cert.chainPem.join("") } });
      },
      channelOptions: SECURE_PORT_CHANNEL_OPTIONS,
      onTable: (table) => dns.setNameTable(table),
      log: this.log,
    });
  }

  private xdsHealthReporter(): HealthReporter {
    return new XdsHealthReporter({
      upstream: { address: controlPlaneTarget(this.cfg), rootCaFile: this.cfg.controlPlane.rootCertFile, expectedSan: this.cfg.controlPlane.san },
      node: xdsNode(this.cfg, agentNodeKind(this.cfg)),
      certificate: () => this.rotator.current,
      logger: this.log,
    });
  }

  readiness(): Readiness {
    const reasons: string[] = [];
    const cert = this.rotator.current;
    if (!cert) reasons.push("no workload certificate yet");
    else if (cert.notAfter.getTime() <= Date.now()) reasons.push(`workload certificate ${cert.serial} expired at ${cert.notAfter.toISOString()}`);
    if (runsEnvoy(this.cfg)) {
      const st = this.envoy?.status().state ?? "not started";
      if (st !== "running") reasons.push(`envoy is ${st}`);
      else if (!this.envoyReady.ready) reasons.push(this.envoyReady.reason ?? "envoy is not ready");
    }
    if (this.prober) {
      const p = this.prober.status();
      if (!p.ready) reasons.push(`application probe not passing${p.last ? ` (${p.last.detail})` : " yet"}`);
    }
    return { ready: reasons.length === 0, reasons };
  }

  statusJson(): Record<string, unknown> {
    return {
      workload: { name: this.cfg.name, namespace: this.cfg.namespace, serviceAccount: this.cfg.serviceAccount, address: this.cfg.address },
      proxyKind: this.cfg.proxy.kind,
      certificate: this.rotator.status(),
      ...(this.envoy ? { envoy: { ...this.envoy.status(), ready: this.envoyReady.ready, ...(this.envoyReady.reason ? { notReady: this.envoyReady.reason } : {}) } } : {}),
      ...(this.prober ? { probe: this.prober.status() } : {}),
      ...(this.xdsProxy ? { xdsProxy: { address: this.cfg.grpc.xdsServerUri, ...this.xdsProxy.status() } } : {}),
      ...(this.dns ? { dns: this.dnsStatus(this.dns) } : {}),
      ...(this.credentials && this.sds
        ? { gatewayCredentials: { dir: this.cfg.gateway.credentialsDir, sdsSocket: credentialSdsSocket(this.cfg), credentials: this.credentials.status(), sds: this.sds.status() } }
        : {}),
    };
  }

  private dnsStatus(dns: DnsProxy): Record<string, unknown> {
    const { address, port } = dns.address;
    const sub = this.nameTables?.status();
    return {
      address: `${address}:${port}`,
      capture: this.cfg.dns.capture,
      upstreams: dns.upstreamList.map(formatUpstream),
      names: dns.names,
      nameTable: sub
        ? { connected: sub.connected, tables: sub.tables, version: sub.version, ...(sub.lastUpdate ? { lastUpdate: sub.lastUpdate.toISOString() } : {}), ...(sub.lastError ? { lastError: sub.lastError } : {}) }
        : { connected: false, tables: 0, waitingFor: "the workload certificate" },
    };
  }
}
