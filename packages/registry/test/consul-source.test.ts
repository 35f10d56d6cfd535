// ConsulSource against the Consul HTTP API simulator and, when a consul binary is available, the same cases against
// a real agent. Cases that need a fault hook only the simulator has (request log, index reset, 500s, index-only
// bumps) run against the simulator alone.
// Not here yet: issue 4's end-to-end cases with a real @grpc/grpc-js-xds client (two instances reached, a failing
// check moves traffic, deregistration, Consul stopped, a VirtualService splitting by tag subsets). They belong in
// test/ once the xDS server exists, and can drive Consul through simulatorTarget()/realTarget() from consul-targets.ts.
import { expect } from "chai";
import { mkdtemp, rm, writeFile, rename } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConsulSource, type ConsulSourceOptions } from "../src/consul/index.js";
import type { Endpoint } from "../src/model.js";
import {
  createTestPki,
  realConsulBinary,
  realTarget,
  REAL_CONSUL_SKIPPED,
  simulatorTarget,
  type ConsulTarget,
  type Instance,
  type TargetOptions,
  type TestPki,
} from "./consul-targets.js";
import { until } from "../../../test/helpers/poll.js";

const TEST_OPTIONS: Partial<ConsulSourceOptions> = {
  wait: 1000,
  minInterval: 20,
  jitter: 0.5,
  backoff: { initial: 50, max: 400 },
  requestTimeout: 3000,
  tokenFilePollInterval: 50,
  trustDomain: "example.org",
};


const hostKey = (name: string) => `default/${name}.service.consul`;

function endpointsOf(source: ConsulSource, name: string): readonly Endpoint[] | undefined {
  return source.current().endpoints?.get(hostKey(name));
}

function addresses(source: ConsulSource, name: string): string[] {
  return (endpointsOf(source, name) ?? []).map((e) => e.address);
}

const webA: Instance = {
  node: "node-a",
  nodeAddress: "127.0.0.11",
  nodeMeta: { zone: "z1" },
  id: "web-a",
  name: "web",
  port: 8080,
  tags: ["version|v1", "canary", "track=stable"],
  meta: { protocol: "http", "service-account": "web-sa" },
  weights: { Passing: 3, Warning: 1 },
};
const webB: Instance = {
  node: "node-b",
  nodeAddress: "127.0.0.12",
  id: "web-b",
  name: "web",
  address: "127.0.0.22",
  port: 8080,
  tags: ["version=v2"],
  meta: { protocol: "http" },
};
const db: Instance = { node: "node-a", nodeAddress: "127.0.0.11", nodeMeta: { zone: "z1" }, id: "db-1", name: "db", port: 5432 };

interface Ctx {
  target?: ConsulTarget;
  source?: ConsulSource;
  changes: number;
  cleanups: (() => Promise<unknown>)[];
}

