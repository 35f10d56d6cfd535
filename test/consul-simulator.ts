// Consul HTTP API simulator: a stand-in for a Consul agent, used because no real `consul` binary can be installed on
// this machine (no Debian package, no npm/PyPI package ships one, and `go install` refuses Consul's module because
// its go.mod has replace directives). The suites run the same cases against a real agent when one is on PATH.
//
// It implements what the ConsulSource and the tests use, with Consul's semantics:
// - GET  /v1/catalog/services, /v1/catalog/service/:name, /v1/health/service/:name (?passing), /v1/status/leader,
//        /v1/agent/self
// - PUT  /v1/agent/service/register, /v1/agent/service/deregister/:id, /v1/agent/check/pass|warn|fail/:id,
//        /v1/agent/check/update/:id, /v1/catalog/register, /v1/catalog/deregister
// - blocking queries: `?index=N&wait=D` hold the request until the endpoint's index passes N or the wait (default 5m,
//   capped at 10m, plus up to wait/16 of jitter as Consul adds) elapses; an index above the current one also waits
//   (Consul's rpc.go does too: only a change or the timeout ends it);
// - per-endpoint indexes as Consul's state store keeps them: every write is a raft entry (the raft index moves),
//   the catalog service list's index moves only when a service registration changes, a service's health index only
//   when one of its instances, their checks or their nodes change; identical re-registrations change nothing;
// - headers X-Consul-Index, X-Consul-KnownLeader, X-Consul-LastContact, X-Consul-Effective-Consistency,
//   X-Consul-Default-ACL-Policy, X-Consul-Results-Filtered-By-ACLs; `?stale`, `?dc=` (another dc -> 500
//   "No path to datacenter");
// - ACLs (when `aclToken` is set): a wrong token -> 403 "ACL not found"; no token -> reads filtered to nothing,
//   writes 403 "Permission denied" (default-deny with an anonymous token that may read nothing);
// - test hooks: stop()/start() the listener on the same port (state kept, like an agent that became unreachable while
//   the servers kept the catalog), failWith(500), resetIndex() (indexes go backwards, as after a snapshot restore),
//   touchService() (index moves, content does not), setKnownLeader(false) (leader lost), and a request log;
// - agent TTL checks as Consul's agent runs them (agent/checks/check.go CheckTTL, agent.go reapServicesInternal):
//   a TTL check registered with a service starts with the given Status (default critical; a re-registration keeps
//   the status and output the check had, as Consul's agent restores them) and turns critical with
//   output "TTL expired" when no pass/warn/fail/update arrives within its TTL (each update restarts the timer);
//   a check registered with DeregisterCriticalServiceAfter gets its service deregistered once it has been critical
//   longer than that, floored at `check_deregister_interval_min` (1 m in Consul) and noticed by a reaper that runs
//   every `check_reap_interval` (30 s in Consul). Both are Consul's non-user-configurable settings; the simulator
//   takes them as options so tests can shorten them, and uses Consul's values by default. The timers keep running
//   while the listener is stopped (the agent is alive, only unreachable); close() ends them.
import { EventEmitter } from "node:events";
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo } from "node:net";

export type CheckStatus = "passing" | "warning" | "critical";

interface SimNode {
  ID: string;
  Node: string;
  Address: string;
  Datacenter: string;
  TaggedAddresses: Record<string, string>;
  Meta: Record<string, string>;
  CreateIndex: number;
  ModifyIndex: number;
}

interface SimService {
  ID: string;
  Service: string;
  Kind: string;
  Tags: string[];
  Address: string;
  Meta: Record<string, string>;
  Port: number;
  Weights: { Passing: number; Warning: number };
  EnableTagOverride: boolean;
  CreateIndex: number;
  ModifyIndex: number;
}

interface SimCheck {
  Node: string;
  CheckID: string;
  Name: string;
  Status: CheckStatus;
  Notes: string;
  Output: string;
  ServiceID: string;
  ServiceName: string;
  ServiceTags: string[];
  Type: string;
  CreateIndex: number;
  ModifyIndex: number;
}

export interface SimRequest {
  method: string;
  path: string;
  query: Record<string, string>;
  token: string | undefined;
  /** performance.now() when the request arrived. */
  at: number;
  status?: number;
}

