// Processes on the testbed's hosts: `ip netns exec NS node ...` with the repository's TypeScript sources (the
// same `--conditions=vmpilot-source --import tsx` that mocha uses, so no build is needed and what runs is what
// the tests typecheck). `ip netns exec` execs the command, so the child's pid is node's own and signals reach it.
import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";

export const REPO_ROOT = fileURLToPath(new URL("../../", import.meta.url));
export const VMPILOT_CLI = "packages/xds/src/cli.ts";
export const AGENT_CLI = "packages/agent/src/cli.ts";
export const WORKLOAD = "test/e2e/workload.ts";
export const CONSUL = "test/e2e/consul.ts";

const NODE_TS = ["--conditions=vmpilot-source", "--import", "tsx"];
const KEEP_LINES = 400;

export interface SpawnOptions {
  /** Namespace to run in; undefined = the test's own (for commands that need no network, e.g. token create). */
  netns?: string;
  env?: Record<string, string>;
  /** Label in failure output. */
  name: string;
}

/** A node program on a host, with its output kept for assertions and for the failure report. */
export class HostProcess {
  readonly child: ChildProcess;
  /** Every stdout line (workloads report JSON results there). */
  readonly stdout: string[] = [];
  /** The last stderr lines (logs). */
  readonly stderr: string[] = [];
  exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  private readonly exited: Promise<void>;
  private readonly listeners = new Set<(line: string) => void>();

  constructor(
    readonly opts: SpawnOptions,
    script: string,
    args: string[],
  ) {
    const argv = [process.execPath, ...NODE_TS, script, ...args];
    const [cmd, ...rest] = opts.netns ? ["ip", "netns", "exec", opts.netns, ...argv] : argv;
    this.child = spawn(cmd!, rest, {
      cwd: REPO_ROOT,
      env: { ...process.env, VMPILOT_LOG_FORMAT: "json", ...opts.env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.exited = new Promise((resolve) =>
      this.child.once("exit", (code, signal) => {
        this.exit = { code, signal };
        resolve();
      }),
    );
    lines(this.child.stdout!, (l) => {
      this.stdout.push(l);
      for (const f of this.listeners) f(l);
    });
    lines(this.child.stderr!, (l) => {
      this.stderr.push(l);
      if (this.stderr.length > KEEP_LINES) this.stderr.shift();
    });
  }

  onLine(f: (line: string) => void): void {
    this.listeners.add(f);
  }

  get running(): boolean {
    return this.exit === undefined;
  }

  /** Resolves with the exit status once the process ended (after `signal`, then SIGKILL after `graceMs`). */
  async stop(signal: NodeJS.Signals = "SIGTERM", graceMs = 5000): Promise<HostProcess["exit"]> {
    if (this.running) {
      this.child.kill(signal);
      const timer = setTimeout(() => this.child.kill("SIGKILL"), graceMs);
      await this.exited;
      clearTimeout(timer);
    }
    return this.exit;
  }

  whenExited(): Promise<void> {
    return this.exited;
  }

  /** What to print when a test fails. */
  report(): string {
    const status = this.exit ? `exited (code ${this.exit.code}, signal ${this.exit.signal})` : "running";
    const tail = (xs: string[]) => xs.slice(-40).map((l) => `    ${l}`).join("\n");
    return `--- ${this.opts.name}: ${status}\n  stderr (last lines):\n${tail(this.stderr)}\n  stdout (last lines):\n${tail(this.stdout)}`;
  }
}

function lines(stream: NodeJS.ReadableStream, f: (line: string) => void): void {
  let buf = "";
  stream.setEncoding("utf8");
  stream.on("data", (chunk: string) => {
    buf += chunk;
    let i: number;
    while ((i = buf.indexOf("\n")) >= 0) {
      f(buf.slice(0, i));
      buf = buf.slice(i + 1);
    }
  });
}

/** Runs a node program to completion; resolves with its stdout, rejects with its stderr on a non-zero exit. */
export async function runToCompletion(opts: SpawnOptions, script: string, args: string[], timeoutMs = 30_000): Promise<string> {
  const p = new HostProcess(opts, script, args);
  const timer = setTimeout(() => p.child.kill("SIGKILL"), timeoutMs);
  await p.whenExited();
  clearTimeout(timer);
  if (p.exit?.code !== 0) throw new Error(`${opts.name} failed:\n${p.report()}`);
  return p.stdout.join("\n");
}

/**
 * An HTTP request from inside a host (the control plane's HTTP views and Consul are on cp's loopback, out of the
 * test's reach), by a one-line node child so that no request ever leaves the namespaces.
 */
export async function httpIn(netns: string, url: string, init: { method?: string; body?: unknown } = {}): Promise<{ status: number; body: string }> {
  const req = { method: init.method ?? "GET", ...(init.body !== undefined ? { body: JSON.stringify(init.body) } : {}) };
  const code = `fetch(${JSON.stringify(url)}, ${JSON.stringify(req)}).then(async (r) => process.stdout.write(JSON.stringify({ status: r.status, body: await r.text() })), (e) => { process.stderr.write(String(e.cause ?? e)); process.exit(1); })`;
  const child = spawn("ip", ["netns", "exec", netns, process.execPath, "-e", code], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  child.stdout.on("data", (c) => (out += c));
  child.stderr.on("data", (c) => (err += c));
  const status = await new Promise<number | null>((resolve) => child.on("exit", resolve));
  if (status !== 0) throw new Error(`${req.method} ${url} in ${netns}: ${err.trim() || `exit ${status}`}`);
  return JSON.parse(out) as { status: number; body: string };
}
