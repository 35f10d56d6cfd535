// End-to-end harness: a real control plane (in-process, on loopback port 0) serving a temp config dir, and
// gRPC clients that find their servers through @grpc/grpc-js-xds.
//
// grpc-js-xds keeps one process-wide XdsClient for GRPC_XDS_BOOTSTRAP(_CONFIG). Instead, every channel here
// gets its own bootstrap through the channel option grpc-js-xds reads for exactly this
// (`grpc.TEST_ONLY_DO_NOT_USE_IN_PROD.xds_bootstrap_config`): each channel has its own XdsClient, node id and
// ADS stream, so suites and control planes (and restarts on a new port) never share xDS state.
import { cp, mkdtemp, rm, writeFile, unlink } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import * as grpcJsXds from "@grpc/grpc-js-xds";
import { setLogLevel } from "@vmpilot/registry/logger";
import { resolveServerConfig, type ServerConfig } from "@vmpilot/xds/server/config";
import { ControlPlane, type SnapshotCache } from "@vmpilot/xds/server/control-plane";
import { echoClient, type EchoClient } from "./echo.js";
import { until } from "./poll.js";

grpcJsXds.register();
if (!process.env.VMPILOT_LOG_LEVEL) setLogLevel("error");

const BOOTSTRAP_OPTION = "grpc.TEST_ONLY_DO_NOT_USE_IN_PROD.xds_bootstrap_config";

export class TestControlPlane {
  cp!: ControlPlane;
  private constructor(
    readonly dir: string,
    private readonly createCache: () => SnapshotCache,
    private config: ServerConfig,
  ) {}

  /** A control plane on 127.0.0.1 (ports chosen by the OS) watching a fresh temp dir. */
  static async start(createCache: () => SnapshotCache, files: Record<string, string> = {}, xdsAddr = "127.0.0.1:0", extra: Record<string, unknown> = {}, copyFrom?: string): Promise<TestControlPlane> {
    const dir = await mkdtemp(path.join(os.tmpdir(), "vmpilot-e2e-"));
    if (copyFrom) await cp(copyFrom, dir, { recursive: true });
    for (const [name, content] of Object.entries(files)) await writeFile(path.join(dir, name), content);
    const config = resolveServerConfig({ configDirs: [dir], xdsAddr, httpAddr: "127.0.0.1:0", ...extra }, dir, {});
    const t = new TestControlPlane(dir, createCache, config);
    await t.boot();
    return t;
  }

  private async boot(): Promise<void> {
    this.cp = new ControlPlane({ config: this.config, createCache: this.createCache });
    await this.cp.start();
  }

  get xdsAddress(): string {
    return this.cp.addresses.xds!;
  }

  get httpAddress(): string {
    return this.cp.addresses.http!;
  }

  /** Stops and starts again on the same xDS port (a control plane restart as proxies see it). */
  async restart(): Promise<void> {
    await this.cp.stop(1000);
    this.config = { ...this.config, xdsAddr: this.cp.addresses.xds!, httpAddr: "127.0.0.1:0", ...(this.cp.addresses.secure ? { secureAddr: this.cp.addresses.secure } : {}) };
    await this.boot();
  }

  async write(name: string, content: string): Promise<void> {
    await writeFile(path.join(this.dir, name), content);
  }

  async remove(name: string): Promise<void> {
    await unlink(path.join(this.dir, name));
  }

  async get(pathname: string): Promise<{ status: number; body: string }> {
    const res = await fetch(`http://${this.httpAddress}${pathname}`);
    return { status: res.status, body: await res.text() };
  }

  async syncz(): Promise<SynczProxy[]> {
    return JSON.parse((await this.get("/debug/syncz")).body) as SynczProxy[];
  }

  /** Every NACK any connected proxy sent (empty = none). */
  async nacks(): Promise<string[]> {
    const out: string[] = [];
    for (const p of await this.syncz()) for (const [type, t] of Object.entries(p.types)) if (t.lastNack) out.push(`${p.proxyId} ${type}: ${t.lastNack.message}`);
    return out;
  }

  async stop(): Promise<void> {
    await this.cp.stop(1000);
    await rm(this.dir, { recursive: true, force: true });
  }
}

