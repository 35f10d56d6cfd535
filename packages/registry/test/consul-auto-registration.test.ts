// Auto-registered workloads through Consul, below the xDS server: the merge rules of the auto-registration source
// (local workload + other replicas' registrations), and the real write/read loop against the Consul HTTP API
// simulator: ConsulWorkloadPublisher registers, renews, updates and deregisters agent services; ConsulSource reads
// them back as remote workloads (not as Consul mesh services); TTL expiry and DeregisterCriticalServiceAfter do the
// rest when a replica stops renewing.
import { expect } from "chai";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { AutoRegistrationSource, type PublishedWorkload, type RemoteWorkload, type WorkloadConnection, type WorkloadEntryConfig } from "../src/auto-registration.js";
import { ConsulSource } from "../src/consul/source.js";
import { ConsulWorkloadPublisher } from "../src/consul/workload-publisher.js";
import {
  consulServiceName,
  healthCheckId,
  livenessCheckId,
  publishableNamespace,
  registrationOf,
  remoteWorkloadOf as recordOf,
  serviceIdOf,
} from "../src/consul/workload-records.js";
import type { ConsulHealthEntry } from "../src/consul/convert.js";
import { setLogLevel } from "../src/logger.js";
import { type AnyConfig, configKey } from "../src/model.js";
import { parseDocuments } from "../src/parse/index.js";
import { Registry } from "../src/registry.js";
import { ConsulSimulator } from "../../../test/consul-simulator.js";
import { until } from "../../../test/helpers/poll.js";

if (!process.env.VMPILOT_LOG_LEVEL) setLogLevel("error");

const GROUP = `apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: ratings, namespace: shop}
spec:
  metadata:
    labels: {app: ratings}
  template:
    serviceAccount: ratings
    ports: {http: 9080}
  probe:
    periodSeconds: 1
    tcpSocket: {port: 9080}
`;

function configs(): ReadonlyMap<string, AnyConfig> {
  const m = new Map<string, AnyConfig>();
  for (const o of parseDocuments("g.yaml", GROUP).objects) m.set(configKey(o), o);
  return m;
}

let streams = 0;
function conn(extra: Partial<WorkloadConnection> = {}): WorkloadConnection {
  return {
    streamId: `s${++streams}`,
    proxyId: "sidecar~10.0.0.7~ratings-vm.shop~shop.svc.cluster.local",
    namespace: "shop",
    group: "ratings",
    ips: ["10.0.0.7"],
    labels: { version: "v2" },
    serviceAccount: "ratings",
    locality: { region: "eu", zone: "eu-1" },
    ...extra,
  };
}

function remote(extra: Partial<RemoteWorkload> = {}): RemoteWorkload {
  return {
    replica: "b",
    registration: "node-b/vmpilot~b~shop~ratings-10.0.0.7",
    namespace: "shop",
    group: "ratings",
    name: "ratings-10.0.0.7",
    address: "10.0.0.7",
    proxyId: "sidecar~10.0.0.7~ratings-vm.shop~shop.svc.cluster.local",
    labels: { version: "v2" },
    serviceAccount: "ratings",
    locality: { region: "eu", zone: "eu-1" },
    state: "connected",
    health: { healthy: true },
    healthIndex: 10,
    ...extra,
  };
}

async function source(replica: string): Promise<AutoRegistrationSource> {
  const s = new AutoRegistrationSource({ cleanupGracePeriodMs: 200, replica });
  await s.start();
  s.setGroups(configs());
  return s;
}

const entryOf = (s: AutoRegistrationSource) => s.current().objects.find((o) => o.metadata.name === "ratings-10.0.0.7") as WorkloadEntryConfig | undefined;