export interface ConsulSimulatorOptions {
  datacenter?: string;
  /** The agent's own node. */
  nodeName?: string;
  /** When set, ACLs are enforced with this as the only valid token. */
  aclToken?: string;
  /** Serve HTTPS; with `ca` and `verifyIncoming`, require a client certificate signed by it. */
  tls?: { key: string | Buffer; cert: string | Buffer; ca?: string | Buffer; verifyIncoming?: boolean };
  host?: string;
  /** Consul's `check_reap_interval` (non-user setting, 30 s): how often critical services are looked at for reaping. */
  checkReapIntervalMs?: number;
  /** Consul's `check_deregister_interval_min` (non-user setting, 1 m): floor of DeregisterCriticalServiceAfter. */
  checkDeregisterIntervalMinMs?: number;
}

/** Agent-side state of one TTL check (Consul's CheckTTL) and of its DeregisterCriticalServiceAfter. */
interface AgentCheck {
  serviceId: string;
  ttlMs?: number;
  timer?: NodeJS.Timeout;
  deregisterAfterMs?: number;
  /** performance.now() since when the check is critical (Consul's local state CriticalTime). */
  criticalSince?: number;
}

const MAX_WAIT_MS = 10 * 60_000;

/** Consul's state store, reduced to the catalog and its indexes. */
export class SimulatedCatalog {
  raftIndex = 0;
  readonly nodes = new Map<string, SimNode>();
  /** `node/serviceID` -> service. */
  readonly services = new Map<string, SimService & { Node: string }>();
  /** `node/checkID` -> check. */
  readonly checks = new Map<string, SimCheck>();
  servicesIndex = 0;
  nodesIndex = 0;
  readonly serviceIndex = new Map<string, number>();
  /** Emits `change` after every write; blocked queries re-evaluate. */
  readonly events = new EventEmitter();

  constructor(readonly datacenter: string) {
    this.events.setMaxListeners(0);
  }

  /** One raft entry: the raft index always moves; table indexes only where something changed. */
  write<T>(fn: (idx: number) => T): T {
    const idx = ++this.raftIndex;
    const r = fn(idx);
    this.events.emit("change");
    return r;
  }

  private bumpService(name: string, idx: number): void {
    this.serviceIndex.set(name, idx);
  }

  private servicesOnNode(node: string): string[] {
    return [...this.services.values()].filter((s) => s.Node === node).map((s) => s.Service);
  }

  ensureNode(idx: number, n: { Node: string; Address: string; Meta?: Record<string, string>; TaggedAddresses?: Record<string, string>; ID?: string }): void {
    const prev = this.nodes.get(n.Node);
    const next: SimNode = {
      ID: n.ID ?? prev?.ID ?? fakeUuid(n.Node),
      Node: n.Node,
      Address: n.Address,
      Datacenter: this.datacenter,
      TaggedAddresses: n.TaggedAddresses ?? prev?.TaggedAddresses ?? {},
      Meta: n.Meta ?? prev?.Meta ?? {},
      CreateIndex: prev?.CreateIndex ?? idx,
      ModifyIndex: idx,
    };
    if (prev && same(prev, next, ["ModifyIndex"])) return;
    this.nodes.set(n.Node, next);
    this.nodesIndex = idx;
    for (const s of this.servicesOnNode(n.Node)) this.bumpService(s, idx);
  }

  ensureService(idx: number, node: string, s: Partial<SimService> & { Service: string }): string {
    const id = s.ID || s.Service;
    const key = `${node}/${id}`;
    const prev = this.services.get(key);
    const next: SimService & { Node: string } = {
      Node: node,
      ID: id,
      Service: s.Service,
      Kind: s.Kind ?? "",
      Tags: s.Tags ?? [],
      Address: s.Address ?? "",
      Meta: s.Meta ?? {},
      Port: s.Port ?? 0,
      Weights: { Passing: s.Weights?.Passing ?? 1, Warning: s.Weights?.Warning ?? 1 },
      EnableTagOverride: false,
      CreateIndex: prev?.CreateIndex ?? idx,
      ModifyIndex: idx,
    };
    if (prev && same(prev, next, ["ModifyIndex"])) return id;
    if (prev && prev.Service !== next.Service) this.bumpService(prev.Service, idx);
    this.services.set(key, next);
    this.servicesIndex = idx;
    this.bumpService(next.Service, idx);
    return id;
  }

