// The running control plane: Registry (files, Consul) -> resource cache -> ADS server on the plaintext and
// secure ports -> HTTP views. Owns the lifecycle: start, reload (SIGHUP), drain and stop (SIGTERM).
import * as grpc from "@grpc/grpc-js";
import type http from "node:http";
import { FileSource } from "@vmpilot/registry/file-source";
import { ConsulSource } from "@vmpilot/registry/consul/index";
import { Debouncer } from "@vmpilot/registry/debounce";
import { createLogger, type Logger } from "@vmpilot/registry/logger";
import { Registry } from "@vmpilot/registry/registry";
import type { RegistrySnapshot, RegistrySource } from "@vmpilot/registry";
import { checkStreamIdentity, loadMeshCa, type MeshCa } from "../ca/index.js";
import { AdsServer, type AuthorizeStream } from "./ads-server.js";
import { AutoRegistrar, type ConsulPublishing } from "./auto-register.js";
import type { ServerConfig } from "./config.js";
import { parseHostPort } from "./config.js";
import { createHttpServer, listenHttp } from "./http.js";
import { ControlPlaneMetrics } from "./metrics.js";
import type { ResourceSource } from "./resources.js";
import type { HealthReport, XdsStream } from "./stream.js";
import type { ProxyView } from "../proxy-view.js";

/** The resource cache as the control plane drives it (ResourceCache implements it). */
export interface SnapshotCache extends ResourceSource {
  update(snapshot: RegistrySnapshot): void;
}

export interface ControlPlaneOptions {
  config: ServerConfig;
  /** Builds the resource cache (the real ResourceCache in production). */
  createCache: () => SnapshotCache;
  /** Extra registry sources (auto-registration, tests). */
  sources?: RegistrySource[];
  /**
   * Health reports from agents (Istio HealthInformation requests on an ADS stream): auto-registration marks
   * the workload's endpoint HEALTHY / UNHEALTHY from them. The stream's view names the workload.
   */
  onHealthReport?: (view: ProxyView, report: HealthReport) => void;
  log?: Logger;
}

/** gRPC server settings for thousands of long-lived ADS streams. */
export const GRPC_SERVER_OPTIONS: grpc.ServerOptions = {
  // Ping idle connections so a vanished VM's stream is noticed in ~40 s, not at the next TCP timeout.
  "grpc.keepalive_time_ms": 30_000,
  "grpc.keepalive_timeout_ms": 10_000,
  // One ADS stream per proxy, plus the occasional CA call; more on one connection is a misbehaving client.
  "grpc.max_concurrent_streams": 100,
  // channelz keeps per-call records: real memory at fleet scale, for a debug view we do not serve.
  "grpc.enable_channelz": 0,
  // A delta reconnect lists every resource the proxy has (initial_resource_versions): megabytes in a large
  // mesh, past gRPC's 4 MB default.
  "grpc.max_receive_message_length": 64 * 1024 * 1024,
};

/** GRPC_SERVER_OPTIONS plus the configured connection age (spreads proxies over replicas after a scale-out). */
export function grpcServerOptions(cfg: Pick<ServerConfig, "maxConnectionAgeMs">): grpc.ServerOptions {
  if (!cfg.maxConnectionAgeMs) return { ...GRPC_SERVER_OPTIONS };
  // ADS streams never finish on their own: the grace period is how long a proxy has to move before its stream
  // is cut (it reconnects, possibly elsewhere, and keeps its config meanwhile). Jitter keeps a fleet that
  // connected together from leaving together.
  const age = Math.round(cfg.maxConnectionAgeMs * (0.9 + Math.random() * 0.2));
  return { ...GRPC_SERVER_OPTIONS, "grpc.max_connection_age_ms": age, "grpc.max_connection_age_grace_ms": 10_000 };
}

export interface ExtraService {
  definition: grpc.ServiceDefinition;
  implementation: grpc.UntypedServiceImplementation;
}

export class ControlPlane {
  readonly ads: AdsServer;
  readonly metrics: ControlPlaneMetrics;
  /** WorkloadGroup auto-registration: its source is part of every registry this control plane builds. */
  readonly autoRegistration: AutoRegistrar;
  private readonly log: Logger;
  private registry: Registry;
  private consulSource: ConsulSource | undefined;
  private cache: SnapshotCache;
  private config: ServerConfig;
  private readonly extraSecureServices: ExtraService[] = [];
  private xdsServer: grpc.Server | undefined;
  private secureServer: grpc.Server | undefined;
  private httpServer: http.Server | undefined;
  private ca: MeshCa | undefined;
  private debouncer: Debouncer;
  /** When the oldest change not yet pushed arrived (push latency is measured from it). */
  private changedAt: number | undefined;
  private started = false;
  private stopping: Promise<void> | undefined;
  private readonly onSnapshot = (snap: RegistrySnapshot): void => this.snapshotPublished(snap);
  readonly addresses: { xds?: string; secure?: string; http?: string } = {};

