// `npm run bench [-- --quick]`: convergence, change propagation, memory and CPU of `vmpilot server` under
// simulated proxies. The server runs from its build in one process, the load generator in another.
import { type ChildProcess, fork, spawn } from "node:child_process";
import fs from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { TypeUrl } from "@vmpilot/xds/protos";
import type { LoadgenCommand, LoadgenEvent } from "./loadgen.js";
import type { ProxyStyle } from "./ads-client.js";
import { atomicWrite, isRouted, type MeshShape, routesYaml, serviceHost, workloadsYaml, writeMesh } from "./mesh-gen.js";
import { renderMarkdown, renderSvg } from "./report.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, "..");
const CLK_TCK = 100;

export interface Stats {
  p50: number;
  p99: number;
  max: number;
  n: number;
}

export function stats(xs: number[]): Stats {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p: number) => (s.length ? s[Math.min(s.length - 1, Math.ceil(p * s.length) - 1)]! : NaN);
  return { p50: round(q(0.5)), p99: round(q(0.99)), max: round(s.length ? s[s.length - 1]! : NaN), n: s.length };
}

function round(x: number): number {
  return Math.round(x * 10) / 10;
}

export interface RunResult {
  services: number;
  endpoints: number;
  proxies: number;
  style: ProxyStyle;
  connectStorm: Stats & { unconverged: number; seconds: number; bytesPerProxy: number };
  endpointChange: ChangeResult;
  routingChange?: ChangeResult;
  serverRssMb: { idle: number; connected: number; perProxyKb: number };
  /** The server's own view once connected and quiet: live JS heap and memory outside it (buffers), after a GC if it ran. */
  serverHeapMb?: { used: number; external: number };
  /** The same before any proxy connected: `serverHeapMb` minus this is what the connected proxies cost in heap. */
  serverHeapIdleMb?: { used: number; external: number };
  serverCpuMsConnectStorm: number;
  /** The load generator's CPU time for the storm: on 2 cores it competes with the server for the same CPUs. */
  loadgenCpuMsConnectStorm?: number;
}

/** One change's propagation: latency to each subscribed proxy, and whether anyone else was bothered. */
export type ChangeResult = Stats & { subscribed: number; missing: number; unaffectedPushed: number; bytesPerProxy: number; serverCpuMs: number };

async function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on("error", reject);
    s.listen(0, host, () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

async function procStat(pid: number): Promise<{ cpuMs: number; rssMb: number }> {
  const stat = (await fs.readFile(`/proc/${pid}/stat`, "utf8")).split(") ")[1]!.split(" ");
  const cpuMs = ((Number(stat[11]) + Number(stat[12])) * 1000) / CLK_TCK;
  const status = await fs.readFile(`/proc/${pid}/status`, "utf8");
  const rssKb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
  return { cpuMs, rssMb: round(rssKb / 1024) };
}

/** Live heap and external memory from the server's Prometheus metrics (prom-client's defaults). */
async function heapOf(httpAddr: string): Promise<{ used: number; external: number } | undefined> {
  try {
    const text = await (await fetch(`http://${httpAddr}/metrics`)).text();
    const metric = (name: string): number | undefined => {
      const m = new RegExp(`^vmpilot_${name}(?:\\{[^}]*\\})? ([0-9.e+]+)$`, "m").exec(text);
      return m ? round(Number(m[1]) / 2 ** 20) : undefined;
    };
    const used = metric("nodejs_heap_size_used_bytes");
    const external = metric("nodejs_external_memory_bytes");
    return used !== undefined && external !== undefined ? { used, external } : undefined;
  } catch {
    return undefined;
  }
}

async function waitReady(httpAddr: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      const r = await fetch(`http://${httpAddr}/ready`);
      if (r.status === 200) return;
    } catch {
      /* not up yet */
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`server at ${httpAddr} not ready after ${timeoutMs} ms`);
}

