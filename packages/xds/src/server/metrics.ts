// Prometheus metrics of one control plane, on its own prom-client Registry (several control planes can live
// in one process, as in tests). Gauges that mirror current state are computed at scrape time.
import client from "prom-client";
import type { RegistrySnapshot } from "@vmpilot/registry";
import { revisionInfo, revisionInfoSeries } from "../revision.js";
import { shortType } from "./resources.js";
import type { StreamObserver, XdsStream } from "./stream.js";

export class ControlPlaneMetrics {
  readonly registry = new client.Registry();
  private readonly pushes: client.Counter<"type">;
  private readonly pushLatency: client.Histogram<"type">;
  private readonly nacks: client.Counter<"type">;
  private readonly streamsOpened: client.Counter<"protocol">;
  private readonly generationErrors: client.Counter<"type">;

  constructor(opts: { streams: () => Iterable<XdsStream>; snapshot: () => RegistrySnapshot | undefined; configDirs?: () => readonly string[] }) {
    const registers = [this.registry];
    client.collectDefaultMetrics({ register: this.registry, prefix: "vmpilot_" });
    new client.Gauge({
      name: "vmpilot_xds_connected_proxies",
      help: "Open xDS streams, by proxy kind and protocol.",
      labelNames: ["kind", "protocol"],
      registers,
      collect() {
        this.reset();
        const counts = new Map<string, number>();
        for (const s of opts.streams()) {
          const k = `${s.view.kind}\0${s.protocol}`;
          counts.set(k, (counts.get(k) ?? 0) + 1);
        }
        for (const [k, n] of counts) {
          const [kind, protocol] = k.split("\0") as [string, string];
          this.set({ kind, protocol }, n);
        }
      },
    });
    this.streamsOpened = new client.Counter({ name: "vmpilot_xds_streams_total", help: "xDS streams accepted.", labelNames: ["protocol"], registers });
    this.pushes = new client.Counter({ name: "vmpilot_xds_pushes_total", help: "xDS responses sent, by type (CDS, EDS, LDS, RDS, ...).", labelNames: ["type"], registers });
    this.pushLatency = new client.Histogram({
      name: "vmpilot_xds_push_latency_seconds",
      help: "From a registry change to the proxy's ACK of the response carrying it.",
      labelNames: ["type"],
      buckets: [0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10],
      registers,
    });
    this.generationErrors = new client.Counter({
      name: "vmpilot_xds_generation_errors_total",
      help: "Failures to generate a proxy's resources of one type (a bug: the proxy keeps its config), by type.",
      labelNames: ["type"],
      registers,
    });
    this.nacks = new client.Counter({ name: "vmpilot_xds_nacks_total", help: "Responses rejected by proxies (NACKs), by type.", labelNames: ["type"], registers });
    new client.Gauge({
      name: "vmpilot_config_problems",
      help: "Current problems in the config sources, by severity.",
      labelNames: ["severity"],
      registers,
      collect() {
        this.reset();
        const snap = opts.snapshot();
        let errors = 0;
        let warnings = 0;
        for (const p of snap?.problems ?? []) p.severity === "error" ? errors++ : warnings++;
        this.set({ severity: "error" }, errors);
        this.set({ severity: "warning" }, warnings);
      },
    });
    new client.Gauge({
      name: "vmpilot_config_objects",
      help: "Validated config objects, by kind.",
      labelNames: ["kind"],
      registers,
      collect() {
        this.reset();
        const counts = new Map<string, number>();
        for (const o of opts.snapshot()?.configs.values() ?? []) counts.set(o.kind, (counts.get(o.kind) ?? 0) + 1);
        for (const [kind, n] of counts) this.set({ kind }, n);
      },
    });
    new client.Gauge({
      name: "vmpilot_config_revision_info",
      help: "The git commit each config source applied (1 per source; dir: its directories).",
      labelNames: ["source", "dir", "revision"],
      registers,
      collect() {
        this.reset();
        const info = revisionInfo(opts.snapshot()?.sources ?? [], { files: opts.configDirs?.() ?? [] });
        for (const labels of revisionInfoSeries(info)) this.set(labels, 1);
      },
    });
    new client.Gauge({
      name: "vmpilot_registry_services",
      help: "Services in the registry (one per ServiceEntry host or Consul service).",
      registers,
      collect() {
        this.set(opts.snapshot()?.services.size ?? 0);
      },
    });
    new client.Gauge({
      name: "vmpilot_registry_endpoints",
      help: "Endpoints in the registry, over all services.",
      registers,
      collect() {
        let n = 0;
        for (const eps of opts.snapshot()?.endpoints.values() ?? []) n += eps.length;
        this.set(n);
      },
    });
    new client.Gauge({
      name: "vmpilot_source_synced",
      help: "1 once a registry source (files, consul) has read its whole input once, else 0.",
      labelNames: ["source"],
      registers,
      collect() {
        this.reset();
        for (const s of opts.snapshot()?.sources ?? []) this.set({ source: s.name }, s.synced ? 1 : 0);
      },
    });
    new client.Gauge({
      name: "vmpilot_source_stale",
      help: "1 while a registry source fails and its last good data is served (see lastError in /debug/configz), else 0.",
      labelNames: ["source"],
      registers,
      collect() {
        this.reset();
        for (const s of opts.snapshot()?.sources ?? []) this.set({ source: s.name }, s.stale ? 1 : 0);
      },
    });
    new client.Gauge({
      name: "vmpilot_registry_snapshot_version",
      help: "Version of the registry snapshot being served.",
      registers,
      collect() {
        this.set(opts.snapshot()?.version ?? 0);
      },
    });
  }

  /** Hooks for the ADS server's streams. */
  observer(): Required<Omit<StreamObserver, "health">> & { connected(s: XdsStream): void } {
    return {
      connected: (s) => this.streamsOpened.inc({ protocol: s.protocol }),
      sent: (_s, typeUrl) => this.pushes.inc({ type: shortType(typeUrl) }),
      acked: (_s, typeUrl, latencyMs) => {
        if (latencyMs !== undefined) this.pushLatency.observe({ type: shortType(typeUrl) }, latencyMs / 1000);
      },
      nacked: (_s, typeUrl) => this.nacks.inc({ type: shortType(typeUrl) }),
      sourceFailed: (_s, typeUrl) => this.generationErrors.inc({ type: shortType(typeUrl) }),
    };
  }
}