  constructor(private readonly opts: ControlPlaneOptions) {
    this.config = opts.config;
    this.log = opts.log ?? createLogger("control-plane");
    this.cache = opts.createCache();
    const ar = opts.config.autoRegistration;
    this.autoRegistration = new AutoRegistrar({ cleanupGracePeriodMs: ar.cleanupGracePeriodMs, ...(ar.consul?.replica ? { replica: ar.consul.replica } : {}) });
    this.consulSource = this.buildConsulSource(opts.config);
    this.autoRegistration.useConsul(this.consulSource, this.publishingOf(opts.config, this.consulSource));
    this.registry = this.buildRegistry(opts.config, this.consulSource);
    this.metrics = new ControlPlaneMetrics({ streams: () => this.ads.connections, snapshot: () => this.registry.current(), configDirs: () => this.config.configDirs });
    const onHealth = opts.onHealthReport;
    const metrics = this.metrics.observer();
    const autoReg = this.autoRegistration;
    this.ads = new AdsServer({
      source: { resources: (view, typeUrl) => this.cache.resources(view, typeUrl) },
      observer: {
        ...metrics,
        connected: (s: XdsStream) => {
          metrics.connected(s);
          autoReg.connected(s);
        },
        disconnected: (s: XdsStream) => autoReg.disconnected(s),
        health: (s: XdsStream, r: HealthReport) => {
          autoReg.health(s, r);
          onHealth?.(s.view, r);
        },
      },
      log: createLogger("ads"),
    });
    // Leading edge: the registry has already merged a burst of file events into one snapshot, so the first snapshot
    // after a quiet spell is pushed at once; snapshots that follow it are debounced (see registry/debounce.ts).
    this.debouncer = new Debouncer(() => this.push(), { quietMs: opts.config.debounce.quietMs, maxMs: opts.config.debounce.maxMs, leading: true });
  }

  /** Adds a service to the secure port (e.g. the CA's). Call before start(). */
  addService(definition: grpc.ServiceDefinition, implementation: grpc.UntypedServiceImplementation): void {
    if (this.started) throw new Error("addService must be called before start()");
    this.extraSecureServices.push({ definition, implementation });
  }

  /** The mesh CA behind the secure port (undefined when the secure port is off). */
  get meshCa(): MeshCa | undefined {
    return this.ca;
  }

  current(): RegistrySnapshot {
    return this.registry.current();
  }

  /** Starts the registry (first snapshot from every source), then the ports. Resolves once everything listens. */
  async start(): Promise<void> {
    if (this.started) throw new Error("control plane already started");
    this.started = true;
    this.registry.on("snapshot", this.onSnapshot);
    const first = await this.registry.start();
    this.updateCache(first);
    const cfg = this.config;

    const serverOptions = grpcServerOptions(cfg);
    this.xdsServer = new grpc.Server(serverOptions);
    this.xdsServer.addService(this.ads.definition, this.ads.implementation());
    this.addresses.xds = await bindGrpc(this.xdsServer, cfg.xdsAddr, grpc.ServerCredentials.createInsecure());
    this.log.info("plaintext xDS listening", { address: this.addresses.xds });

    if (cfg.stateDir) {
      this.ca = await loadMeshCa({ stateDir: cfg.stateDir, trustDomain: cfg.mesh.trustDomain, logger: createLogger("ca") });
      const trustDomain = cfg.mesh.trustDomain;
      const requireIdentity: AuthorizeStream = (call, view) => checkStreamIdentity(call, view, trustDomain);
      this.secureServer = new grpc.Server(serverOptions);
      this.secureServer.addService(this.ads.definition, this.ads.implementation(requireIdentity));
      this.ca.addTo(this.secureServer);
      for (const s of this.extraSecureServices) this.secureServer.addService(s.definition, s.implementation);
      this.addresses.secure = await bindGrpc(this.secureServer, cfg.secureAddr, this.ca.secure.credentials);
      this.log.info("mTLS xDS and CA listening", { address: this.addresses.secure, stateDir: cfg.stateDir });
    } else {
      this.log.info("secure port (mTLS xDS + CA) disabled: no state dir configured (set stateDir, --state-dir or VMPILOT_STATE_DIR to hold the CA keys)");
    }

    this.httpServer = createHttpServer({
      notReady: () => this.notReady(),
      readyNotes: () => this.readyNotes(),
      snapshot: () => this.registry.current(),
      syncz: () => this.ads.status(),
      metrics: this.metrics.registry,
    });
    const h = parseHostPort(cfg.httpAddr, "httpAddr");
    this.addresses.http = await listenHttp(this.httpServer, h.host, h.port);
    this.log.info("HTTP (ready, metrics, debug) listening", { address: this.addresses.http });
  }

