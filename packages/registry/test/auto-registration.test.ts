// The auto-registration source's state machine (connect, more streams, disconnect, grace, reconnect, health,
// missing and deleted groups), with groups parsed by the real parser, and the same source inside a real
// Registry next to a real FileSource: the entry is selected by a ServiceEntry and its endpoint carries the
// reported health.
import { expect } from "chai";
import { mkdtemp, rm, unlink, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { AutoRegistrationSource, autoRegisteredName, type WorkloadConnection, type WorkloadEntryConfig } from "../src/auto-registration.js";
import { FileSource } from "../src/file-source.js";
import { setLogLevel } from "../src/logger.js";
import { type AnyConfig, configKey } from "../src/model.js";
import { parseDocuments } from "../src/parse/index.js";
import { Registry } from "../src/registry.js";
import { until } from "../../../test/helpers/poll.js";

if (!process.env.VMPILOT_LOG_LEVEL) setLogLevel("error");

const GROUP = `apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: ratings, namespace: shop}
spec:
  metadata:
    labels: {app: ratings, tier: backend}
    annotations: {team: reviews}
  template:
    serviceAccount: ratings
    ports: {http: 9080}
    labels: {version: v1, tier: template}
    network: net-a
    locality: us-east/a
    weight: 3
  probe:
    periodSeconds: 1
    tcpSocket: {port: 9080}
`;

function configsOf(...texts: string[]): ReadonlyMap<string, AnyConfig> {
  const m = new Map<string, AnyConfig>();
  for (const t of texts) {
    const r = parseDocuments("groups.yaml", t);
    expect(r.problems.filter((p) => p.severity === "error")).to.deep.equal([]);
    for (const o of r.objects) m.set(configKey(o), o);
  }
  return m;
}

let streamCounter = 0;
function conn(extra: Partial<WorkloadConnection> = {}): WorkloadConnection {
  return {
    streamId: `s${++streamCounter}`,
    proxyId: "sidecar~10.0.0.7~ratings-vm.shop~shop.svc.cluster.local",
    namespace: "shop",
    group: "ratings",
    ips: ["10.0.0.7"],
    labels: { version: "v2", host: "vm-7" },
    serviceAccount: "ratings",
    ...extra,
  };
}

describe("auto-registration source", function () {
  let src: AutoRegistrationSource;
  let changes: number;

  beforeEach(async function () {
    src = new AutoRegistrationSource({ cleanupGracePeriodMs: 150 });
    changes = 0;
    src.on("change", () => changes++);
    await src.start();
    src.setGroups(configsOf(GROUP));
  });
  afterEach(async () => src.stop());

  const entries = () => src.current().objects as WorkloadEntryConfig[];
  const problems = () => src.current().problems;

  it("names entries <group>-<ip> as DNS-1123 subdomains", function () {
    expect(autoRegisteredName("ratings", "10.0.0.7")).to.equal("ratings-10.0.0.7");
    expect(autoRegisteredName("ratings", "FD00::7")).to.equal("ratings-fd00--7");
    expect(autoRegisteredName("ratings", "::1")).to.equal("ratings---1");
  });

  it("creates the entry from the group's template on connect: labels node > group metadata > template, address, ports, identity, origin", function () {
    const c = conn({ locality: { region: "eu-west", zone: "b" } });
    src.connect(c);
    expect(changes).to.equal(1);
    expect(entries()).to.have.length(1);
    const e = entries()[0]!;
    expect(e.kind).to.equal("WorkloadEntry");
    expect(e.metadata).to.deep.include({ name: "ratings-10.0.0.7", namespace: "shop" });
    expect(e.metadata.annotations).to.deep.equal({ team: "reviews", "istio.io/autoRegistrationGroup": "ratings", "proxy.istio.io/health-checks-enabled": "true" });
    expect(e.spec).to.deep.equal({
      address: "10.0.0.7",
      ports: { http: 9080 },
      labels: { app: "ratings", tier: "backend", version: "v2", host: "vm-7" },
      serviceAccount: "ratings",
      network: "net-a",
      locality: "eu-west/b",
      weight: 3,
    });
    expect(e.origin).to.deep.equal({ type: "auto-registered", group: "ratings", namespace: "shop", proxyId: c.proxyId });
    // The group has a probe: nobody has vouched for the workload yet.
    expect(e.status).to.deep.equal({ health: "UNHEALTHY" });
    expect(problems()).to.deep.equal([]);
  });

  it("keeps one entry for several streams of one workload, and removes it a grace period after the last one closes", async function () {
    const envoy = conn();
    const health = conn({ proxyId: "grpc~10.0.0.7~ratings-vm.shop~shop.svc.cluster.local" });
    src.connect(envoy);
    src.connect(health);
    expect(entries()).to.have.length(1);
    expect(entries()[0]!.origin).to.deep.include({ proxyId: health.proxyId });
    src.disconnect(health.streamId);
    expect(entries()).to.have.length(1);
    expect(entries()[0]!.origin).to.deep.include({ proxyId: envoy.proxyId });
    const before = changes;
    src.disconnect(envoy.streamId);
    expect(entries(), "kept during the grace period").to.have.length(1);
    expect(changes).to.equal(before);
    await until("entry removed after the grace period", () => entries().length === 0);
    expect(changes).to.equal(before + 1);
  });

  it("cancels the removal when the workload reconnects within the grace period, keeping its health", async function () {
    const first = conn();
    src.connect(first);
    src.reportHealth(first.streamId, { healthy: true, at: Date.now() });
    const entry = entries()[0]!;
    expect(entry.status).to.deep.equal({ health: "HEALTHY" });
    src.disconnect(first.streamId);
    src.connect(conn());
    // Longer than the grace period: had the removal not been cancelled, it would have happened.
    await new Promise((r) => setTimeout(r, 400));
    expect(entries()).to.have.length(1);
    expect(entries()[0], "unchanged object").to.equal(entry);
  });

  it("maps health reports to status.health and ignores reports from streams it does not register", function () {
    const c = conn();
    src.connect(c);
    expect(src.reportHealth(c.streamId, { healthy: true, at: 1 })).to.equal(true);
    expect(entries()[0]!.status).to.deep.equal({ health: "HEALTHY" });
    const n = changes;
    src.reportHealth(c.streamId, { healthy: true, at: 2 });
    expect(changes, "a repeated verdict is no change").to.equal(n);
    src.reportHealth(c.streamId, { healthy: false, message: "connect ECONNREFUSED", at: 3 });
    expect(entries()[0]!.status).to.deep.equal({ health: "UNHEALTHY" });
    src.reportHealth(c.streamId, { healthy: true, at: 4 });
    expect(entries()[0]!.status).to.deep.equal({ health: "HEALTHY" });
    expect(src.reportHealth("not-a-stream", { healthy: false, at: 5 })).to.equal(false);
  });

  it("without a group: no entry, a warning problem while the proxy is connected; a group created later registers it", function () {
    const c = conn({ group: "missing" });
    src.connect(c);
    expect(entries()).to.deep.equal([]);
    expect(problems()).to.have.length(1);
    expect(problems()[0]).to.deep.include({ severity: "warning", kind: "WorkloadGroup", name: "missing", namespace: "shop", line: 0 });
    expect(problems()[0]!.message).to.match(/WorkloadGroup shop\/missing, which does not exist/);
    src.setGroups(configsOf(GROUP, GROUP.replace("name: ratings,", "name: missing,")));
    expect(entries().map((e) => e.metadata.name)).to.deep.equal(["missing-10.0.0.7"]);
    expect(problems()).to.deep.equal([]);
    src.disconnect(c.streamId);
    expect(entries(), "registered now: grace applies").to.have.length(1);
  });

  it("drops an unregistered proxy's problem as soon as it disconnects (no grace for what was never registered)", function () {
    const c = conn({ group: "missing" });
    src.connect(c);
    src.disconnect(c.streamId);
    expect(problems()).to.deep.equal([]);
    expect(entries()).to.deep.equal([]);
  });

  it("a group in another namespace does not count", function () {
    src.connect(conn({ namespace: "other" }));
    expect(entries()).to.deep.equal([]);
    expect(problems()[0]!.message).to.contain("WorkloadGroup other/ratings");
  });

  it("removes the entry when its group is deleted while connected, and restores it when the group returns", function () {
    const c = conn();
    src.connect(c);
    src.setGroups(configsOf());
    expect(entries()).to.deep.equal([]);
    expect(problems()).to.have.length(1);
    src.setGroups(configsOf(GROUP));
    expect(entries()).to.have.length(1);
  });

  it("removes a lingering entry at once when its group is deleted during the grace period", function () {
    const c = conn();
    src.connect(c);
    src.disconnect(c.streamId);
    src.setGroups(configsOf());
    expect(entries()).to.deep.equal([]);
    expect(problems()).to.deep.equal([]);
  });

  it("re-derives entries from an edited group, and keeps the very same object when nothing it reads changed", function () {
    src.connect(conn());
    const before = entries()[0]!;
    src.setGroups(configsOf(GROUP));
    expect(entries()[0], "re-parsed but equal group").to.equal(before);
    src.setGroups(configsOf(GROUP.replace("http: 9080", "http: 9090")));
    expect(entries()[0]!.spec.ports).to.deep.equal({ http: 9090 });
  });

  it("refuses a proxy whose service account is not the group's, and one without an IP", function () {
    src.connect(conn({ serviceAccount: "intruder" }));
    src.connect(conn({ ips: [], proxyId: "grpc-client-without-ip" }));
    expect(entries()).to.deep.equal([]);
    const messages = problems().map((p) => p.message);
    expect(messages.some((m) => /service account intruder.*service account ratings; not registered/.test(m))).to.equal(true);
    expect(messages.some((m) => /grpc-client-without-ip .* has no IP address/.test(m))).to.equal(true);
    expect(problems().find((p) => p.message.includes("intruder"))!.severity).to.equal("error");
  });

  it("takes the proxy's service account when the template names none; no probe means healthy until told otherwise", function () {
    src.setGroups(configsOf(GROUP.replace("    serviceAccount: ratings\n", "").replace(/  probe:\n(    .*\n)+/, "")));
    src.connect(conn({ serviceAccount: "ratings-vm" }));
    const e = entries()[0]!;
    expect(e.spec.serviceAccount).to.equal("ratings-vm");
    expect(e).not.to.have.property("status");
    expect(e.metadata.annotations).not.to.have.property("proxy.istio.io/health-checks-enabled");
  });

  it("stays usable by a successor registry: only the last stop clears it", async function () {
    src.connect(conn());
    await src.start(); // a reloaded control plane's new registry
    await src.stop(); // ... and the old one going away
    expect(entries()).to.have.length(1);
  });
});

describe("auto-registration source in a Registry with files", function () {
  this.timeout(30_000);
  let dir: string;
  let registry: Registry;
  let src: AutoRegistrationSource;

  before(async function () {
    dir = await mkdtemp(path.join(os.tmpdir(), "vmpilot-autoreg-"));
    await writeFile(path.join(dir, "group.yaml"), GROUP);
    await writeFile(
      path.join(dir, "se.yaml"),
      `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: shop}
spec:
  hosts: [ratings.shop.internal]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: ratings}}
`,
    );
    src = new AutoRegistrationSource({ cleanupGracePeriodMs: 200 });
    registry = new Registry({ sources: [new FileSource({ dirs: [dir] }), src] });
    // What the control plane glue does: every snapshot's config feeds the groups back.
    registry.on("snapshot", (s) => src.setGroups(s.configs));
    src.setGroups((await registry.start()).configs);
  });
  after(async () => {
    await registry?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  const endpoints = () => registry.current().endpoints.get("shop/ratings.shop.internal") ?? [];

  it("serves the entry as an endpoint of the selecting ServiceEntry, with its health, and removes it after the grace period", async function () {
    const c = conn();
    src.connect(c);
    const [ep] = await until("endpoint", () => (endpoints().length === 1 ? endpoints() : undefined));
    expect(ep).to.deep.include({ address: "10.0.0.7", health: "UNHEALTHY", workload: "WorkloadEntry/shop/ratings-10.0.0.7", serviceAccount: "ratings" });
    expect(ep!.spiffeId).to.equal("spiffe://cluster.local/ns/shop/sa/ratings");
    src.reportHealth(c.streamId, { healthy: true, at: Date.now() });
    await until("healthy", () => endpoints()[0]?.health === "HEALTHY");
    const snap = registry.current();
    expect(snap.configs.get("WorkloadEntry/shop/ratings-10.0.0.7")!.origin.type).to.equal("auto-registered");
    src.disconnect(c.streamId);
    await until("endpoint removed", () => endpoints().length === 0);
  });

  it("removes a connected workload's entry when the group file is deleted", async function () {
    src.connect(conn());
    await until("endpoint", () => endpoints().length === 1);
    await unlink(path.join(dir, "group.yaml"));
    await until("endpoint removed with the group", () => endpoints().length === 0);
    await until("problem visible", () => registry.current().problems.some((p) => p.name === "ratings" && /does not exist/.test(p.message)));
  });
});
