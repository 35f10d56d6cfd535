// The two reads the source needs, over the `consul` npm client, returning body plus the blocking-query headers;
// and the agent writes the auto-registration publisher makes (service register/deregister, TTL check updates).
import { EventEmitter } from "node:events";
import { readFileSync } from "node:fs";
import { Agent as HttpAgent } from "node:http";
import { Agent as HttpsAgent } from "node:https";
import Consul from "consul";
import { consulDuration, type ResolvedConsulOptions } from "./config.js";
import type { ConsulHealthEntry } from "./convert.js";
import type { QueryMeta, QueryResult } from "./watch.js";

/** An agent service registration as the `consul` client takes it (its keys are Consul's, any case). */
export interface AgentServiceRegistration {
  ID: string;
  Name: string;
  Address: string;
  Port: number;
  Tags: string[];
  Meta: Record<string, string>;
  Checks: { CheckID: string; Name: string; Notes?: string; TTL: string; Status: string; DeregisterCriticalServiceAfter?: string }[];
}

/** `/v1/catalog/services`: service name -> tags. */
export type CatalogServices = Record<string, string[]>;

/** Consul answered with an HTTP error (as opposed to a connection failure). */
export class ConsulHttpError extends Error {
  constructor(
    readonly status: number,
    readonly body: string,
    what: string,
  ) {
    super(`${what}: HTTP ${status}${body ? `: ${body}` : ""}`);
    this.name = "ConsulHttpError";
  }
}

/** A write given up because its caller stopped (not an answer from Consul, nor a failure to report). */
export class ConsulAbortedError extends Error {
  constructor(what: string) {
    super(`${what}: aborted`);
    this.name = "ConsulAbortedError";
  }
}

export function consulStatusCode(err: unknown): number | undefined {
  return err instanceof ConsulHttpError ? err.status : undefined;
}

/** The client's errors name the call, not the answer; keep Consul's own words ("ACL not found", "rpc error: ..."). */
function describe(err: unknown, what: string): unknown {
  const res = (err as { response?: { statusCode?: unknown; body?: unknown } } | undefined)?.response;
  if (!res || typeof res.statusCode !== "number") return err;
  const raw = res.body;
  const text = Buffer.isBuffer(raw) ? raw.toString("utf8") : typeof raw === "string" ? raw : raw === undefined ? "" : JSON.stringify(raw);
  return new ConsulHttpError(res.statusCode, text.trim().slice(0, 300), what);
}

export class ConsulHttp {
  private readonly consul: Consul;
  private readonly agent: HttpAgent | HttpsAgent;

  constructor(
    private readonly opts: ResolvedConsulOptions,
    private readonly token: () => string | undefined,
  ) {
    const url = new URL(opts.address);
    const tls = opts.tls;
    const tlsOptions =
      url.protocol === "https:"
        ? {
            ca: tls?.caFile ? readFileSync(tls.caFile) : undefined,
            cert: tls?.certFile ? readFileSync(tls.certFile) : undefined,
            key: tls?.keyFile ? readFileSync(tls.keyFile) : undefined,
            servername: tls?.serverName,
          }
        : {};
    // Our own agent so keep-alive sockets are ours to close on stop, and TLS material is bound to it.
    this.agent = url.protocol === "https:" ? new HttpsAgent({ keepAlive: true, ...tlsOptions }) : new HttpAgent({ keepAlive: true });
    // baseUrl, agent and the TLS options are documented constructor options of the client (passed on to papi)
    // that its type declarations leave out.
    const clientOptions = { baseUrl: `${opts.address}/v1`, agent: this.agent, ...tlsOptions } as unknown as ConstructorParameters<typeof Consul>[0];
    this.consul = new Consul(clientOptions);
  }

  destroy(): void {
    this.agent.destroy();
  }

  catalogServices(index: number, signal: AbortSignal): Promise<QueryResult<CatalogServices>> {
    return this.read("GET /v1/catalog/services", (o) => this.consul.catalog.service.list(o as never), {}, index, signal) as Promise<
      QueryResult<CatalogServices>
    >;
  }

  /** All instances, whatever their health (`passing=false`): health travels with the endpoint. */
  healthService(name: string, index: number, signal: AbortSignal): Promise<QueryResult<ConsulHealthEntry[]>> {
    const what = `GET /v1/health/service/${name}`;
    return this.read(what, (o) => this.consul.health.service(o as never), { service: name, passing: false }, index, signal) as Promise<
      QueryResult<ConsulHealthEntry[]>
    >;
  }