  /** Why the control plane is not ready, or undefined when it is. */
  notReady(): string[] | undefined {
    if (!this.started || !this.addresses.xds) return ["starting"];
    if (this.stopping) return ["shutting down"];
    const snap = this.registry.current();
    const reasons: string[] = [];
    if (snap.version === 0) reasons.push("no registry snapshot yet");
    for (const s of snap.sources) if (!s.synced && this.waitsFor(s.name)) reasons.push(unsynced(s));
    return reasons.length > 0 ? reasons : undefined;
  }

  /** Sources readiness does not wait for (consul.waitForSync: false) that have not synced: shown on a ready /ready. */
  readyNotes(): string[] {
    return this.registry
      .current()
      .sources.filter((s) => !s.synced && !this.waitsFor(s.name))
      .map((s) => `${unsynced(s)} (readiness does not wait for it: consul.waitForSync is false)`);
  }

  private waitsFor(source: string): boolean {
    return source !== CONSUL_SOURCE || this.config.consul?.waitForSync !== false;
  }

  /**
   * Applies a re-read config file (SIGHUP): new config dirs or Consul settings swap in a new registry, a new
   * mesh config republishes everything. Listen addresses and the state dir only change on restart.
   *
   * Everything that can fail (the new registry's sources starting, the Consul publisher reading its TLS files)
   * is built first, beside what runs; only then is it all switched over, in one step that cannot fail. A
   * reload that throws leaves the config, registry, Consul publisher and read-back exactly as they were.
   */
  async reload(next: ServerConfig): Promise<void> {
    const prev = this.config;
    for (const k of ["xdsAddr", "secureAddr", "httpAddr", "stateDir", "insecure"] as const) {
      if (prev[k] !== next[k]) this.log.warn(`${k} changed in the config file; it takes effect on restart`, { from: prev[k], to: next[k] });
    }
    if (prev.maxConnectionAgeMs !== next.maxConnectionAgeMs) this.log.warn("maxConnectionAge changed in the config file; it takes effect on restart");
    const config: ServerConfig = { ...next, xdsAddr: prev.xdsAddr, secureAddr: prev.secureAddr, httpAddr: prev.httpAddr, insecure: prev.insecure, ...(prev.stateDir ? { stateDir: prev.stateDir } : {}) };
    // The service prefix is also what the ConsulSource accepts as registrations (workload-records.ts "Trust").
    const sourcesChanged =
      JSON.stringify([prev.configDirs, prev.consul, prev.autoRegistration.consul?.servicePrefix]) !==
      JSON.stringify([next.configDirs, next.consul, next.autoRegistration.consul?.servicePrefix]);

    // 1. Build, touching nothing that runs (an unstarted ConsulSource holds nothing; a Registry is only
    // constructed once nothing before it can throw, as it listens to the shared auto-registration source).
    const consulSource = sourcesChanged ? this.buildConsulSource(config) : this.consulSource;
    const plan = this.autoRegistration.prepare(consulSource, this.publishingOf(config, consulSource), config.autoRegistration.cleanupGracePeriodMs);
    const registry = sourcesChanged ? this.buildRegistry(config, consulSource) : undefined;
    if (registry) {
      try {
        await registry.start();
      } catch (err) {
        this.autoRegistration.discard(plan);
        await registry.stop();
        throw err;
      }
    }

    // 2. Switch over (nothing below throws).
    if (JSON.stringify(prev.debounce) !== JSON.stringify(next.debounce)) {
      this.debouncer.flush();
      this.debouncer = new Debouncer(() => this.push(), { quietMs: next.debounce.quietMs, maxMs: next.debounce.maxMs, leading: true });
    }
    this.config = config;
    this.autoRegistration.commit(plan);
    if (registry) {
      const old = this.registry;
      old.off("snapshot", this.onSnapshot);
      registry.on("snapshot", this.onSnapshot);
      this.registry = registry;
      this.consulSource = consulSource;
      // Its first snapshot is complete (`full`), which the cache regenerates from scratch.
      this.snapshotPublished(registry.current());
      await old.stop();
      this.log.info("config reloaded: new sources", { configDirs: next.configDirs, consul: next.consul?.address ?? null });
    } else if (JSON.stringify(prev.mesh) !== JSON.stringify(next.mesh)) {
      this.registry.setMesh(next.mesh);
      this.log.info("config reloaded: new mesh settings", { mesh: next.mesh });
    } else {
      this.log.info("config reloaded: no new sources or mesh settings");
    }
  }

