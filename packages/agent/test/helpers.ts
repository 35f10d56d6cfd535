// Real peers for the agent's tests: the control plane's CA (in-process on 127.0.0.1:0 with a temp state dir),
// a stand-in for the envoy binary, and polling.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import winston from "winston";
import { loadMeshCa, type MeshCa } from "@vmpilot/xds/ca/index";
import { memoryLogger } from "../src/log.js";

export function tmpDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/** Polls `fn` until it returns a truthy value; fails with `what` after the deadline. */
export async function until<T>(what: string, fn: () => T | Promise<T>, timeoutMs = 15_000, everyMs = 50): Promise<NonNullable<Awaited<T>>> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v as NonNullable<Awaited<T>>;
    } catch (e) {
      lastError = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${lastError ? ` (last error: ${(lastError as Error).message})` : ""}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export interface RunningCa {
  ca: MeshCa;
  address: string;
  rootPem: string;
  stateDir: string;
  close(): Promise<void>;
}

/** The real mesh CA on the secure port's credentials, as `vmpilot server` runs it. */
export async function startCa(opts: { leafTtlMs?: number } = {}): Promise<RunningCa> {
  const stateDir = tmpDir("vmpilot-agent-ca-");
  const { logger } = quietWinston();
  const ca = await loadMeshCa({ stateDir, trustDomain: "cluster.local", ipAddresses: ["127.0.0.1"], logger, ...(opts.leafTtlMs ? { leafTtlMs: opts.leafTtlMs } : {}) });
  const server = new grpc.Server();
  ca.addTo(server);
  const port = await new Promise<number>((resolve, reject) => server.bindAsync("127.0.0.1:0", ca.secure.credentials, (e, p) => (e ? reject(e) : resolve(p))));
  return {
    ca,
    address: `127.0.0.1:${port}`,
    rootPem: ca.authority.rootCertPem,
    stateDir,
    async close() {
      ca.close();
      await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
      server.forceShutdown();
      fs.rmSync(stateDir, { recursive: true, force: true });
    },
  };
}

function quietWinston(): { logger: winston.Logger } {
  return { logger: winston.createLogger({ level: "error", silent: true, transports: [new winston.transports.Console()] }) };
}

/**
 * A STAND-IN for the envoy binary (Envoy cannot be installed on this machine): a tiny Node script that records
 * its pid and arguments (and the signal that stops it) to a log file and stays up until signalled.
 */
export function writeEnvoyStandIn(dir: string): { binary: string; log: string; events(): { pid: number; args?: string[]; signal?: string }[] } {
  const binary = path.join(dir, "envoy-stand-in");
  const log = path.join(dir, "envoy-stand-in.log");
  fs.writeFileSync(
    binary,
    `#!${process.execPath}
const fs = require("fs");
const log = ${JSON.stringify(log)};
fs.appendFileSync(log, JSON.stringify({ pid: process.pid, args: process.argv.slice(2) }) + "\\n");
process.on("SIGTERM", () => { fs.appendFileSync(log, JSON.stringify({ pid: process.pid, signal: "SIGTERM" }) + "\\n"); process.exit(0); });
setInterval(() => {}, 1 << 30);
`,
    { mode: 0o755 },
  );
  return {
    binary,
    log,
    events: () =>
      fs.existsSync(log)
        ? fs.readFileSync(log, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l))
        : [],
  };
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export { memoryLogger };
