// Application readiness probes with the semantics of a WorkloadGroup's `probe` (Kubernetes readiness):
// httpGet (2xx/3xx = success), tcpSocket (connect = success), exec (exit 0 = success); not ready until
// `successThreshold` consecutive successes, not ready again after `failureThreshold` consecutive failures.
import { execFile } from "node:child_process";
import { EventEmitter } from "node:events";
import http from "node:http";
import https from "node:https";
import net from "node:net";
import type { ProbeConfig } from "./config.js";

export interface ProbeResult {
  ok: boolean;
  /** What happened, for /status and logs ("HTTP 200", "connect ECONNREFUSED", "exit 1"). */
  detail: string;
}

function httpProbe(p: NonNullable<ProbeConfig["httpGet"]>, timeoutMs: number): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const headers: Record<string, string> = { "user-agent": "vmpilot-agent-probe" };
    for (const h of p.httpHeaders) headers[h.name] = h.value;
    const mod = p.scheme === "HTTPS" ? https : http;
    // Like the kubelet, an HTTPS probe does not verify the application's certificate.
    const req = mod.request({ host: p.host, port: p.port, path: p.path, method: "GET", headers, timeout: timeoutMs, rejectUnauthorized: false }, (res) => {
      res.resume();
      const code = res.statusCode ?? 0;
      resolve({ ok: code >= 200 && code < 400, detail: `HTTP ${code}` });
    });
    req.on("timeout", () => req.destroy(new Error(`timed out after ${timeoutMs} ms`)));
    req.on("error", (err) => resolve({ ok: false, detail: `GET ${p.path}: ${(err as NodeJS.ErrnoException).code ?? err.message}` }));
    req.end();
  });
}

function tcpProbe(p: NonNullable<ProbeConfig["tcpSocket"]>, timeoutMs: number): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const sock = net.connect({ host: p.host, port: p.port });
    const done = (r: ProbeResult) => {
      sock.destroy();
      resolve(r);
    };
    sock.setTimeout(timeoutMs, () => done({ ok: false, detail: `connect timed out after ${timeoutMs} ms` }));
    sock.once("connect", () => done({ ok: true, detail: `connected to ${p.host}:${p.port}` }));
    sock.once("error", (err) => done({ ok: false, detail: `connect ${(err as NodeJS.ErrnoException).code ?? err.message}` }));
  });
}

function execProbe(p: NonNullable<ProbeConfig["exec"]>, timeoutMs: number): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const [cmd, ...args] = p.command;
    execFile(cmd!, args, { timeout: timeoutMs, killSignal: "SIGKILL" }, (err) => {
      if (!err) return resolve({ ok: true, detail: "exit 0" });
      const e = err as NodeJS.ErrnoException & { killed?: boolean; code?: number | string };
      if (e.killed) return resolve({ ok: false, detail: `timed out after ${timeoutMs} ms` });
      resolve({ ok: false, detail: typeof e.code === "number" ? `exit ${e.code}` : `${cmd}: ${e.code ?? e.message}` });
    });
  });
}

/** Runs the configured handler once. */
export function probeOnce(p: ProbeConfig): Promise<ProbeResult> {
  if (p.httpGet) return httpProbe(p.httpGet, p.timeoutMs);
  if (p.tcpSocket) return tcpProbe(p.tcpSocket, p.timeoutMs);
  if (p.exec) return execProbe(p.exec, p.timeoutMs);
  return Promise.resolve({ ok: false, detail: "no probe handler configured" });
}

export interface ProbeStatus {
  ready: boolean;
  consecutiveSuccesses: number;
  consecutiveFailures: number;
  last?: ProbeResult & { at: string };
}

/** Probes periodically; emits `result` (ready, result) after every probe and `change` (ready) when readiness flips. */
export class Prober extends EventEmitter {
  private ready = false;
  private successes = 0;
  private failures = 0;
  private last: ProbeStatus["last"];
  private timer: NodeJS.Timeout | undefined;
  private stopped = true;

  constructor(
    private readonly probe: ProbeConfig,
    private readonly run: (p: ProbeConfig) => Promise<ProbeResult> = probeOnce,
  ) {
    super();
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.schedule(this.probe.initialDelayMs);
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  status(): ProbeStatus {
    const s: ProbeStatus = { ready: this.ready, consecutiveSuccesses: this.successes, consecutiveFailures: this.failures };
    if (this.last) s.last = this.last;
    return s;
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => void this.tick(), ms);
  }

  private async tick(): Promise<void> {
    const r = await this.run(this.probe);
    if (this.stopped) return;
    this.record(r);
    this.schedule(this.probe.periodMs);
  }

  /** Applies one result to the thresholds (public for callers that probe on their own schedule). */
  record(r: ProbeResult): void {
    this.last = { ...r, at: new Date().toISOString() };
    if (r.ok) {
      this.successes++;
      this.failures = 0;
      if (!this.ready && this.successes >= this.probe.successThreshold) this.flip(true);
    } else {
      this.failures++;
      this.successes = 0;
      if (this.ready && this.failures >= this.probe.failureThreshold) this.flip(false);
    }
    this.emit("result", this.ready, this.last);
  }

  private flip(ready: boolean): void {
    this.ready = ready;
    this.emit("change", ready, this.last);
  }
}