  /**
   * Drains: stops accepting streams, ends the open ones (proxies reconnect elsewhere or to our successor),
   * waits up to `graceMs` for calls to finish, then closes everything.
   */
  stop(graceMs = 5000): Promise<void> {
    this.stopping ??= (async () => {
      this.debouncer.cancel();
      // Publishing to Consul stops first, before any stream ends: draining disconnects every workload, and a
      // publisher still running would deregister them once their grace period ran out (shorter than the drain,
      // say) instead of leaving them to expire while the proxies reconnect elsewhere. close() stops it at once
      // (no write starts after this line); awaited below.
      const publishingStopped = this.autoRegistration.close();
      this.ads.drain();
      await Promise.all([this.xdsServer, this.secureServer].filter((s): s is grpc.Server => s !== undefined).map((s) => shutdownGrpc(s, graceMs)));
      this.ca?.close();
      if (this.httpServer) {
        const hs = this.httpServer;
        await new Promise<void>((resolve) => {
          hs.close(() => resolve());
          hs.closeAllConnections();
        });
      }
      // Also before the registry stops its sources: a stopped auto-registration source holds no workloads.
      await publishingStopped;
      this.registry.off("snapshot", this.onSnapshot);
      await this.registry.stop();
    })();
    return this.stopping;
  }

  /** The ConsulSource for `cfg` (not started), if Consul is configured. */
  private buildConsulSource(cfg: ServerConfig): ConsulSource | undefined {
    if (!cfg.consul) return undefined;
    const { waitForSync: _serverSide, ...consul } = cfg.consul;
    const ar = cfg.autoRegistration.consul;
    const prefix = ar?.servicePrefix !== undefined ? { workloadServicePrefix: ar.servicePrefix } : {};
    return new ConsulSource({ trustDomain: cfg.mesh.trustDomain, domain: cfg.mesh.consulDomain, ...consul, ...prefix }, createLogger("consul-source"));
  }

  /** A registry (not started) of the auto-registration source, `cfg`'s config dirs and `consulSource`. */
  private buildRegistry(cfg: ServerConfig, consulSource: ConsulSource | undefined): Registry {
    const sources: RegistrySource[] = [...(this.opts.sources ?? []), this.autoRegistration.source];
    if (cfg.configDirs.length > 0) sources.push(new FileSource({ dirs: cfg.configDirs }));
    if (consulSource) sources.push(consulSource);
    return new Registry({ sources, mesh: cfg.mesh });
  }

  /** How auto-registered workloads go through `consulSource`'s Consul (DESIGN.md "Scale-out"). */
  private publishingOf(cfg: ServerConfig, consulSource: ConsulSource | undefined): ConsulPublishing | undefined {
    return consulSource ? { consul: consulSource.options, ...cfg.autoRegistration.consul } : undefined;
  }

  private snapshotPublished(snap: RegistrySnapshot): void {
    // The groups auto-registered entries derive from; a change here comes back as a source change (next snapshot).
    this.autoRegistration.snapshot(snap);
    this.updateCache(snap);
    this.changedAt ??= Date.now();
    this.debouncer.trigger();
  }

  private updateCache(snap: RegistrySnapshot): void {
    try {
      this.cache.update(snap);
    } catch (err) {
      // A generator bug must not take serving down: proxies keep the last good config.
      this.log.error("updating the resource cache failed; serving the previous config", { version: snap.version, error: err });
    }
  }

  private push(): void {
    const at = this.changedAt ?? Date.now();
    this.changedAt = undefined;
    this.ads.push(at);
  }
}

/** ConsulSource's name in snapshot.sources. */
const CONSUL_SOURCE = "consul";

function unsynced(s: { name: string; lastError?: string }): string {
  return `source ${s.name} has not synced${s.lastError ? `: ${s.lastError}` : ""}`;
}

async function bindGrpc(server: grpc.Server, addr: string, creds: grpc.ServerCredentials): Promise<string> {
  const { host, port } = parseHostPort(addr, "address");
  const target = host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
  const bound = await new Promise<number>((resolve, reject) =>
    server.bindAsync(target, creds, (err, p) => (err ? reject(new Error(`cannot listen on ${addr}: ${err.message}`)) : resolve(p))),
  );
  return host.includes(":") ? `[${host}]:${bound}` : `${host}:${bound}`;
}

function shutdownGrpc(server: grpc.Server, graceMs: number): Promise<void> {
  return new Promise<void>((resolve) => {
    const timer = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, graceMs);
    server.tryShutdown(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}