function consulCases(make: (o?: TargetOptions) => Promise<ConsulTarget>, withSimulatorHooks: boolean) {
  const ctx: Ctx = { changes: 0, cleanups: [] };

  async function newSource(target: ConsulTarget, extra: Partial<ConsulSourceOptions> = {}): Promise<ConsulSource> {
    const source = new ConsulSource({ address: target.address, ...TEST_OPTIONS, ...extra });
    source.on("change", () => ctx.changes++);
    ctx.source = source;
    await source.start();
    return source;
  }

  afterEach(async () => {
    await ctx.source?.stop();
    await ctx.target?.close();
    for (const c of ctx.cleanups.splice(0)) await c();
    ctx.source = undefined;
    ctx.target = undefined;
    ctx.changes = 0;
  });

  it("turns a service with two instances into one Service and two endpoints", async () => {
    const t = (ctx.target = await make());
    await t.register(webA);
    await t.register(webB);
    const s = await newSource(t);
    expect(s.current().status.synced).to.equal(true);
    await until("two web endpoints", () => addresses(s, "web").length === 2, 20_000);

    const state = s.current();
    expect(state.objects).to.deep.equal([]);
    const names = state.services!.map((x) => x.hostname);
    expect(names).to.include("web.service.consul");
    expect(names).not.to.include("consul.service.consul"); // Consul itself is not a destination
    const svc = state.services!.find((x) => x.hostname === "web.service.consul")!;
    expect(svc).to.deep.include({
      key: hostKey("web"),
      namespace: "default",
      resolution: "STATIC",
      location: "MESH_INTERNAL",
      exportTo: ["*"],
      addresses: [],
    });
    expect(svc.ports).to.deep.equal([{ number: 8080, protocol: "HTTP", name: "http-8080" }]);
    expect(svc.origin).to.deep.include({ type: "consul", datacenter: t.datacenter, service: "web" });

    const [a, b] = endpointsOf(s, "web")!;
    expect(a).to.deep.include({
      address: "127.0.0.11", // node address: the instance has none
      ports: { "http-8080": 8080 },
      locality: `${t.datacenter}/z1`,
      weight: 3,
      health: "HEALTHY",
      serviceAccount: "web-sa",
      spiffeId: "spiffe://example.org/ns/default/sa/web-sa",
      namespace: "default",
    });
    expect(a!.labels).to.deep.equal({
      version: "v1",
      track: "stable",
      "tag.consul/canary": "true",
      protocol: "http",
      "service-account": "web-sa",
    });
    expect(b).to.deep.include({ address: "127.0.0.22", locality: t.datacenter, weight: 1, health: "HEALTHY" });
    expect(b!.labels).to.deep.equal({ version: "v2", protocol: "http" });
    expect(b!.serviceAccount).to.equal(undefined);
    expect(s.current().status).to.deep.include({ name: "consul", synced: true, stale: false });
    expect(Number(s.current().status.revision)).to.be.greaterThan(0);
  });

  it("sends a warning check as DEGRADED and a critical one as UNHEALTHY, keeping the endpoint", async () => {
    const t = (ctx.target = await make());
    await t.register(webA);
    await t.register(webB);
    const s = await newSource(t);
    await until("two web endpoints", () => addresses(s, "web").length === 2, 20_000);
    const healthOf = (addr: string) => endpointsOf(s, "web")!.find((e) => e.address === addr)?.health;

    await t.setStatus(webA, "warning");
    await until("web-a DEGRADED", () => healthOf("127.0.0.11") === "DEGRADED", 20_000);
    expect(endpointsOf(s, "web")!.find((e) => e.address === "127.0.0.11")!.weight).to.equal(1); // Weights.Warning
    await t.setStatus(webB, "critical");
    await until("web-b UNHEALTHY", () => healthOf("127.0.0.22") === "UNHEALTHY", 20_000);
    expect(addresses(s, "web")).to.deep.equal(["127.0.0.11", "127.0.0.22"]);
    await t.setStatus(webA, "passing");
    await until("web-a HEALTHY again", () => healthOf("127.0.0.11") === "HEALTHY", 20_000);
    expect(endpointsOf(s, "web")!.find((e) => e.address === "127.0.0.11")!.weight).to.equal(3);
  });

  it("follows TTL checks of the agent API (register, warn, fail, pass, deregister)", async () => {
    const t = (ctx.target = await make());
    const s = await newSource(t);
    await t.put("/v1/agent/service/register", {
      ID: "api-1",
      Name: "api",
      Port: 9090,
      Address: "127.0.0.33",
      Meta: { protocol: "grpc" },
      Check: { CheckID: "api-1-ttl", TTL: "30s", Status: "passing" },
    });
    const health = () => endpointsOf(s, "api")?.[0]?.health;
    await until("api HEALTHY", () => health() === "HEALTHY", 20_000);
    expect(s.current().services!.find((x) => x.hostname === "api.service.consul")!.ports).to.deep.equal([
      { number: 9090, protocol: "GRPC", name: "grpc-9090" },
    ]);
    await t.put("/v1/agent/check/warn/api-1-ttl", {});
    await until("api DEGRADED", () => health() === "DEGRADED", 20_000);
    await t.put("/v1/agent/check/fail/api-1-ttl", {});
    await until("api UNHEALTHY", () => health() === "UNHEALTHY", 20_000);
    await t.put("/v1/agent/check/pass/api-1-ttl", {});
    await until("api HEALTHY again", () => health() === "HEALTHY", 20_000);
    await t.put("/v1/agent/service/deregister/api-1", {});
    await until("api gone", () => !s.current().services!.some((x) => x.hostname === "api.service.consul"), 20_000);
  });

  it("removes a deregistered instance, then the service once Consul no longer lists it", async () => {
    const t = (ctx.target = await make());
    await t.register(webA);
    await t.register(webB);
    await t.register(db);
    const s = await newSource(t);
    await until("web and db", () => addresses(s, "web").length === 2 && addresses(s, "db").length === 1, 20_000);
    await t.deregister(webA);
    await until("one web endpoint", () => addresses(s, "web").length === 1, 20_000);
    expect(addresses(s, "web")).to.deep.equal(["127.0.0.22"]);
    await t.deregister(webB);
    await until("web service removed", () => endpointsOf(s, "web") === undefined, 20_000);
    expect(s.current().services!.map((x) => x.hostname)).to.deep.equal(["db.service.consul"]);
    expect(s.current().status.stale).to.equal(false);
  });

  it("keeps the last catalog, marked stale, while Consul is unreachable, and catches up when it returns", async function () {
    this.timeout(90_000);
    const t = (ctx.target = await make());
    await t.register(webA);
    await t.register(webB);
    const s = await newSource(t);
    await until("two web endpoints", () => addresses(s, "web").length === 2, 20_000);
    const before = s.current();

    await t.stop();
    await until("status stale", () => s.current().status.stale, 20_000);
    const during = s.current();
    expect(during.status.synced).to.equal(true);
    expect(during.status.lastError).to.be.a("string").and.not.equal("");
    expect(during.services).to.deep.equal(before.services);
    expect(during.endpoints).to.deep.equal(before.endpoints);

    await t.registerWhileDown(db);
    await t.start();
    await until("db picked up after recovery", () => addresses(s, "db").length === 1 && !s.current().status.stale, 60_000);
    expect(addresses(s, "web")).to.deep.equal(["127.0.0.11", "127.0.0.22"]);
    expect(s.current().status.lastError).to.equal(undefined);
  });

  it("starts while Consul is down: start() resolves unsynced, then syncs when Consul comes up", async function () {
    this.timeout(90_000);
    const t = (ctx.target = await make());
    await t.register(webA);
    await t.stop();
    const s = await newSource(t);
    const st = s.current();
    expect(st.status.synced).to.equal(false);
    expect(st.status.stale).to.equal(false); // nothing to be stale about yet
    expect(st.status.lastError).to.be.a("string");
    expect(st.services).to.deep.equal([]);
    await t.start();
    await until("synced after Consul came up", () => s.current().status.synced && addresses(s, "web").length === 1, 60_000);
  });

  it("re-reads the ACL token file: a wrong token is a problem, fixing the file recovers without a restart", async function () {
    this.timeout(90_000);
    const token = "3f0a4c2e-6b1d-4b8e-9a57-1c2d3e4f5a6b";
    const t = (ctx.target = await make({ aclToken: token }));
    await t.register(webA);
    const dir = await mkdtemp(join(tmpdir(), "vmpilot-consul-token-"));
    ctx.cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const tokenFile = join(dir, "token");
    await writeFile(tokenFile, "00000000-0000-4000-8000-000000000000\n");
    const s = await newSource(t, { tokenFile });
    expect(s.current().status.synced).to.equal(false);
    await until("ACL problem", () => s.current().problems.some((p) => /ACL not found/.test(p.message)), 20_000);
    const p = s.current().problems.find((x) => /ACL not found/.test(x.message))!;
    expect(p).to.deep.include({ severity: "error", file: t.address });
    expect(p.message).to.contain(tokenFile);

    // Atomic replace, as config management tools write it.
    await writeFile(join(dir, "token.new"), `${token}\n`);
    await rename(join(dir, "token.new"), tokenFile);
    await until("synced with the fixed token", () => s.current().status.synced && addresses(s, "web").length === 1, 60_000);
    expect(s.current().problems).to.deep.equal([]);
  });

  it("does not query without its token file (an ACL'd Consul would answer with empty lists), and starts once it appears", async function () {
    this.timeout(90_000);
    const token = "5a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
    const t = (ctx.target = await make({ aclToken: token }));
    await t.register(webA);
    const dir = await mkdtemp(join(tmpdir(), "vmpilot-consul-token-"));
    ctx.cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const tokenFile = join(dir, "token");
    const s = await newSource(t, { tokenFile });
    expect(s.current().status.synced).to.equal(false);
    expect(s.current().problems.map((p) => p.message)).to.satisfy((m: string[]) => m.some((x) => x.includes(`cannot read Consul ACL token file ${tokenFile}`)));
    if (t.sim) expect(t.sim.requestsTo("/v1/catalog/services")).to.deep.equal([]);
    await writeFile(tokenFile, token);
    await until("synced once the token file exists", () => s.current().status.synced && addresses(s, "web").length === 1, 60_000);
    expect(s.current().problems).to.deep.equal([]);
  });

  it("reports answers that ACLs filtered (no token against a default-deny Consul)", async function () {
    this.timeout(90_000);
    const t = (ctx.target = await make({ aclToken: "7c6d5e4f-3a2b-4c1d-8e9f-0a1b2c3d4e5f" }));
    await t.register(webA);
    const s = await newSource(t);
    await until("filtered-by-ACLs warning", () => s.current().problems.some((p) => /filtered/.test(p.message)), 20_000);
    expect(s.current().problems.find((p) => /filtered/.test(p.message))).to.deep.include({ severity: "warning", file: t.address });
    expect(s.current().services).to.deep.equal([]);
  });

  it("talks HTTPS to Consul with a CA and a client certificate", async function () {
    this.timeout(90_000);
    const pki: TestPki = await createTestPki();
    ctx.cleanups.push(() => rm(pki.dir, { recursive: true, force: true }));
    const t = (ctx.target = await make({ tls: pki }));
    expect(t.address.startsWith("https://")).to.equal(true);
    await t.register(webA);
    const s = await newSource(t, { tls: { caFile: pki.caFile, certFile: pki.clientCertFile, keyFile: pki.clientKeyFile } });
    await until("synced over TLS", () => s.current().status.synced && addresses(s, "web").length === 1, 20_000);
    await t.setStatus(webA, "critical");
    await until("health change over TLS", () => endpointsOf(s, "web")?.[0]?.health === "UNHEALTHY", 20_000);
  });

  it("refuses a Consul whose certificate its CA did not sign (and keeps retrying)", async function () {
    this.timeout(90_000);
    const pki = await createTestPki();
    const other = await createTestPki();
    ctx.cleanups.push(() => rm(pki.dir, { recursive: true, force: true }), () => rm(other.dir, { recursive: true, force: true }));
    const t = (ctx.target = await make({ tls: pki }));
    const s = await newSource(t, { tls: { caFile: other.caFile, certFile: other.clientCertFile, keyFile: other.clientKeyFile } });
    expect(s.current().status.synced).to.equal(false);
    expect(s.current().status.lastError).to.match(/certificate/i);
  });

  it("can be stopped and started again, syncing afresh", async function () {
    this.timeout(30_000);
    const t = (ctx.target = await make());
    await t.register(webA);
    const s = await newSource(t);
    await until("web endpoint", () => addresses(s, "web").length === 1, 20_000);
    await s.stop();
    await t.register(webB);
    await s.start();
    expect(s.current().status.synced).to.equal(true);
    await until("both endpoints after the restart", () => addresses(s, "web").length === 2, 20_000);
    await t.setStatus(webB, "critical");
    await until("watching again", () => endpointsOf(s, "web")!.find((e) => e.address === "127.0.0.22")?.health === "UNHEALTHY", 20_000);
  });

  if (!withSimulatorHooks) return;

  // ---- cases that need the simulator's request log and fault hooks ----

  it("uses blocking queries: index and wait after the first read, datacenter and stale passed on, no tight loop", async function () {
    this.timeout(30_000);
    const t = (ctx.target = await make());
    const sim = t.sim!;
    await t.register(webA);
    const s = await newSource(t, { datacenter: sim.datacenter, stale: true });
    await until("web endpoint", () => addresses(s, "web").length === 1, 20_000);
    for (const path of ["/v1/catalog/services", "/v1/health/service/web"]) {
      await until(`a blocking query on ${path}`, () => sim.requestsTo(path).some((r) => Number(r.query.index) > 0), 20_000);
    }

    const reads = sim.requests.filter((r) => r.method === "GET");
    for (const r of reads) {
      expect(r.query.dc).to.equal(sim.datacenter);
      expect(r.query).to.have.property("stale");
    }
    for (const path of ["/v1/catalog/services", "/v1/health/service/web"]) {
      const [first, ...rest] = sim.requestsTo(path);
      expect(first!.query.index ?? "0", `${path} first read`).to.equal("0");
      expect(rest.length, path).to.be.greaterThan(0);
      for (const r of rest) {
        expect(Number(r.query.index), `${path} index`).to.be.greaterThan(0);
        expect(r.query.wait, `${path} wait`).to.equal("1s");
      }
    }

    // Idle catalog: each key may be asked about once per wait (1s, plus Consul's jitter) and no more.
    await new Promise((r) => setImmediate(r));
    const changesBeforeIdle = ctx.changes;
    const since = performance.now();
    await new Promise((r) => setTimeout(r, 2500));
    const idleSeconds = (performance.now() - since) / 1000;
    for (const path of ["/v1/catalog/services", "/v1/health/service/web"]) {
      const n = sim.requestsTo(path, since).length;
      expect(n, `${path} requests in ${idleSeconds.toFixed(1)}s idle`).to.be.at.most(Math.ceil(idleSeconds) + 1);
    }
    expect(ctx.changes, "no change events while idle").to.equal(changesBeforeIdle);
  });

  it("emits change only when the converted state changed, not when only the index moved", async function () {
    this.timeout(30_000);
    const t = (ctx.target = await make());
    const sim = t.sim!;
    await t.register(webA);
    const s = await newSource(t);
    await until("web endpoint", () => addresses(s, "web").length === 1, 20_000);
    await new Promise((r) => setImmediate(r));
    const changesBefore = ctx.changes;
    const stateBefore = s.current();

    sim.catalog.touchService("web");
    const touched = sim.catalog.serviceIndex.get("web")!;
    // The source has seen the new index once it blocks on it.
    await until("query at the touched index", () => sim.requestsTo("/v1/health/service/web").some((r) => Number(r.query.index) === touched), 20_000);
    await new Promise((r) => setImmediate(r));
    expect(ctx.changes).to.equal(changesBefore);
    expect(s.current().services).to.deep.equal(stateBefore.services);

    await t.setStatus(webA, "warning");
    await until("a change event", () => ctx.changes > changesBefore, 20_000);
    expect(endpointsOf(s, "web")![0]!.health).to.equal("DEGRADED");
  });

  it("starts over from index 0 when Consul's index goes backwards (snapshot restore) and stays correct", async function () {
    this.timeout(30_000);
    const t = (ctx.target = await make());
    const sim = t.sim!;
    await t.register(webA);
    const s = await newSource(t);
    await until("web endpoint", () => addresses(s, "web").length === 1, 20_000);
    await until("catalog blocking", () => sim.requestsTo("/v1/catalog/services").some((r) => Number(r.query.index) > 5), 20_000);
    const highIndex = Number(s.current().status.revision);
    expect(highIndex).to.be.greaterThan(5);

    const resetAt = performance.now();
    sim.resetIndex(3);
    await t.register(webB); // index 4: still below what the source holds
    await until("web-b seen after the reset", () => addresses(s, "web").length === 2, 20_000);
    // Each watch holds its old index until its blocked query times out with the lower one, then reads from 0 and
    // blocks again on the new, lower index.
    for (const path of ["/v1/catalog/services", "/v1/health/service/web"]) {
      const idx = (r: { query: Record<string, string> }) => Number(r.query.index ?? 0);
      await until(`${path}: a read from 0, then blocking at the new lower index`, () => {
        const after = sim.requestsTo(path, resetAt);
        const restart = after.findIndex((r) => idx(r) === 0);
        return restart >= 0 && after.slice(restart + 1).some((r) => idx(r) > 0 && idx(r) < highIndex);
      }, 20_000);
    }
    await until("revision follows the lower index", () => Number(s.current().status.revision) < highIndex, 20_000);

    await t.setStatus(webB, "critical");
    await until("changes after the reset", () => endpointsOf(s, "web")!.find((e) => e.address === "127.0.0.22")?.health === "UNHEALTHY", 20_000);
  });

  it("treats 500 answers as an outage: nothing removed, stale, recovered afterwards", async function () {
    this.timeout(30_000);
    const t = (ctx.target = await make());
    const sim = t.sim!;
    await t.register(webA);
    const s = await newSource(t);
    await until("web endpoint", () => addresses(s, "web").length === 1, 20_000);
    sim.failWith(500);
    await t.deregister(webA).catch(() => undefined); // refused: Consul is failing
    sim.catalog.write((idx) => sim.catalog.deregisterService(idx, "node-a", "web-a")); // ...but the servers took it
    await until("stale", () => s.current().status.stale, 20_000);
    expect(addresses(s, "web")).to.deep.equal(["127.0.0.11"]);
    expect(s.current().status.lastError).to.contain("rpc error");
    sim.failWith(undefined);
    await until("recovered, web gone", () => !s.current().status.stale && endpointsOf(s, "web") === undefined, 20_000);
  });

  it("with stale reads, applies answers from a server that lost its leader but marks the data stale", async function () {
    this.timeout(30_000);
    const t = (ctx.target = await make());
    const sim = t.sim!;
    await t.register(webA);
    const s = await newSource(t, { stale: true });
    await until("web endpoint", () => addresses(s, "web").length === 1, 20_000);
    sim.setKnownLeader(false);
    sim.catalog.write((idx) => sim.catalog.ensureCheck(idx, "node-a", { CheckID: "service:web-a", Status: "warning", ServiceID: "web-a" }));
    // The follower still answers (and its data moved on): applied, but flagged.
    await until("answer from the leaderless server applied", () => endpointsOf(s, "web")?.[0]?.health === "DEGRADED", 20_000);
    await until("stale while there is no leader", () => s.current().status.stale, 20_000);
    expect(s.current().status.lastError).to.contain("no known leader");
    sim.setKnownLeader(true);
    await t.setStatus(webA, "passing");
    await until("leader back", () => !s.current().status.stale && endpointsOf(s, "web")?.[0]?.health === "HEALTHY", 20_000);
    expect(s.current().status.lastError).to.equal(undefined);
  });

  it("backs off exponentially while Consul is down instead of hammering it", async function () {
    this.timeout(30_000);
    const t = (ctx.target = await make());
    const sim = t.sim!;
    const s = await newSource(t, { backoff: { initial: 100, max: 800 } });
    sim.failWith(500);
    const since = performance.now();
    await new Promise((r) => setTimeout(r, 3000));
    const n = sim.requestsTo("/v1/catalog/services", since).length;
    // 100, 200, 400, 800, 800... ms with at least half of each: at most ~7 in 3 s; a tight loop would be thousands.
    expect(n).to.be.at.least(2).and.at.most(10);
    sim.failWith(undefined);
    await until("recovered", () => !s.current().status.stale && s.current().status.lastError === undefined, 20_000);
  });
}

describe("ConsulSource", () => {
  describe("against the Consul HTTP API simulator", () => {
    consulCases((o) => simulatorTarget(o), true);
  });

  describe("against a real Consul agent", function () {
    before(function () {
      if (!realConsulBinary()) {
        console.log(`      ${REAL_CONSUL_SKIPPED}`);
        this.skip();
      }
    });
    consulCases((o) => realTarget(o), false);
  });
});