describe("auto-registration source: local workloads merged with other replicas' registrations", function () {
  it("serves a workload only another replica holds, derived from its own copy of the group, equal to the local entry", async function () {
    const a = await source("a");
    const b = await source("b");
    const c = conn();
    b.connect(c);
    b.reportHealth(c.streamId, { healthy: true, at: Date.now() });
    a.setRemote([remote()]);
    const remoteEntry = entryOf(a)!;
    const localEntry = entryOf(b)!;
    expect(remoteEntry).to.deep.equal(localEntry);
    expect(remoteEntry.status).to.deep.equal({ health: "HEALTHY" });
    expect(remoteEntry.spec.labels).to.deep.equal({ app: "ratings", version: "v2" });
    expect(remoteEntry.spec.locality).to.equal("eu/eu-1");
    await a.stop();
    await b.stop();
  });

  it("ignores its own registrations read back, counts a predecessor's with the same name, and drops an entry when the last registration is gone from Consul", async function () {
    const a = new AutoRegistrationSource({ cleanupGracePeriodMs: 200, replica: "a", incarnation: "i2" });
    await a.start();
    a.setGroups(configs());
    const c = conn();
    a.connect(c);
    a.reportHealth(c.streamId, { healthy: false, at: Date.now() });
    // Consul lags behind the local state: the local workload describes itself.
    a.setRemote([remote({ replica: "a", incarnation: "i2", health: { healthy: true }, healthIndex: 99 })]);
    expect(entryOf(a)?.status?.health).to.equal("UNHEALTHY");
    a.disconnect(c.streamId);
    await new Promise((r) => setTimeout(r, 300)); // past the 200 ms grace period
    expect(entryOf(a), "its own stale copy does not keep it").to.equal(undefined);
    a.setRemote([remote({ replica: "a", incarnation: "i1", state: "gone" })]);
    expect(entryOf(a)?.status?.health, "a predecessor's registration, expiring").to.equal("UNHEALTHY");
    a.setRemote([remote()]);
    expect(entryOf(a)).to.not.equal(undefined);
    // Its replica lost the stream, then deregistered it at the end of its grace period.
    a.setRemote([remote({ state: "lingering" })]);
    a.setRemote([]);
    expect(entryOf(a)).to.equal(undefined);
    expect(a.current().objects).to.deep.equal([]);
    await a.stop();
  });

  it("a workload moving from another replica to this one keeps the very same entry object: no report yet here, the remote report holds", async function () {
    const a = await source("a");
    a.setRemote([remote()]);
    const before = entryOf(a)!;
    expect(before.status?.health).to.equal("HEALTHY");
    // The other replica lost the stream (grace period), this one got it, without a health report so far.
    a.setRemote([remote({ state: "lingering" })]);
    expect(entryOf(a)).to.equal(before);
    const c = conn();
    a.connect(c);
    expect(entryOf(a), "probed group, no local report: the remote report vouches").to.equal(before);
    a.reportHealth(c.streamId, { healthy: true, at: Date.now() });
    expect(entryOf(a)).to.equal(before);
    a.setRemote([]);
    expect(entryOf(a)).to.equal(before);
    // Without anyone's report, Istio's rule for probed groups applies.
    const fresh = await source("x");
    fresh.connect(conn());
    expect(entryOf(fresh)?.status?.health).to.equal("UNHEALTHY");
    await a.stop();
    await fresh.stop();
  });

  it("takes the health from the replica that hears the agent when the Envoy and health streams reach different replicas", async function () {
    const a = await source("a");
    a.connect(conn());
    a.setRemote([remote({ health: { healthy: false, message: "connection refused" }, healthIndex: 20 })]);
    expect(entryOf(a)?.status?.health).to.equal("UNHEALTHY");
    a.setRemote([remote({ health: { healthy: true }, healthIndex: 21 })]);
    expect(entryOf(a)?.status?.health).to.equal("HEALTHY");
    // A dead replica's last words do not count.
    a.setRemote([remote({ state: "gone", health: { healthy: true }, healthIndex: 22 })]);
    expect(entryOf(a)?.status?.health).to.equal("UNHEALTHY");
    await a.stop();
  });

  it("keeps a workload whose replica died UNHEALTHY (not removed) until Consul deregisters it; a connected registration describes it over a gone one", async function () {
    const a = await source("a");
    a.setRemote([remote({ state: "gone" })]);
    expect(entryOf(a)?.status?.health).to.equal("UNHEALTHY");
    a.setRemote([remote({ state: "gone" }), remote({ replica: "c", registration: "node-c/x", state: "connected", healthIndex: 30 })]);
    expect(entryOf(a)?.status?.health).to.equal("HEALTHY");
    // Consul reaps the dead replica's registration; the workload leaves c (grace period, then deregistered).
    a.setRemote([remote({ replica: "c", registration: "node-c/x", state: "lingering", healthIndex: 30 })]);
    a.setRemote([]);
    expect(entryOf(a)).to.equal(undefined);
    await a.stop();
  });

  it("keeps a registration that vanished while its replica held a stream (the Consul agent lost its state) UNHEALTHY for about one TTL, then removes it; back in time, it is as before", async function () {
    const a = new AutoRegistrationSource({ cleanupGracePeriodMs: 200, replica: "a", vanishedHoldMs: 400 });
    await a.start();
    a.setGroups(configs());
    a.setRemote([remote()]);
    expect(entryOf(a)?.status?.health).to.equal("HEALTHY");
    a.setRemote([]);
    expect(entryOf(a)?.status?.health, "held, nobody vouches for it").to.equal("UNHEALTHY");
    // Its replica registers it again (its TTL update was answered 404).
    a.setRemote([remote({ healthIndex: 11 })]);
    expect(entryOf(a)?.status?.health).to.equal("HEALTHY");
    const vanishedAt = Date.now();
    a.setRemote([]);
    expect(entryOf(a)?.status?.health).to.equal("UNHEALTHY");
    await until("removed once the hold is over", () => entryOf(a) === undefined, 10_000);
    expect(Date.now() - vanishedAt, "not before the hold").to.be.at.least(350);
    await a.stop();
  });

  it("publishes only local workloads with an entry, with their own report and whether a stream is open", async function () {
    const a = await source("a");
    a.setRemote([remote()]);
    expect(a.published()).to.deep.equal([]);
    const c = conn();
    a.connect(c);
    a.reportHealth(c.streamId, { healthy: false, message: "refused", at: 1 });
    a.disconnect(c.streamId);
    const [p] = a.published();
    expect(p).to.include({ key: "shop/ratings-10.0.0.7", connected: false, probed: true, serviceAccount: "ratings" });
    expect(p!.health).to.deep.equal({ healthy: false, message: "refused", at: 1 });
    expect(p!.ports).to.deep.equal({ http: 9080 });
    await a.stop();
  });
});