export interface SynczProxy {
  proxyId: string;
  kind: string;
  namespace: string;
  types: Record<string, { sent?: { version: string; nonce: string }; acked?: { version: string; nonce: string }; pending: boolean; lastNack?: { message: string } }>;
}

let clientCounter = 0;

/** gRPC xDS bootstrap JSON for one client (what the agent writes for a proxyless gRPC workload). */
export function grpcBootstrap(xdsAddress: string, nodeId: string, metadata: Record<string, unknown> = {}): string {
  return JSON.stringify({
    xds_servers: [{ server_uri: xdsAddress, channel_creds: [{ type: "insecure" }], server_features: ["xds_v3"] }],
    node: { id: nodeId, locality: {}, metadata: { NAMESPACE: "default", ...metadata } },
  });
}

/** An echo client on `xds:///HOST:PORT` with its own XdsClient (node id `nodeId`) talking to `xdsAddress`. */
export function xdsEchoClient(xdsAddress: string, target: string, metadata: Record<string, unknown> = {}): EchoClient & { nodeId: string } {
  const nodeId = `grpc-e2e-${process.pid}-${++clientCounter}`;
  return Object.assign(echoClient(`xds:///${target}`, { [BOOTSTRAP_OPTION]: grpcBootstrap(xdsAddress, nodeId, metadata) }), { nodeId });
}

/** Polls `check` until it returns a value other than undefined (see poll.ts), and says how long that took. */
export async function eventually<T>(what: string, timeoutMs: number, check: () => Promise<T | undefined>, intervalMs = 50): Promise<{ value: T; elapsedMs: number }> {
  const start = Date.now();
  const { value } = await until(what, async () => {
    const v = await check();
    return v === undefined ? undefined : { value: v };
  }, { timeoutMs, everyMs: intervalMs });
  return { value, elapsedMs: Date.now() - start };
}

/**
 * Collects a child's JSON log lines (winston's JSON format, one object a line) into `into`; a line that is not
 * JSON is kept as `{ message: line }`, so nothing the child says is lost.
 */
export function collectJsonLines(stream: NodeJS.ReadableStream, into: Record<string, unknown>[]): void {
  let buf = "";
  stream.on("data", (d: Buffer) => {
    buf += d.toString();
    let i;
    while ((i = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      try {
        into.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        into.push({ message: line });
      }
    }
  });
}

// ---- config documents ----

export function serviceEntry(o: { name: string; host: string; port: number; selector?: Record<string, string>; resolution?: string; endpoints?: { address: string; port?: number }[]; namespace?: string }): string {
  const lines = [
    "apiVersion: networking.istio.io/v1",
    "kind: ServiceEntry",
    "metadata:",
    `  name: ${o.name}`,
    `  namespace: ${o.namespace ?? "default"}`,
    "spec:",
    `  hosts: [${o.host}]`,
    "  location: MESH_INTERNAL",
    `  resolution: ${o.resolution ?? "STATIC"}`,
    "  ports:",
    `  - {number: ${o.port}, name: grpc, protocol: GRPC}`,
  ];
  if (o.selector) lines.push("  workloadSelector:", "    labels:", ...Object.entries(o.selector).map(([k, v]) => `      ${k}: ${v}`));
  if (o.endpoints) {
    lines.push("  endpoints:");
    for (const e of o.endpoints) lines.push(`  - address: ${e.address}`, ...(e.port ? [`    ports: {grpc: ${e.port}}`] : []));
  }
  return `${lines.join("\n")}\n`;
}

export function workloadEntry(o: { name: string; address: string; port: number; labels: Record<string, string>; namespace?: string }): string {
  return [
    "apiVersion: networking.istio.io/v1",
    "kind: WorkloadEntry",
    "metadata:",
    `  name: ${o.name}`,
    `  namespace: ${o.namespace ?? "default"}`,
    "spec:",
    `  address: ${o.address}`,
    `  ports: {grpc: ${o.port}}`,
    "  labels:",
    ...Object.entries(o.labels).map(([k, v]) => `    ${k}: ${v}`),
    "",
  ].join("\n");
}
