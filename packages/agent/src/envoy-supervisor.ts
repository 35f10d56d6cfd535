// Runs Envoy as a child process and keeps it running: restarts after any exit with capped exponential
// backoff (reset once a run has been stable), forwards the stop signal, and reports its state for /status.
import { spawn, type ChildProcess } from "node:child_process";
import { EventEmitter } from "node:events";
import { Backoff } from "./backoff.js";
import type { Logger } from "./log.js";

export type EnvoyState = "starting" | "running" | "backoff" | "stopping" | "stopped";

export interface SupervisorOptions {
  binary: string;
  args: string[];
  env?: NodeJS.ProcessEnv;
  minBackoffMs?: number;
  maxBackoffMs?: number;
  /** A run at least this long resets the backoff: a crash after a day is not a crash loop. */
  stableAfterMs?: number;
  /** How long to wait after the stop signal before SIGKILL (Envoy drains within --drain-time-s). */
  stopGraceMs?: number;
  logger: Logger;
}

export interface EnvoyStatus {
  state: EnvoyState;
  pid?: number;
  /** Process starts so far (1 = never restarted). */
  starts: number;
  lastExit?: { code: number | null; signal: NodeJS.Signals | null; at: string };
  nextStartAt?: string;
}

export class EnvoySupervisor extends EventEmitter {
  private child: ChildProcess | undefined;
  private state: EnvoyState = "stopped";
  private starts = 0;
  private lastExit: EnvoyStatus["lastExit"];
  private restartTimer: NodeJS.Timeout | undefined;
  private nextStartAt: number | undefined;
  private readonly backoff: Backoff;
  private exited: Promise<void> = Promise.resolve();

  constructor(private readonly opts: SupervisorOptions) {
    super();
    this.backoff = new Backoff(opts.minBackoffMs ?? 500, opts.maxBackoffMs ?? 30_000);
  }

  start(): void {
    if (this.state !== "stopped") return;
    this.spawnOnce();
  }

  status(): EnvoyStatus {
    const s: EnvoyStatus = { state: this.state, starts: this.starts };
    if (this.child?.pid !== undefined && (this.state === "running" || this.state === "stopping")) s.pid = this.child.pid;
    if (this.lastExit) s.lastExit = this.lastExit;
    if (this.state === "backoff" && this.nextStartAt) s.nextStartAt = new Date(this.nextStartAt).toISOString();
    return s;
  }

  private setState(s: EnvoyState): void {
    this.state = s;
    this.emit("state", s);
  }

  private spawnOnce(): void {
    this.setState("starting");
    this.starts++;
    const startedAt = Date.now();
    const child = spawn(this.opts.binary, this.opts.args, { stdio: ["ignore", "inherit", "inherit"], env: this.opts.env ?? process.env });
    this.child = child;
    this.exited = new Promise((resolve) => {
      let done = false;
      const onEnd = (code: number | null, signal: NodeJS.Signals | null, error?: Error) => {
        if (done) return;
        done = true;
        this.lastExit = { code, signal, at: new Date().toISOString() };
        if (error) this.opts.logger.error(`envoy could not be started (${this.opts.binary}): ${error.message}`);
        else this.opts.logger.warn(`envoy exited (${signal ? `signal ${signal}` : `code ${code}`}) after ${Date.now() - startedAt} ms`);
        this.emit("exit", this.lastExit);
        resolve();
        if (this.state === "stopping") {
          this.setState("stopped");
          return;
        }
        if (Date.now() - startedAt >= (this.opts.stableAfterMs ?? 60_000)) this.backoff.reset();
        const delay = this.backoff.next();
        this.nextStartAt = Date.now() + delay;
        this.setState("backoff");
        this.opts.logger.info(`restarting envoy in ${delay} ms`);
        this.restartTimer = setTimeout(() => {
          this.restartTimer = undefined;
          this.spawnOnce();
        }, delay);
      };
      child.once("error", (err) => onEnd(null, null, err));
      child.once("exit", (code, signal) => onEnd(code, signal));
    });
    child.once("spawn", () => {
      if (this.state === "starting") {
        this.setState("running");
        this.opts.logger.info(`envoy started (pid ${child.pid})`);
      }
    });
  }

  /** Sends `signal` (SIGTERM: Envoy drains and exits), SIGKILL after the grace period; resolves once it exited. */
  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    if (this.restartTimer) {
      clearTimeout(this.restartTimer);
      this.restartTimer = undefined;
    }
    if (this.state === "stopped") return;
    const running = this.state === "running" || this.state === "starting";
    this.setState("stopping");
    if (!running || !this.child) {
      this.setState("stopped");
      return;
    }
    const child = this.child;
    child.kill(signal);
    const kill = setTimeout(() => {
      this.opts.logger.warn(`envoy did not exit within ${this.opts.stopGraceMs ?? 10_000} ms of ${signal}; killing it`);
      child.kill("SIGKILL");
    }, this.opts.stopGraceMs ?? 10_000);
    await this.exited;
    clearTimeout(kill);
  }
}