describe("Consul registrations of auto-registered workloads (Consul HTTP API simulator)", function () {
  this.timeout(60_000);
  let sim: ConsulSimulator;
  const cleanups: (() => unknown)[] = [];
  const TTL = 1000;
  const GRACE = 1200;
  /** Consul's removal of a dead replica's registrations (`deregisterAfter`): apart from, and longer than, the grace period. */
  const DEREGISTER_AFTER = 2500;

  beforeEach(async function () {
    // Consul's non-user reaper settings, shortened (30 s and 1 m in Consul).
    sim = await ConsulSimulator.start({ checkReapIntervalMs: 100, checkDeregisterIntervalMinMs: 0 });
    cleanups.push(() => sim.close());
  });

  afterEach(async function () {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  async function publisher(src: AutoRegistrationSource, replica: string): Promise<ConsulWorkloadPublisher> {
    const p = new ConsulWorkloadPublisher(
      { consul: { address: sim.address, requestTimeout: 2000 }, replica, servicePrefix: "vmpilot-", ttlMs: TTL, gracePeriodMs: GRACE, deregisterAfterMs: DEREGISTER_AFTER },
      () => src.published(),
    );
    src.on("local", () => p.notify());
    p.start();
    cleanups.push(() => p.stop());
    return p;
  }

  async function consulSource(): Promise<ConsulSource> {
    const cs = new ConsulSource({ address: sim.address, wait: 1000, minInterval: 10, backoff: { initial: 20, max: 100 } });
    await cs.start();
    cleanups.push(() => cs.stop());
    return cs;
  }

  const serviceId = serviceIdOf("a", "shop", "ratings-10.0.0.7");

  it("registers the workload with its facts and two TTL checks; the ConsulSource reads it back as a remote workload, not a Consul service", async function () {
    const a = await source("a");
    const p = await publisher(a, "a");
    const c = conn();
    a.connect(c);
    a.reportHealth(c.streamId, { healthy: true, at: Date.now() });
    await until("registered", () => sim.agentCheckStatus(healthCheckId(serviceId))?.Status === "passing");
    const svc = sim.catalog.services.get(`${sim.nodeName}/${serviceId}`)!;
    expect(svc.Service, "prefix, namespace, group").to.equal("vmpilot-shop--ratings");
    expect(svc.Address).to.equal("10.0.0.7");
    expect(svc.Port).to.equal(9080);
    expect(svc.Tags).to.deep.equal(["vmpilot-auto-registered", "version=v2"]);
    expect(svc.Meta).to.deep.include({ "vmpilot-replica": "a", "vmpilot-namespace": "shop", "vmpilot-group": "ratings", "vmpilot-entry": "ratings-10.0.0.7", "service-account": "ratings", "vmpilot-locality": "eu/eu-1" });
    expect(sim.agentCheckStatus(livenessCheckId(serviceId))?.Status).to.equal("passing");
    await until("held by the publisher", () => p.registrations().size === 1);
    expect(p.registrations()).to.deep.equal(new Map([["shop/ratings-10.0.0.7", serviceId]]));

    const cs = await consulSource();
    const read = await until("read back", () => cs.remoteWorkloads()[0]);
    expect(read).to.deep.include({ replica: "a", namespace: "shop", group: "ratings", name: "ratings-10.0.0.7", address: "10.0.0.7", state: "connected", serviceAccount: "ratings" });
    expect(read.labels).to.deep.equal({ version: "v2" });
    expect(read.health).to.deep.equal({ healthy: true });
    expect(cs.current().services ?? []).to.deep.equal([]);

    // Another replica with the same group derives the very same entry from it.
    const b = await source("b");
    b.setRemote(cs.remoteWorkloads());
    expect(entryOf(b)).to.deep.equal(entryOf(a));
    await a.stop();
    await b.stop();
  });

  it("serves no registration another Consul client made with the marker meta: name, ID, entry and own address must be what vmpilot writes", async function () {
    const a = await source("a");
    await publisher(a, "a");
    a.connect(conn());
    const forged = (body: Record<string, unknown>, meta: Record<string, string>) =>
      sim.apply("/v1/agent/service/register", {
        Port: 9080,
        Tags: ["vmpilot-auto-registered"],
        Meta: { "vmpilot-auto-registered": "1", "vmpilot-replica": "evil", "vmpilot-namespace": "shop", "vmpilot-group": "ratings", ...meta },
        Checks: [{ CheckID: `${body.ID as string}:replica`, Name: "x", TTL: "300s", Status: "passing" }],
        ...body,
      });
    // Some other client's own service, carrying the marker: it has write access to `web`, not to the mesh.
    forged({ ID: "web-1", Name: "web", Address: "10.6.6.6" }, { "vmpilot-entry": "ratings-10.6.6.6" });
    // vmpilot's name and ID, but an entry that is not the address's.
    forged({ ID: "vmpilot~evil~shop~ratings-10.0.0.7", Name: "vmpilot-shop--ratings", Address: "10.6.6.6" }, { "vmpilot-entry": "ratings-10.0.0.7" });
    // No service address of its own: the node's (127.0.0.1) is not taken instead.
    forged({ ID: "vmpilot~evil~shop~ratings-127.0.0.1", Name: "vmpilot-shop--ratings" }, { "vmpilot-entry": "ratings-127.0.0.1" });
    // The group's name without the namespace: one ACL rule would cover the group in every namespace.
    forged({ ID: "vmpilot~evil~shop~ratings-10.6.6.7", Name: "vmpilot-ratings", Address: "10.6.6.7" }, { "vmpilot-entry": "ratings-10.6.6.7" });
    const cs = await consulSource();
    const b = await source("b");
    cs.on("workloads", () => b.setRemote(cs.remoteWorkloads()));
    b.setRemote(cs.remoteWorkloads());
    await until("B serves the genuine registration", () => entryOf(b));
    await until("every forged one reported", () => cs.current().problems.filter((p) => /(not a registration vmpilot writes|service address\)).*; ignored$/.test(p.message)).length === 4 || undefined);
    const names = b.current().objects.map((o) => o.metadata.name).sort();
    expect(names).to.deep.equal(["ratings-10.0.0.7"]);
    expect(b.current().objects[0]!.spec).to.deep.include({ address: "10.0.0.7" });
    expect(cs.remoteWorkloads().map((w) => `${w.replica}/${w.name}`)).to.deep.equal(["a/ratings-10.0.0.7"]);
    await a.stop();
    await b.stop();
  });

  it("keeps the checks alive past several TTLs, follows health and the grace period, and deregisters when the entry goes", async function () {
    const a = await source("a");
    await publisher(a, "a");
    const c = conn();
    a.connect(c);
    await until("registered, awaiting a report", () => sim.agentCheckStatus(healthCheckId(serviceId))?.Status === "warning");
    await new Promise((r) => setTimeout(r, 3 * TTL));
    expect(sim.agentCheckStatus(livenessCheckId(serviceId))?.Status, "renewed, not expired").to.equal("passing");
    a.reportHealth(c.streamId, { healthy: false, message: "connection refused", at: Date.now() });
    await until("health critical", () => sim.agentCheckStatus(healthCheckId(serviceId))?.Status === "critical");
    expect(sim.agentCheckStatus(healthCheckId(serviceId))?.Output).to.equal("unhealthy: connection refused");
    a.disconnect(c.streamId);
    await until("liveness warning during the grace period", () => sim.agentCheckStatus(livenessCheckId(serviceId))?.Status === "warning");
    await until("deregistered after the grace period", () => !sim.catalog.services.has(`${sim.nodeName}/${serviceId}`));
    await a.stop();
  });

  it("registers again when the agent lost the registration (TTL update answered 404)", async function () {
    const a = await source("a");
    await publisher(a, "a");
    a.connect(conn());
    await until("registered", () => sim.catalog.services.has(`${sim.nodeName}/${serviceId}`));
    sim.apply(`/v1/agent/service/deregister/${serviceId}`, {});
    expect(sim.catalog.services.has(`${sim.nodeName}/${serviceId}`)).to.equal(false);
    await until("registered again", () => sim.catalog.services.has(`${sim.nodeName}/${serviceId}`), 10 * TTL);
    await a.stop();
  });

  it("a replica that stops renewing: the liveness check expires (critical, remote state gone), then Consul deregisters after deregisterAfter (not the grace period)", async function () {
    const a = await source("a");
    const p = await publisher(a, "a");
    const c = conn();
    a.connect(c);
    a.reportHealth(c.streamId, { healthy: true, at: Date.now() });
    const cs = await consulSource();
    const b = await source("b");
    cs.on("workloads", () => b.setRemote(cs.remoteWorkloads()));
    await until("B serves it HEALTHY", () => entryOf(b)?.status?.health === "HEALTHY");
    await p.stop();
    const stoppedAt = Date.now();
    await until("B marks it UNHEALTHY", () => entryOf(b)?.status?.health === "UNHEALTHY", 10 * TTL);
    const unhealthyAfter = Date.now() - stoppedAt;
    expect(sim.agentCheckStatus(livenessCheckId(serviceId))?.Output).to.match(/^TTL expired/);
    expect(cs.remoteWorkloads()[0]?.state).to.equal("gone");
    await until("B removes it", () => entryOf(b) === undefined, 10 * TTL + 10 * DEREGISTER_AFTER);
    const removedAfter = Date.now() - stoppedAt;
    expect(unhealthyAfter, "not before two thirds of the TTL (the last renewal)").to.be.at.least(TTL * 0.6);
    expect(removedAfter - unhealthyAfter, "removal waits out deregisterAfter").to.be.at.least(DEREGISTER_AFTER * 0.9);
    await a.stop();
    await b.stop();
  });

  it("an agent that loses the registration again right after each re-registration gets one re-registration per renewal tick, not a tight loop", async function () {
    const a = await source("a");
    await publisher(a, "a");
    // Every registration vanishes as soon as it is made (an agent behind a load balancer that is not the one
    // the TTL updates reach behaves the same): each TTL update is answered 404.
    const registered: number[] = [];
    const forget = () => {
      if (!sim.catalog.services.has(`${sim.nodeName}/${serviceId}`)) return;
      registered.push(performance.now());
      setImmediate(() => sim.catalog.services.has(`${sim.nodeName}/${serviceId}`) && sim.apply(`/v1/agent/service/deregister/${serviceId}`, {}));
    };
    sim.catalog.events.on("change", forget);
    cleanups.push(() => sim.catalog.events.off("change", forget));
    a.connect(conn());
    await until("registered four times", () => registered.length >= 4, 20 * TTL);
    // Once at once, then once per renewal tick (TTL/3): the 3rd and 4th are at least a tick apart.
    expect(registered[3]! - registered[2]!, "ms between re-registrations").to.be.at.least((TTL / 3) * 0.8);
    await a.stop();
  });

  it("treats the 500 \"does not have associated TTL\" (older agents, or a check that lost its TTL) like a 404: registers again, restoring the TTL checks", async function () {
    const a = await source("a");
    const p = await publisher(a, "a");
    a.connect(conn());
    await until("registered", () => sim.agentCheckStatus(livenessCheckId(serviceId))?.Status === "passing");
    // Someone re-registered the service with checks that have no TTL: Consul refuses TTL updates on them.
    const reg = registrationOf(a.published()[0]!, { ...p.options });
    sim.apply("/v1/agent/service/register", { ...reg, Checks: reg.Checks.map(({ TTL: _ttl, DeregisterCriticalServiceAfter: _d, ...c }) => c) });
    const res = await fetch(`${sim.address}/v1/agent/check/pass/${encodeURIComponent(livenessCheckId(serviceId))}`, { method: "PUT" });
    expect([res.status, await res.text()]).to.deep.equal([500, `CheckID "${livenessCheckId(serviceId)}" does not have associated TTL`]);
    const since = performance.now();
    await until("registered again by the publisher", () => sim.requestsTo("/v1/agent/service/register", since).length > 0, 10 * TTL);
    await until("TTL updates accepted again", () => sim.requestsTo("/v1/agent/check/pass/", since).some((r) => r.at > sim.requestsTo("/v1/agent/service/register", since)[0]!.at));
    expect(p.lastError).to.equal(undefined);
    await a.stop();
  });

  it("writes with the ACL token from the token file; a refused token is reported, and fixing the file recovers", async function () {
    await sim.close();
    sim = await ConsulSimulator.start({ aclToken: "s3cret", checkReapIntervalMs: 100, checkDeregisterIntervalMinMs: 0 });
    cleanups.push(() => sim.close());
    const dir = await mkdtemp(path.join(os.tmpdir(), "vmpilot-consul-acl-"));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const tokenFile = path.join(dir, "token");
    await writeFile(tokenFile, "wrong\n");
    const a = await source("a");
    const errors: (string | undefined)[] = [];
    const p = new ConsulWorkloadPublisher(
      { consul: { address: sim.address, tokenFile }, replica: "a", servicePrefix: "vmpilot-", ttlMs: TTL, gracePeriodMs: GRACE, deregisterAfterMs: DEREGISTER_AFTER, onError: (m) => errors.push(m) },
      () => a.published(),
    );
    a.on("local", () => p.notify());
    p.start();
    cleanups.push(() => p.stop());
    a.connect(conn());
    await until("denied", () => errors.at(-1));
    expect(errors.at(-1)).to.match(/403.*ACL not found/);
    await writeFile(tokenFile, "s3cret\n");
    await until("registered with the right token", () => sim.catalog.services.has(`${sim.nodeName}/${serviceId}`), 10 * TTL);
    await until("error cleared", () => errors.at(-1) === undefined);
    expect(sim.requestsTo("/v1/agent/service/register").at(-1)?.token).to.equal("s3cret");
    await a.stop();
  });

  it("a registry whose auto-registration source is gated on the ConsulSource's start has the read-back in its first snapshot", async function () {
    const a = await source("a");
    await publisher(a, "a");
    a.connect(conn());
    await until("registered", () => sim.catalog.services.has(`${sim.nodeName}/${serviceId}`));
    const b = new AutoRegistrationSource({ cleanupGracePeriodMs: 200, replica: "b" });
    b.setGroups(configs());
    const cs = new ConsulSource({ address: sim.address, wait: 1000, minInterval: 10 });
    cleanups.push(() => cs.stop());
    // As the control plane wires it; started() is asked before cs.start() runs (b starts first).
    b.setStartGate(async () => {
      await cs.started();
      if (cs.current().status.synced) b.setRemote(cs.remoteWorkloads());
    });
    const registry = new Registry({ sources: [b, cs] });
    cleanups.push(() => registry.stop());
    const first = await registry.start();
    expect(first.configs.get("WorkloadEntry/shop/ratings-10.0.0.7")?.kind).to.equal("WorkloadEntry");
    await a.stop();
  });

  it("the ConsulSource keeps remote workloads through a Consul outage", async function () {
    const a = await source("a");
    await publisher(a, "a");
    a.connect(conn());
    const cs = await consulSource();
    await until("read back", () => cs.remoteWorkloads().length === 1);
    // Only the reader is cut off: the simulator's listener goes away while its agent (and TTLs) run on.
    await sim.stop();
    await until("stale", () => cs.current().status.stale);
    await new Promise((r) => setTimeout(r, 500));
    expect(cs.remoteWorkloads().map((w) => w.name)).to.deep.equal(["ratings-10.0.0.7"]);
    await sim.start();
    await until("fresh again", () => !cs.current().status.stale);
    expect(cs.remoteWorkloads().length).to.equal(1);
    await a.stop();
  });
});

describe("Consul registrations of auto-registered workloads: a Consul that accepts connections and never answers", function () {
  this.timeout(60_000);
  let server: net.Server;
  const sockets = new Set<net.Socket>();
  let requests = 0;

  beforeEach(async function () {
    requests = 0;
    // Reads each request and never answers it (a wedged agent, a half-open path): only a timeout or an abort ends it.
    server = net.createServer((s) => {
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
      s.on("error", () => undefined);
      s.on("data", (d: Buffer) => (requests += (d.toString("latin1").match(/^(PUT|GET) /gm) ?? []).length));
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  });

  afterEach(async function () {
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  const workloads = (n: number): PublishedWorkload[] =>
    Array.from({ length: n }, (_, i) => ({
      key: `shop/ratings-10.0.1.${i}`,
      namespace: "shop",
      group: "ratings",
      name: `ratings-10.0.1.${i}`,
      address: `10.0.1.${i}`,
      proxyId: `p${i}`,
      labels: {},
      connected: true,
      probed: false,
      ports: { http: 9080 },
    }));

  function publisher(requestTimeout: number, errors: (string | undefined)[] = []): ConsulWorkloadPublisher {
    const address = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
    const list = workloads(40);
    return new ConsulWorkloadPublisher(
      { consul: { address, requestTimeout }, replica: "a", servicePrefix: "vmpilot-", ttlMs: 30_000, gracePeriodMs: 10_000, deregisterAfterMs: 600_000, concurrency: 8, onError: (m) => errors.push(m) },
      () => list,
    );
  }

  it("stop() returns promptly, with writes in flight and more queued (they are aborted, not waited out)", async function () {
    const p = publisher(600_000);
    p.start();
    await until("writes in flight", () => requests >= 8);
    const t0 = Date.now();
    await p.stop();
    // Without the abort this waits for the 10 min request timeout, five rounds of it.
    expect(Date.now() - t0, "stop() took").to.be.below(10_000);
    await until("the sockets are closed", () => sockets.size === 0);
    expect(requests, "nothing started after stop()").to.equal(8);
  });

  it("ends a pass at the first write that got no answer, instead of sending every other write into the same timeout", async function () {
    const errors: (string | undefined)[] = [];
    const p = publisher(300, errors);
    p.start();
    await until("the first pass ended", () => p.passes >= 1, 20_000);
    await p.stop();
    expect(requests, "only the writes already in flight").to.equal(8);
    expect(errors[0]).to.match(/8 Consul write\(s\) failed, first: register .*timed out/).and.match(/32 more write\(s\) left for the next renewal tick/);
  });
});

describe("Consul registration records (pure)", function () {
  it("names registrations PREFIX + NAMESPACE--GROUP, unambiguous as to the namespace for every namespace it publishes", function () {
    expect(consulServiceName("vmpilot-", "shop", "ratings.v1")).to.equal("vmpilot-shop--ratings-v1");
    expect(consulServiceName("vmpilot-", "a-b", "c")).to.not.equal(consulServiceName("vmpilot-", "a", "b-c"));
    expect(["shop", "a-b", "x1"].map(publishableNamespace)).to.deep.equal([true, true, true]);
    // `--` in the namespace would make `vmpilot-a--b--c` readable as namespace a or a--b: not published.
    expect(["a--b", "Shop", "-a", "a.b", ""].map(publishableNamespace)).to.deep.equal([false, false, false, false, false]);
  });

  it("round-trips a workload through a health entry: liveness, health, node failure (serfHealth, maintenance; no other node check)", function () {
    const published = {
      key: "shop/ratings-10.0.0.7",
      namespace: "shop",
      group: "ratings.v1",
      name: "ratings.v1-10.0.0.7",
      address: "10.0.0.7",
      proxyId: "p",
      labels: { b: "2", a: "1" },
      connected: true,
      probed: true,
      ports: { http: 9080, grpc: 9090 },
    };
    const reg = registrationOf(published, { replica: "r1", servicePrefix: "vm-", ttlMs: 30_000, gracePeriodMs: 10_000, deregisterAfterMs: 600_000 });
    expect(reg.Name, "Consul DNS-safe, namespace and group").to.equal("vm-shop--ratings-v1");
    expect(reg.Tags).to.deep.equal(["vmpilot-auto-registered", "a=1", "b=2"]);
    expect(reg.Checks.map((c) => [c.CheckID, c.TTL, c.Status, c.DeregisterCriticalServiceAfter])).to.deep.equal([
      [`${reg.ID}:replica`, "30s", "passing", "600s"],
      [`${reg.ID}:health`, "300s", "warning", undefined],
    ]);
    const entry = (checks: { CheckID: string; Status: string; ServiceID?: string; Output?: string }[]): ConsulHealthEntry => ({
      Node: { Node: "n1", Address: "192.0.2.1" },
      Service: { ID: reg.ID, Service: reg.Name, Tags: reg.Tags, Address: reg.Address, Port: reg.Port, Meta: reg.Meta },
      Checks: checks,
    });
    const remoteWorkloadOf = (e: ConsulHealthEntry) => recordOf(e, "vm-");
    expect(recordOf(entry([]), "vmpilot-"), "another prefix: not ours").to.be.a("string");
    const ok = remoteWorkloadOf(entry([{ CheckID: `${reg.ID}:replica`, Status: "passing", ServiceID: reg.ID }, { CheckID: `${reg.ID}:health`, Status: "warning", ServiceID: reg.ID }]));
    expect(ok).to.deep.include({ state: "connected", group: "ratings.v1", name: "ratings.v1-10.0.0.7", registration: `n1/${reg.ID}` });
    expect((ok as RemoteWorkload).health, "warning = no report").to.equal(undefined);
    const lingering = remoteWorkloadOf(
      entry([
        { CheckID: `${reg.ID}:replica`, Status: "warning", ServiceID: reg.ID },
        { CheckID: `${reg.ID}:health`, Status: "critical", Output: "unhealthy: refused", ServiceID: reg.ID },
      ]),
    ) as RemoteWorkload;
    expect(lingering.state).to.equal("lingering");
    expect(lingering.health).to.deep.equal({ healthy: false, message: "refused" });
    const nodeDown = remoteWorkloadOf(entry([{ CheckID: "serfHealth", Status: "critical", ServiceID: "" }, { CheckID: `${reg.ID}:replica`, Status: "passing", ServiceID: reg.ID }])) as RemoteWorkload;
    expect(nodeDown.state).to.equal("gone");
    const maintenance = remoteWorkloadOf(entry([{ CheckID: "_node_maintenance", Status: "critical", ServiceID: "" }, { CheckID: `${reg.ID}:replica`, Status: "passing", ServiceID: reg.ID }])) as RemoteWorkload;
    expect(maintenance.state, "node in maintenance").to.equal("gone");
    const otherNodeCheck = remoteWorkloadOf(entry([{ CheckID: "disk-space", Status: "critical", ServiceID: "" }, { CheckID: `${reg.ID}:replica`, Status: "passing", ServiceID: reg.ID }])) as RemoteWorkload;
    expect(otherNodeCheck.state, "any other failing node check says nothing about the replica").to.equal("connected");
    const other = remoteWorkloadOf({ ...entry([]), Service: { ...entry([]).Service, Meta: { ...reg.Meta, "vmpilot-auto-registered": "9" } } });
    expect(other).to.be.a("string").and.match(/format "9"/);
  });
});