class Loadgen {
  private readonly child: ChildProcess;
  private readonly waiters: ((e: LoadgenEvent) => void)[] = [];
  constructor() {
    // VMPILOT_BENCH_LOADGEN_NODE_ARGS: extra node flags for the load generator (e.g. "--cpu-prof --cpu-prof-dir=...").
    const nodeArgs = (process.env.VMPILOT_BENCH_LOADGEN_NODE_ARGS ?? "").split(/\s+/).filter(Boolean);
    this.child = fork(path.join(here, "loadgen.ts"), [], {
      // A young generation large enough for the responses in flight, and GC on the load generator's own thread: its
      // parallel GC helpers otherwise take the second core from the server (loadgen CPU in a K=1,000 storm: 13-19 s
      // -> ~10 s).
      execArgv: ["--conditions=vmpilot-source", "--import", "tsx", "--max-old-space-size=8192", "--max-semi-space-size=32", "--single-threaded-gc", ...nodeArgs],
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    this.child.on("message", (e: LoadgenEvent) => this.waiters.shift()?.(e));
  }
  get pid(): number {
    return this.child.pid!;
  }
  ask<E extends LoadgenEvent["event"]>(c: LoadgenCommand): Promise<Extract<LoadgenEvent, { event: E }>> {
    return new Promise((resolve) => {
      this.waiters.push((e) => resolve(e as Extract<LoadgenEvent, { event: E }>));
      this.child.send(c);
    });
  }
}

async function measureChange(
  lg: Loadgen,
  serverPid: number,
  typeUrl: string,
  names: string[],
  write: () => Promise<void>,
  settleMs: number,
): Promise<ChangeResult> {
  await lg.ask<"armed">({ cmd: "arm", typeUrl, names });
  // Let the stream go quiet so the CPU figure is the change's alone.
  await new Promise((r) => setTimeout(r, settleMs));
  const before = await procStat(serverPid);
  const t0 = performance.timeOrigin + performance.now();
  await write();
  const got = await lg.ask<"collected">({ cmd: "collect", t0, timeoutMs: 30_000 });
  const after = await procStat(serverPid);
  return {
    ...stats(got.latencies),
    subscribed: got.subscribed,
    missing: got.missing,
    unaffectedPushed: got.unaffectedPushed,
    bytesPerProxy: got.subscribed ? Math.round(got.bytes / got.subscribed) : 0,
    serverCpuMs: after.cpuMs - before.cpuMs,
  };
}

export interface RunOptions {
  /** How to start the server (argv before `server ...`); default: the build, `node packages/xds/dist/cli.js`. */
  serverCommand?: string[];
  /** Quiet time before each measured change, so its CPU figure is its own (default 1500 ms). */
  settleMs?: number;
}

/** One configuration: a generated mesh, the server in its own process, K simulated proxies in another. */
export async function runOne(shape: MeshShape, proxies: number, style: ProxyStyle, opts: RunOptions = {}): Promise<RunResult> {
  const settleMs = opts.settleMs ?? 1500;
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "vmpilot-bench-"));
  const meshDir = path.join(dir, "mesh");
  await writeMesh(meshDir, shape);
  const xdsAddr = `127.0.0.1:${await freePort("127.0.0.1")}`;
  const httpAddr = `127.0.0.1:${await freePort("127.0.0.1")}`;
  const secureAddr = `127.0.0.1:${await freePort("127.0.0.1")}`;
  // VMPILOT_BENCH_SERVER_NODE_ARGS: extra node flags for the server, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof".
  const nodeArgs = (process.env.VMPILOT_BENCH_SERVER_NODE_ARGS ?? "").split(/\s+/).filter(Boolean);
  const [command, ...commandArgs] = opts.serverCommand ?? [process.execPath, ...nodeArgs, path.join(repo, "packages/xds/dist/cli.js")];
  const server = spawn(
    command!,
    [...commandArgs, "server", "--config-dir", meshDir, "--xds-addr", xdsAddr, "--http-addr", httpAddr, "--secure-addr", secureAddr, "--state-dir", path.join(dir, "state")],
    { stdio: ["ignore", "ignore", "inherit"], env: { ...process.env, VMPILOT_LOG_LEVEL: "warn" } },
  );
  const lg = new Loadgen();
  try {
    await waitReady(httpAddr, 120_000);
    await new Promise((r) => setTimeout(r, 500));
    const idle = await procStat(server.pid!);
    const idleHeap = await heapOf(httpAddr);
    const lgBefore = await procStat(lg.pid);
    const targets = Array.from({ length: Math.min(shape.services, 50) }, (_, i) => `${serviceHost(i, shape)}:8080`);
    const storm = await lg.ask<"converged">({ cmd: "connect", address: xdsAddr, style, count: proxies, namespaces: shape.namespaces, targets, timeoutMs: 120_000 });
    const connected = await procStat(server.pid!);
    const lgAfter = await procStat(lg.pid);
    const heap = await heapOf(httpAddr);
    const s = stats(storm.ms);
    const ws = path.join(meshDir, "ns-1", "svc-1-workloads.yaml");
    const host1 = serviceHost(1, shape);
    const eds1 = ["", "v1", "v2"].map((subset) => `outbound|8080|${subset}|${host1}`);
    const endpointChange = await measureChange(lg, server.pid!, TypeUrl.ClusterLoadAssignment, eds1, () => atomicWrite(ws, workloadsYaml(1, shape, 1)), settleMs);
    let routingChange: RunResult["routingChange"];
    const routed = Array.from({ length: shape.services }, (_, i) => i).find((i) => isRouted(i, shape));
    if (routed !== undefined && style !== "grpc") {
      const rf = path.join(meshDir, `ns-${routed % shape.namespaces}`, `svc-${routed}-routes.yaml`);
      routingChange = await measureChange(lg, server.pid!, TypeUrl.RouteConfiguration, ["8080"], () => atomicWrite(rf, routesYaml(routed, shape, 70)), settleMs);
    }
    return {
      services: shape.services,
      endpoints: shape.endpoints,
      proxies,
      style,
      connectStorm: { ...s, unconverged: storm.unconverged, seconds: round(s.max / 1000), bytesPerProxy: Math.round(storm.bytes / proxies) },
      endpointChange,
      ...(routingChange ? { routingChange } : {}),
      serverRssMb: { idle: idle.rssMb, connected: connected.rssMb, perProxyKb: Math.round(((connected.rssMb - idle.rssMb) * 1024) / proxies) },
      serverCpuMsConnectStorm: connected.cpuMs - idle.cpuMs,
      loadgenCpuMsConnectStorm: lgAfter.cpuMs - lgBefore.cpuMs,
      ...(heap ? { serverHeapMb: heap } : {}),
      ...(idleHeap ? { serverHeapIdleMb: idleHeap } : {}),
    };
  } finally {
    await lg.ask<"closed">({ cmd: "close" }).catch(() => undefined);
    server.kill("SIGTERM");
    await new Promise((r) => server.once("exit", r));
    await fs.rm(dir, { recursive: true, force: true });
  }
}