  ensureCheck(idx: number, node: string, c: { CheckID: string; Name?: string; Status?: CheckStatus; ServiceID?: string; Output?: string; Notes?: string; Type?: string }): void {
    const key = `${node}/${c.CheckID}`;
    const prev = this.checks.get(key);
    const svc = c.ServiceID ? this.services.get(`${node}/${c.ServiceID}`) : undefined;
    if (c.ServiceID && !svc) throw new HttpError(500, `Missing service registration`);
    const next: SimCheck = {
      Node: node,
      CheckID: c.CheckID,
      Name: c.Name ?? prev?.Name ?? c.CheckID,
      Status: c.Status ?? prev?.Status ?? "critical",
      Notes: c.Notes ?? prev?.Notes ?? "",
      Output: c.Output ?? prev?.Output ?? "",
      ServiceID: svc?.ID ?? "",
      ServiceName: svc?.Service ?? "",
      ServiceTags: svc?.Tags ?? [],
      Type: c.Type ?? prev?.Type ?? "",
      CreateIndex: prev?.CreateIndex ?? idx,
      ModifyIndex: idx,
    };
    if (prev && same(prev, next, ["ModifyIndex"])) return;
    this.checks.set(key, next);
    if (svc) this.bumpService(svc.Service, idx);
    else for (const s of this.servicesOnNode(node)) this.bumpService(s, idx); // node checks affect every instance
  }

  deregisterService(idx: number, node: string, id: string): boolean {
    const key = `${node}/${id}`;
    const svc = this.services.get(key);
    if (!svc) return false;
    this.services.delete(key);
    for (const [k, c] of this.checks) if (c.Node === node && c.ServiceID === id) this.checks.delete(k);
    this.servicesIndex = idx;
    this.bumpService(svc.Service, idx);
    return true;
  }

  deregisterCheck(idx: number, node: string, checkId: string): void {
    const c = this.checks.get(`${node}/${checkId}`);
    if (!c) return;
    this.checks.delete(`${node}/${checkId}`);
    if (c.ServiceName) this.bumpService(c.ServiceName, idx);
    else for (const s of this.servicesOnNode(node)) this.bumpService(s, idx);
  }

  deregisterNode(idx: number, node: string): void {
    for (const s of [...this.services.values()]) if (s.Node === node) this.deregisterService(idx, node, s.ID);
    for (const [k, c] of this.checks) if (c.Node === node) this.checks.delete(k);
    if (this.nodes.delete(node)) this.nodesIndex = idx;
  }

  /** Moves the index of one service's health without changing anything (what some idempotent writes do). */
  touchService(name: string): void {
    this.write((idx) => this.bumpService(name, idx));
  }

  /**
   * The state comes back with every index at most `to`, as after restoring a snapshot taken at that index: content is
   * kept, indexes go backwards. Blocked queries keep waiting (Consul's do, until their wait elapses).
   */
  resetIndex(to: number): void {
    const clamp = (i: number) => Math.min(i, to);
    this.raftIndex = to;
    this.servicesIndex = clamp(this.servicesIndex);
    this.nodesIndex = clamp(this.nodesIndex);
    for (const [k, v] of this.serviceIndex) this.serviceIndex.set(k, clamp(v));
    for (const o of [...this.nodes.values(), ...this.services.values(), ...this.checks.values()]) {
      o.CreateIndex = clamp(o.CreateIndex);
      o.ModifyIndex = clamp(o.ModifyIndex);
    }
    this.events.emit("change");
  }

  // ---- reads, each with the index Consul would return ----

  catalogServices(): { index: number; body: Record<string, string[]> } {
    const body: Record<string, string[]> = {};
    for (const s of this.services.values()) body[s.Service] = [...new Set([...(body[s.Service] ?? []), ...s.Tags])].sort();
    return { index: Math.max(1, this.servicesIndex), body };
  }

  private instances(name: string): (SimService & { Node: string })[] {
    return [...this.services.values()].filter((s) => s.Service === name).sort((a, b) => a.Node.localeCompare(b.Node) || a.ID.localeCompare(b.ID));
  }

  private serviceIdx(name: string): number {
    return Math.max(1, this.serviceIndex.get(name) ?? this.servicesIndex);
  }