  /** `PUT /v1/agent/service/register` (needs `service:write` on the service name). */
  async registerService(registration: AgentServiceRegistration, signal?: AbortSignal): Promise<void> {
    await this.write("PUT /v1/agent/service/register", (o) => this.consul.agent.service.register(o as never), { ...registration }, signal);
  }

  /** `PUT /v1/agent/service/deregister/:id`; its checks go with it. */
  async deregisterService(id: string, signal?: AbortSignal): Promise<void> {
    await this.write(`PUT /v1/agent/service/deregister/${id}`, (o) => this.consul.agent.service.deregister(o as never), { id }, signal);
  }

  /** `PUT /v1/agent/check/pass|warn|fail/:id?note=`: sets a TTL check's status and output, and restarts its TTL. */
  async updateTtlCheck(id: string, status: "passing" | "warning" | "critical", note: string, signal?: AbortSignal): Promise<void> {
    const check = this.consul.agent.check;
    const call = status === "passing" ? check.pass : status === "warning" ? check.warn : check.fail;
    await this.write(`PUT /v1/agent/check/${status === "passing" ? "pass" : status === "warning" ? "warn" : "fail"}/${id}`, (o) => call.call(check, o as never), { id, note }, signal);
  }

  private async write(what: string, call: (options: Record<string, unknown>) => Promise<unknown>, base: Record<string, unknown>, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) throw new ConsulAbortedError(what);
    // As in read(): the client aborts a request when its ctx emits `cancel`.
    const ctx = new EventEmitter();
    const cancel = () => ctx.emit("cancel");
    signal?.addEventListener("abort", cancel, { once: true });
    const options: Record<string, unknown> = { ...base, ctx, timeout: this.opts.requestTimeout };
    const token = this.token();
    if (token) options.token = token;
    try {
      await call(options);
    } catch (err) {
      if (signal?.aborted) throw new ConsulAbortedError(what);
      throw describe(err, what);
    } finally {
      signal?.removeEventListener("abort", cancel);
    }
  }

  private async read(
    what: string,
    call: (options: Record<string, unknown>) => Promise<unknown>,
    base: Record<string, unknown>,
    index: number,
    signal: AbortSignal,
  ): Promise<QueryResult<unknown>> {
    if (signal.aborted) throw new Error("aborted");
    // The client aborts a request when its ctx emits `cancel`, and returns [response, body] with includeResponse.
    const ctx = Object.assign(new EventEmitter(), { includeResponse: true });
    const cancel = () => ctx.emit("cancel");
    signal.addEventListener("abort", cancel, { once: true });
    const o = this.opts;
    const blocking = index > 0;
    const options: Record<string, unknown> = {
      ...base,
      ctx,
      // Consul adds up to wait/16 of jitter to a blocking query; the rest is transfer time.
      timeout: (blocking ? o.wait + o.wait / 16 : 0) + o.requestTimeout,
    };
    if (blocking) {
      options.index = String(index);
      options.wait = consulDuration(o.wait);
    }
    if (o.datacenter) options.dc = o.datacenter;
    if (o.stale) options.stale = true;
    const token = this.token();
    if (token) options.token = token;
    try {
      const [res, body] = (await call(options)) as [{ headers: Record<string, string | string[] | undefined> }, unknown];
      return { body, meta: queryMeta(res.headers) };
    } catch (err) {
      throw describe(err, what);
    } finally {
      signal.removeEventListener("abort", cancel);
    }
  }
}

function header(h: Record<string, string | string[] | undefined>, name: string): string | undefined {
  const v = h[name];
  return Array.isArray(v) ? v[0] : v;
}

export function queryMeta(h: Record<string, string | string[] | undefined>): QueryMeta {
  const index = Number(header(h, "x-consul-index"));
  if (!Number.isFinite(index)) throw new Error("Consul answered without X-Consul-Index: not a blocking-capable endpoint");
  return {
    index,
    knownLeader: header(h, "x-consul-knownleader") !== "false",
    lastContact: Number(header(h, "x-consul-lastcontact") ?? 0) || 0,
    filteredByAcls: header(h, "x-consul-results-filtered-by-acls") === "true",
  };
}