/** The benchmark's mesh shape for S services: 5 endpoints each, 10% routed, 10 namespaces. */
export function benchMesh(services: number): MeshShape {
  return { services, endpoints: services * 5, routedShare: 0.1, namespaces: 10 };
}

async function main(): Promise<void> {
  const quick = process.argv.includes("--quick");
  // `--render NAME`: rewrite bench/results/NAME.{md,svg} from NAME.json (after a change to report.ts).
  if (process.argv.includes("--render")) {
    const name = process.argv[process.argv.indexOf("--render") + 1] ?? "full";
    const out = path.join(repo, "bench", "results");
    const { meta, results } = JSON.parse(await fs.readFile(path.join(out, `${name}.json`), "utf8")) as { meta: Record<string, unknown>; results: RunResult[] };
    await fs.writeFile(path.join(out, `${name}.md`), renderMarkdown(meta, results));
    await fs.writeFile(path.join(out, `${name}.svg`), renderSvg(results));
    return;
  }
  const plan: { shape: MeshShape; proxies: number; style: ProxyStyle }[] = [];
  const mesh = benchMesh;
  if (quick) {
    for (const s of [50, 200]) plan.push({ shape: mesh(s), proxies: 100, style: "envoy-sotw" });
    for (const k of [50, 200]) plan.push({ shape: mesh(100), proxies: k, style: "envoy-sotw" });
    plan.push({ shape: mesh(100), proxies: 100, style: "envoy-delta" });
    plan.push({ shape: mesh(100), proxies: 100, style: "grpc" });
  } else {
    for (const s of [100, 300, 1000]) plan.push({ shape: mesh(s), proxies: 1000, style: "envoy-sotw" });
    for (const k of [250, 500, 2000]) plan.push({ shape: mesh(1000), proxies: k, style: "envoy-sotw" });
    plan.push({ shape: mesh(1000), proxies: 1000, style: "envoy-delta" });
    plan.push({ shape: mesh(1000), proxies: 1000, style: "grpc" });
  }
  // `--only S,K,STYLE`: one configuration (for profiling); results are printed, not written.
  const only = process.argv[process.argv.indexOf("--only") + 1];
  if (process.argv.includes("--only") && only) {
    const [s, k, style] = only.split(",");
    plan.splice(0, plan.length, { shape: mesh(Number(s)), proxies: Number(k), style: (style ?? "envoy-sotw") as ProxyStyle });
  }
  const results: RunResult[] = [];
  for (const p of plan) {
    process.stderr.write(`bench: S=${p.shape.services} E=${p.shape.endpoints} K=${p.proxies} ${p.style} ... `);
    const r = await runOne(p.shape, p.proxies, p.style);
    process.stderr.write(`storm ${r.connectStorm.seconds}s, endpoint change p99 ${r.endpointChange.p99} ms, rss ${r.serverRssMb.connected} MB\n`);
    results.push(r);
  }
  if (process.argv.includes("--only")) {
    process.stdout.write(JSON.stringify(results, null, 2) + "\n");
    return;
  }
  const out = path.join(repo, "bench", "results");
  await fs.mkdir(out, { recursive: true });
  const name = quick ? "quick" : "full";
  const meta = { date: new Date().toISOString(), node: process.version, cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model, memGb: Math.round(os.totalmem() / 2 ** 30) };
  await fs.writeFile(path.join(out, `${name}.json`), JSON.stringify({ meta, results }, null, 2) + "\n");
  await fs.writeFile(path.join(out, `${name}.md`), renderMarkdown(meta, results));
  await fs.writeFile(path.join(out, `${name}.svg`), renderSvg(results));
  process.stdout.write(renderMarkdown(meta, results));
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