  healthService(name: string, passingOnly: boolean): { index: number; body: unknown[] } {
    const body = [];
    for (const s of this.instances(name)) {
      const n = this.nodes.get(s.Node)!;
      const checks = [...this.checks.values()].filter((c) => c.Node === s.Node && (c.ServiceID === "" || c.ServiceID === s.ID));
      if (passingOnly && checks.some((c) => c.Status !== "passing")) continue;
      const { Node: _n, ...service } = s;
      body.push({ Node: { ...n }, Service: { ...service }, Checks: checks.map((c) => ({ ...c })) });
    }
    return { index: this.serviceIdx(name), body };
  }

  catalogService(name: string): { index: number; body: unknown[] } {
    const body = this.instances(name).map((s) => {
      const n = this.nodes.get(s.Node)!;
      return {
        ID: n.ID,
        Node: n.Node,
        Address: n.Address,
        Datacenter: n.Datacenter,
        TaggedAddresses: n.TaggedAddresses,
        NodeMeta: n.Meta,
        ServiceID: s.ID,
        ServiceName: s.Service,
        ServiceKind: s.Kind,
        ServiceTags: s.Tags,
        ServiceAddress: s.Address,
        ServiceMeta: s.Meta,
        ServicePort: s.Port,
        ServiceWeights: s.Weights,
        ServiceEnableTagOverride: s.EnableTagOverride,
        CreateIndex: s.CreateIndex,
        ModifyIndex: s.ModifyIndex,
      };
    });
    return { index: this.serviceIdx(name), body };
  }
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export class ConsulSimulator {
  readonly catalog: SimulatedCatalog;
  readonly requests: SimRequest[] = [];
  readonly datacenter: string;
  readonly nodeName: string;
  /** Current ACL token; undefined disables ACLs. Changeable at run time. */
  aclToken: string | undefined;
  /**
   * False: the servers lost their leader. Default-consistency reads then fail with 500 "No cluster leader"; `?stale`
   * reads are still answered, with X-Consul-KnownLeader: false and a growing X-Consul-LastContact.
   */
  knownLeader = true;
  private leaderLostAt = 0;
  private failStatus: number | undefined;
  private server: Server | undefined;
  private portValue = 0;
  private readonly host: string;
  private readonly pending = new Set<() => void>();
  /** checkID -> agent-side state of the agent's own checks (the ones registered through /v1/agent/). */
  private readonly agentChecks = new Map<string, AgentCheck>();
  private reaper: NodeJS.Timeout | undefined;
  private closed = false;

  private constructor(private readonly opts: ConsulSimulatorOptions) {
    this.datacenter = opts.datacenter ?? "dc1";
    this.nodeName = opts.nodeName ?? "consul-sim";
    this.aclToken = opts.aclToken;
    this.host = opts.host ?? "127.0.0.1";
    this.catalog = new SimulatedCatalog(this.datacenter);
    // What a fresh single-server agent has: its own node, serfHealth, and the `consul` service.
    this.catalog.raftIndex = 10;
    this.catalog.write((idx) => {
      this.catalog.ensureNode(idx, { Node: this.nodeName, Address: this.host });
      this.catalog.ensureService(idx, this.nodeName, { ID: "consul", Service: "consul", Port: 8300 });
      this.catalog.ensureCheck(idx, this.nodeName, { CheckID: "serfHealth", Name: "Serf Health Status", Status: "passing", Type: "" });
    });
  }

  static async start(opts: ConsulSimulatorOptions = {}): Promise<ConsulSimulator> {
    const sim = new ConsulSimulator(opts);
    await sim.start();
    return sim;
  }

  get port(): number {
    return this.portValue;
  }

  get address(): string {
    return `${this.opts.tls ? "https" : "http"}://${this.host}:${this.portValue}`;
  }

  get listening(): boolean {
    return this.server !== undefined;
  }

  /** (Re)opens the listener, on the same port as before once one was chosen. */
  async start(): Promise<void> {
    if (this.server) return;
    const handler = (req: IncomingMessage, res: ServerResponse) => void this.handle(req, res);
    const tls = this.opts.tls;
    const server = tls
      ? createHttpsServer({ key: tls.key, cert: tls.cert, ca: tls.ca, requestCert: !!tls.verifyIncoming, rejectUnauthorized: !!tls.verifyIncoming }, handler)
      : createHttpServer(handler);
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.portValue, this.host, () => resolve());
    });
    this.portValue = (server.address() as AddressInfo).port;
    this.server = server;
  }

  /** Closes the listener and every connection, blocked queries included: the agent became unreachable. */
  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    for (const abort of this.pending) abort();
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeAllConnections();
    await closed;
  }

  /** Stops the listener and the agent itself: its TTL timers and reaper end. */
  close(): Promise<void> {
    this.closed = true;
    for (const c of this.agentChecks.values()) if (c.timer) clearTimeout(c.timer);
    this.agentChecks.clear();
    if (this.reaper) clearInterval(this.reaper);
    this.reaper = undefined;
    return this.stop();
  }

  /** Checks of the agent's node as the catalog holds them (status, output), by check ID. */
  agentCheckStatus(checkId: string): { Status: CheckStatus; Output: string } | undefined {
    const c = this.catalog.checks.get(`${this.nodeName}/${checkId}`);
    return c ? { Status: c.Status, Output: c.Output } : undefined;
  }

  // ---- agent TTL checks and the critical-service reaper ----

  private get reapIntervalMs(): number {
    return this.opts.checkReapIntervalMs ?? 30_000;
  }

  private get deregisterMinMs(): number {
    return this.opts.checkDeregisterIntervalMinMs ?? 60_000;
  }

  /** A check of the agent's was (re)registered: (re)arm its TTL and remember its deregistration timeout. */
  private trackAgentCheck(checkId: string, serviceId: string, ttlMs: number | undefined, deregisterAfterMs: number | undefined): void {
    const prev = this.agentChecks.get(checkId);
    if (prev?.timer) clearTimeout(prev.timer);
    const c: AgentCheck = { serviceId, ttlMs, deregisterAfterMs, criticalSince: prev?.criticalSince };
    this.agentChecks.set(checkId, c);
    this.noteStatus(checkId);
    this.armTtl(checkId);
    if (deregisterAfterMs !== undefined) this.startReaper();
  }

  private armTtl(checkId: string): void {
    const c = this.agentChecks.get(checkId);
    if (!c || c.ttlMs === undefined || this.closed) return;
    if (c.timer) clearTimeout(c.timer);
    c.timer = setTimeout(() => {
      c.timer = undefined;
      const cur = this.catalog.checks.get(`${this.nodeName}/${checkId}`);
      if (!cur || this.agentChecks.get(checkId) !== c) return;
      // Consul's CheckTTL: "TTL expired", with the last output appended when there was one.
      const output = cur.Output ? `TTL expired (last output before timeout follows): ${cur.Output}` : "TTL expired";
      this.catalog.write((idx) => this.catalog.ensureCheck(idx, this.nodeName, { CheckID: checkId, Status: "critical", Output: output, ServiceID: cur.ServiceID || undefined }));
      this.noteStatus(checkId);
    }, c.ttlMs);
    c.timer.unref();
  }

  /** Keeps `criticalSince` in step with the check's status, as Consul's local state does. */
  private noteStatus(checkId: string): void {
    const c = this.agentChecks.get(checkId);
    const cur = this.catalog.checks.get(`${this.nodeName}/${checkId}`);
    if (!c || !cur) return;
    if (cur.Status === "critical") c.criticalSince ??= performance.now();
    else c.criticalSince = undefined;
  }

  private startReaper(): void {
    if (this.reaper || this.closed) return;
    this.reaper = setInterval(() => this.reap(), this.reapIntervalMs);
    this.reaper.unref();
  }

  /** Consul's reapServicesInternal: deregisters services with a check critical for longer than its timeout. */
  private reap(): void {
    const now = performance.now();
    for (const [checkId, c] of [...this.agentChecks]) {
      if (c.deregisterAfterMs === undefined || c.criticalSince === undefined) continue;
      const timeout = Math.max(c.deregisterAfterMs, this.deregisterMinMs);
      if (now - c.criticalSince <= timeout) continue;
      if (!this.agentChecks.has(checkId)) continue; // its service was reaped by an earlier check of this round
      if (this.catalog.services.has(`${this.nodeName}/${c.serviceId}`)) {
        this.catalog.write((idx) => this.catalog.deregisterService(idx, this.nodeName, c.serviceId));
      }
      this.forgetService(c.serviceId);
    }
  }

  private forgetService(serviceId: string): void {
    for (const [id, c] of [...this.agentChecks]) {
      if (c.serviceId !== serviceId) continue;
      if (c.timer) clearTimeout(c.timer);
      this.agentChecks.delete(id);
    }
  }

  /** Answer every request with this HTTP status (Consul's "rpc error" 500s) until called with undefined. */
  failWith(status: number | undefined): void {
    this.failStatus = status;
  }

  resetIndex(to: number): void {
    this.catalog.resetIndex(to);
  }

  /** Loses or regains the cluster leader (see `knownLeader`). */
  setKnownLeader(known: boolean): void {
    if (!known && this.knownLeader) this.leaderLostAt = performance.now();
    this.knownLeader = known;
  }

  /** Requests whose path starts with `prefix`, since `since` (performance.now()). */
  requestsTo(prefix: string, since = 0): SimRequest[] {
    return this.requests.filter((r) => r.path.startsWith(prefix) && r.at >= since);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://consul");
    const query = Object.fromEntries(url.searchParams);
    const tokenHeader = req.headers["x-consul-token"];
    const token = (Array.isArray(tokenHeader) ? tokenHeader[0] : tokenHeader) || query.token || undefined;
    const entry: SimRequest = { method: req.method ?? "GET", path: url.pathname, query, token, at: performance.now() };
    this.requests.push(entry);
    const send = (status: number, body: unknown, headers: Record<string, string> = {}) => {
      entry.status = status;
      if (res.destroyed) return;
      const text = typeof body === "string" ? body : JSON.stringify(body);
      res.writeHead(status, { "Content-Type": typeof body === "string" ? "text/plain; charset=utf-8" : "application/json", ...headers });
      res.end(text);
    };
    try {
      const bodyText = await readBody(req);
      if (this.failStatus !== undefined) {
        return send(this.failStatus, "rpc error making call: rpc error: failed to get conn: dial tcp: connection refused");
      }
      if (query.dc && query.dc !== this.datacenter) throw new HttpError(500, `No path to datacenter`);
      if (!this.knownLeader && !("stale" in query)) throw new HttpError(500, "No cluster leader");
      const acl = this.aclFor(token);
      const method = req.method ?? "GET";
      const path = url.pathname;
      if (method === "GET") {
        const read = this.readFor(path, query);
        if (!read) throw new HttpError(404, "404 page not found");
        if (acl === "anonymous") {
          // Default deny: an anonymous token reads nothing, and Consul says the answer was filtered.
          const r = read();
          return send(200, Array.isArray(r.body) ? [] : typeof r.body === "object" ? {} : r.body, {
            ...this.metaHeaders(r.index, query),
            "X-Consul-Results-Filtered-By-ACLs": "true",
          });
        }
        const r = await this.block(read, query, req);
        if (r === undefined) return; // client went away
        return send(200, r.body, this.metaHeaders(r.index, query));
      }
      if (method === "PUT" || method === "POST") {
        if (acl === "anonymous") throw new HttpError(403, "Permission denied");
        const body = bodyText ? JSON.parse(bodyText) : {};
        const out = this.writeFor(path, body, query);
        if (out === undefined) throw new HttpError(404, "404 page not found");
        return send(200, out);
      }
      throw new HttpError(405, "method not allowed");
    } catch (e) {
      if (e instanceof HttpError) return send(e.status, e.message);
      if (e instanceof SyntaxError) return send(400, `Request decode failed: ${e.message}`);
      return send(500, (e as Error).message);
    }
  }

  private aclFor(token: string | undefined): "ok" | "anonymous" {
    if (this.aclToken === undefined) return "ok";
    if (token === undefined || token === "anonymous") return "anonymous";
    if (token !== this.aclToken) throw new HttpError(403, "ACL not found");
    return "ok";
  }

  private metaHeaders(index: number, query: Record<string, string>): Record<string, string> {
    const stale = "stale" in query;
    return {
      "X-Consul-Index": String(index),
      "X-Consul-KnownLeader": String(this.knownLeader),
      "X-Consul-LastContact": this.knownLeader ? "0" : String(Math.round(performance.now() - this.leaderLostAt)),
      "X-Consul-Effective-Consistency": stale ? "stale" : "leader",
      "X-Consul-Default-ACL-Policy": this.aclToken === undefined ? "allow" : "deny",
    };
  }

  private readFor(path: string, query: Record<string, string>): (() => { index: number; body: unknown }) | undefined {
    const c = this.catalog;
    if (path === "/v1/catalog/services") return () => c.catalogServices();
    let m = /^\/v1\/health\/service\/([^/]+)$/.exec(path);
    if (m) {
      const name = decodeURIComponent(m[1]!);
      const passing = query.passing !== undefined && query.passing !== "false" && query.passing !== "0";
      return () => c.healthService(name, passing);
    }
    m = /^\/v1\/catalog\/service\/([^/]+)$/.exec(path);
    if (m) {
      const name = decodeURIComponent(m[1]!);
      return () => c.catalogService(name);
    }
    if (path === "/v1/status/leader") return () => ({ index: c.raftIndex, body: `${this.host}:8300` });
    if (path === "/v1/agent/self") return () => ({ index: c.raftIndex, body: { Config: { Datacenter: this.datacenter, NodeName: this.nodeName } } });
    return undefined;
  }

  /** Runs a read, holding it as a blocking query when `index` is given. Undefined if the client disconnected. */
  private block(
    read: () => { index: number; body: unknown },
    query: Record<string, string>,
    req: IncomingMessage,
  ): Promise<{ index: number; body: unknown } | undefined> {
    const minIndex = Number(query.index ?? 0);
    const first = read();
    if (!(minIndex > 0) || first.index > minIndex) return Promise.resolve(first);
    const waitMs = Math.min(query.wait ? parseWait(query.wait) : 5 * 60_000, MAX_WAIT_MS);
    const deadline = waitMs + Math.random() * (waitMs / 16);
    return new Promise((resolve) => {
      const events = this.catalog.events;
      const finish = (r: { index: number; body: unknown } | undefined) => {
        clearTimeout(timer);
        events.off("change", onChange);
        req.socket.off("close", onClose);
        this.pending.delete(onClose);
        resolve(r);
      };
      const onChange = () => {
        const r = read();
        if (r.index > minIndex) finish(r);
      };
      const onClose = () => finish(undefined);
      const timer = setTimeout(() => finish(read()), deadline);
      events.on("change", onChange);
      req.socket.once("close", onClose);
      this.pending.add(onClose);
    });
  }

  /**
   * Applies one write as the HTTP API would, without going through the listener: a change other servers accepted
   * while this agent was unreachable. Returns undefined for an unknown path.
   */
  apply(path: string, body: any, query: Record<string, string> = {}): unknown {
    return this.writeFor(path, body, query);
  }

  private writeFor(path: string, body: any, query: Record<string, string>): unknown {
    const c = this.catalog;
    const node = this.nodeName;
    if (path === "/v1/agent/service/register") {
      if (!body.Name) throw new HttpError(400, "Missing service name");
      c.write((idx) => {
        const id = c.ensureService(idx, node, {
          ID: body.ID,
          Service: body.Name,
          Kind: body.Kind,
          Tags: body.Tags,
          Address: body.Address,
          Port: body.Port,
          Meta: body.Meta,
          Weights: body.Weights,
        });
        const checks = [...(body.Check ? [body.Check] : []), ...(body.Checks ?? [])];
        checks.forEach((ck: any, i: number) => {
          const checkId = ck.CheckID ?? ck.ID ?? (checks.length > 1 ? `service:${id}:${i + 1}` : `service:${id}`);
          const ttlMs = ck.TTL ? parseDuration(ck.TTL, "TTL") : undefined;
          const deregisterAfterMs = ck.DeregisterCriticalServiceAfter ? parseDuration(ck.DeregisterCriticalServiceAfter, "DeregisterCriticalServiceAfter") : undefined;
          // A check that exists keeps its status and output through a re-registration (Consul's agent restores
          // them from its check-state snapshot, whatever Status the body gives); a new one starts at the given
          // Status, default critical.
          const prev = c.checks.get(`${node}/${checkId}`);
          c.ensureCheck(idx, node, {
            CheckID: checkId,
            Name: ck.Name ?? `Service '${body.Name}' check`,
            Status: prev?.Status ?? ck.Status ?? "critical",
            Output: prev?.Output ?? "",
            ServiceID: id,
            Notes: ck.Notes,
            Type: ck.TTL ? "ttl" : "",
          });
          this.trackAgentCheck(checkId, id, ttlMs, deregisterAfterMs);
        });
      });
      return "";
    }
    let m = /^\/v1\/agent\/service\/deregister\/([^/]+)$/.exec(path);
    if (m) {
      const id = decodeURIComponent(m[1]!);
      if (!c.services.has(`${node}/${id}`)) throw new HttpError(404, `Unknown service ID "${id}". Ensure that the service ID is passed, not the service name.`);
      c.write((idx) => c.deregisterService(idx, node, id));
      this.forgetService(id);
      return "";
    }
    m = /^\/v1\/agent\/check\/(pass|warn|fail|update)\/([^/]+)$/.exec(path);
    if (m) {
      const id = decodeURIComponent(m[2]!);
      if (!c.checks.has(`${node}/${id}`)) throw new HttpError(404, `Unknown check ID "${id}". Ensure that the check ID is passed, not the check name.`);
      // Consul's agent.updateTTLCheck: only a TTL check of this agent takes a status from outside (a script,
      // HTTP or catalog-registered check is the agent's or the catalog's business): a plain error, so 500.
      if (this.agentChecks.get(id)?.ttlMs === undefined) throw new HttpError(500, `CheckID "${id}" does not have associated TTL`);
      const status: CheckStatus =
        m[1] === "pass" ? "passing" : m[1] === "warn" ? "warning" : m[1] === "fail" ? "critical" : (body.Status as CheckStatus);
      if (!["passing", "warning", "critical"].includes(status)) throw new HttpError(400, `Invalid check status: "${status}"`);
      const output = m[1] === "update" ? (body.Output ?? "") : (query.note ?? "");
      c.write((idx) => c.ensureCheck(idx, node, { CheckID: id, Status: status, Output: output, ServiceID: c.checks.get(`${node}/${id}`)!.ServiceID || undefined }));
      this.noteStatus(id);
      this.armTtl(id);
      return "";
    }
    if (path === "/v1/catalog/register") {
      if (!body.Node || !body.Address) throw new HttpError(400, "Must provide node and address");
      c.write((idx) => {
        if (!body.SkipNodeUpdate || !c.nodes.has(body.Node)) {
          c.ensureNode(idx, { Node: body.Node, Address: body.Address, Meta: body.NodeMeta, TaggedAddresses: body.TaggedAddresses, ID: body.ID });
        }
        if (body.Service) {
          c.ensureService(idx, body.Node, {
            ID: body.Service.ID,
            Service: body.Service.Service,
            Kind: body.Service.Kind,
            Tags: body.Service.Tags,
            Address: body.Service.Address,
            Port: body.Service.Port,
            Meta: body.Service.Meta,
            Weights: body.Service.Weights,
          });
        }
        for (const ck of [...(body.Check ? [body.Check] : []), ...(body.Checks ?? [])]) {
          c.ensureCheck(idx, body.Node, {
            CheckID: ck.CheckID,
            Name: ck.Name,
            Status: ck.Status ?? "critical",
            // As in Consul, a check without ServiceID is a node check.
            ServiceID: ck.ServiceID,
            Output: ck.Output,
            Notes: ck.Notes,
          });
        }
      });
      return true;
    }
    if (path === "/v1/catalog/deregister") {
      if (!body.Node) throw new HttpError(400, "Must provide node");
      c.write((idx) => {
        if (body.ServiceID) c.deregisterService(idx, body.Node, body.ServiceID);
        else if (body.CheckID) c.deregisterCheck(idx, body.Node, body.CheckID);
        else c.deregisterNode(idx, body.Node);
      });
      return true;
    }
    return undefined;
  }
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

/** Consul's `wait` syntax (Go durations such as "10s", "250ms", "1m"). */
function parseWait(s: string): number {
  return parseDuration(s, "wait");
}

/** A Go duration ("10s", "250ms", "1m30s" is not needed here); a 400 naming the field otherwise. */
function parseDuration(s: string, what: string): number {
  const m = /^(\d+(?:\.\d+)?)(ns|us|ms|s|m|h)$/.exec(String(s));
  if (!m) throw new HttpError(400, what === "wait" ? `Invalid wait time` : `Invalid ${what}: ${s}`);
  const unit: Record<string, number> = { ns: 1e-6, us: 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
  return Number(m[1]) * unit[m[2]!]!;
}

function same(a: object, b: object, ignore: string[]): boolean {
  const strip = (o: object) => JSON.stringify(o, (k, v) => (ignore.includes(k) ? undefined : v));
  return strip(a) === strip(b);
}

function fakeUuid(seed: string): string {
  let h = 0;
  for (const ch of seed) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  const hex = h.toString(16).padStart(8, "0");
  return `${hex}-0000-4000-8000-${hex}0000`;
}
