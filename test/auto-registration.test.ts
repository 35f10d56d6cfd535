// WorkloadGroup auto-registration end to end (issue 5, "Done when"): the real control plane (files, registry,
// ResourceCache, ADS on the plaintext and mTLS ports, CA) and the REAL agent (in-process `vmpilot-agent run`:
// token -> certificate from the CA, HTTP probe of a tiny app, health reports over its own mTLS ADS stream).
// The workload appears in /debug/registryz on connect, its endpoint turns UNHEALTHY in EDS when the app stops
// (sent, not dropped), HEALTHY when it returns, and disappears a grace period after the agent stops.
import { expect } from "chai";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Agent } from "@vmpilot/agent/agent";
import { parseAgentConfig } from "@vmpilot/agent/config";
import { memoryLogger } from "@vmpilot/agent/log";
import { ResourceCache } from "@vmpilot/xds/cache";
import { resolveServerConfig } from "@vmpilot/xds/server/config";
import { TypeUrl } from "@vmpilot/xds/protos";
import { RawAdsClient, testNode } from "./helpers/raw-ads-client.js";
import { eventually, TestControlPlane } from "./helpers/e2e.js";
import { EdsRecorder } from "./helpers/eds-recorder.js";

type J = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const HOST = "ratings.shop.internal";
const CLUSTER = `outbound|9080||${HOST}`;
const VM_IP = "127.0.0.7";
const ENTRY = `ratings-${VM_IP}`;
const GRACE_MS = 1500;

function files(appPort: number): Record<string, string> {
  return {
    "ratings.yaml": `apiVersion: networking.istio.io/v1
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
    failureThreshold: 1
    httpGet: {path: /healthz, port: ${appPort}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: shop}
spec:
  hosts: [${HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: ratings}}
`,
  };
}

/** The tiny application the agent probes; stopped and started again on the same port. */
class App {
  private server: http.Server | undefined;
  port = 0;
  async start(): Promise<void> {
    const s = http.createServer((_req, res) => res.end("ok\n"));
    await new Promise<void>((resolve, reject) => {
      s.once("error", reject);
      s.listen(this.port, "127.0.0.1", () => resolve());
    });
    this.port = (s.address() as AddressInfo).port;
    this.server = s;
  }
  async stop(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (!s) return;
    await new Promise<void>((r) => {
      s.close(() => r());
      s.closeAllConnections();
    });
  }
}

describe("WorkloadGroup auto-registration (real control plane, real agent, real probe)", function () {
  this.timeout(120_000);
  let stateDir: string;
  let agentDir: string;
  let tcp: TestControlPlane;
  let app: App;
  let agent: Agent | undefined;
  let eds: EdsRecorder;
  const clients: RawAdsClient<"sotw">[] = [];
  const agentLog = memoryLogger();

  before(async function () {
    app = new App();
    await app.start();
    stateDir = await mkdtemp(path.join(os.tmpdir(), "vmpilot-autoreg-state-"));
    agentDir = await mkdtemp(path.join(os.tmpdir(), "vmpilot-autoreg-agent-"));
    tcp = await TestControlPlane.start(() => new ResourceCache(), files(app.port), "127.0.0.1:0", {
      stateDir,
      secureAddr: "127.0.0.1:0",
      autoRegistration: { cleanupGracePeriod: `${GRACE_MS}ms` },
    });
    const ca = tcp.cp.meshCa!;
    await writeFile(path.join(agentDir, "root.pem"), ca.authority.rootCertPem);
    await writeFile(path.join(agentDir, "token"), await ca.tokens.create({ trustDomain: "cluster.local", namespace: "shop", serviceAccount: "ratings" }));
    // What `istioctl x workload entry configure` would derive from the group: the same probe, run by the agent.
    const cfg = parseAgentConfig(
      `name: ratings-vm
namespace: shop
serviceAccount: ratings
address: ${VM_IP}
labels: {version: v1}
autoRegisterGroup: ratings
proxy: {kind: grpc}
grpc: {xdsProxy: false}
controlPlane: {address: "${tcp.cp.addresses.secure}", tokenFile: ${agentDir}/token, rootCertFile: ${agentDir}/root.pem}
output: {dir: ${agentDir}/out}
status: {address: "127.0.0.1:0", readinessAddress: "127.0.0.1:0"}
probe: {httpGet: {path: /healthz, port: ${app.port}}, periodSeconds: 1, failureThreshold: 1}
`,
      path.join(agentDir, "agent.yaml"),
    );
    eds = new EdsRecorder(tcp.xdsAddress, CLUSTER);
    agent = new Agent(cfg, { logger: agentLog });
    await agent.start();
  });

  after(async function () {
    await eds?.stop();
    await agent?.stop();
    for (const c of clients.splice(0)) c.close();
    await tcp?.stop();
    await app?.stop();
    for (const d of [stateDir, agentDir]) if (d) await rm(d, { recursive: true, force: true });
  });

  afterEach(function () {
    if (this.currentTest?.state === "failed") console.log(`agent log:\n  ${agentLog.lines.join("\n  ")}`);
  });

  async function registryEndpoint(): Promise<J | undefined> {
    const z = JSON.parse((await tcp.get("/debug/registryz")).body) as { services: J[] };
    return z.services.find((s) => s.hostname === HOST)?.endpoints.find((e: J) => e.address === VM_IP);
  }

  it("registers the workload on connect: entry in /debug/registryz and /debug/configz, HEALTHY in EDS once the probe passes", async function () {
    const { value: ep } = await eventually("auto-registered endpoint in /debug/registryz", 30_000, async () => {
      const e = await registryEndpoint();
      return e?.health === "HEALTHY" ? e : undefined;
    });
    expect(ep.workload).to.equal(`WorkloadEntry/shop/${ENTRY}`);
    expect(ep.labels).to.deep.equal({ app: "ratings", version: "v1" });
    expect(ep.ports).to.deep.equal({ http: 9080 });
    expect(ep.spiffeId).to.equal("spiffe://cluster.local/ns/shop/sa/ratings");
    expect(ep.origin).to.match(/^auto-registered:ratings\/shop by grpc~127\.0\.0\.7~ratings-vm\.shop~shop\.svc\.cluster\.local$/);

    const configz = JSON.parse((await tcp.get("/debug/configz")).body) as { configs: J[] };
    const entry = configz.configs.find((c) => c.kind === "WorkloadEntry" && c.name === ENTRY)!;
    expect(entry.namespace).to.equal("shop");
    expect(entry.spec.address).to.equal(VM_IP);
    expect(entry.metadata.annotations).to.include({ "istio.io/autoRegistrationGroup": "ratings" });
    expect(entry.status).to.deep.equal({ health: "HEALTHY" });

    await eventually("HEALTHY endpoint in EDS", 20_000, async () => (eds.health(VM_IP) === "HEALTHY" ? true : undefined));
  });

  it("turns the endpoint UNHEALTHY (still sent) within about one probe period after the app stops, HEALTHY after it returns", async function () {
    await app.stop();
    const down = await eventually("UNHEALTHY endpoint in EDS", 20_000, async () => (eds.health(VM_IP) === "UNHEALTHY" ? true : undefined));
    console.log(`      (app stopped -> UNHEALTHY in EDS: ${down.elapsedMs} ms; probe period 1000 ms)`);
    expect((await registryEndpoint())?.health).to.equal("UNHEALTHY");
    const syncz = await tcp.syncz();
    const reporter = (syncz as unknown as J[]).find((s) => s.proxyId.startsWith("grpc~127.0.0.7~"));
    expect(reporter?.health?.healthy).to.equal(false);

    await app.start();
    const up = await eventually("HEALTHY endpoint in EDS again", 20_000, async () => (eds.health(VM_IP) === "HEALTHY" ? true : undefined));
    console.log(`      (app back -> HEALTHY in EDS: ${up.elapsedMs} ms)`);
    expect((await registryEndpoint())?.health).to.equal("HEALTHY");
  });

  it("removes the entry a grace period after the agent stops, not before", async function () {
    const stoppedAt = Date.now();
    await agent!.stop();
    agent = undefined;
    const gone = await eventually("endpoint removed from /debug/registryz", 30_000, async () => ((await registryEndpoint()) === undefined ? true : undefined));
    const afterMs = Date.now() - stoppedAt;
    console.log(`      (agent stopped -> entry removed: ${afterMs} ms; grace period ${GRACE_MS} ms)`);
    expect(afterMs).to.be.at.least(GRACE_MS);
    expect(gone.value).to.equal(true);
    await eventually("endpoint removed from EDS", 20_000, async () => (eds.answers.length > 0 && eds.health(VM_IP) === undefined ? true : undefined));
    const configz = JSON.parse((await tcp.get("/debug/configz")).body) as { configs: J[] };
    expect(configz.configs.some((c) => c.kind === "WorkloadEntry")).to.equal(false);
  });

  it("keeps a connected workload's entry across a SIGHUP reload that replaces the sources", async function () {
    const c = new RawAdsClient(tcp.xdsAddress, "sotw");
    clients.push(c);
    c.send({ node: testNode("sidecar~127.0.0.9~other-vm.shop~shop.svc.cluster.local", { NAMESPACE: "shop", SERVICE_ACCOUNT: "ratings", AUTO_REGISTER_GROUP: "ratings" }), type_url: TypeUrl.Cluster, resource_names: [] });
    await c.next(10_000);
    const endpointAt = async (ip: string) => {
      const z = JSON.parse((await tcp.get("/debug/registryz")).body) as { services: J[] };
      return z.services.find((s) => s.hostname === HOST)?.endpoints.find((e: J) => e.address === ip);
    };
    await eventually("entry for 127.0.0.9", 10_000, () => endpointAt("127.0.0.9"));
    const extraDir = await mkdtemp(path.join(os.tmpdir(), "vmpilot-autoreg-extra-"));
    try {
      const next = resolveServerConfig(
        { configDirs: [tcp.dir, extraDir], xdsAddr: "127.0.0.1:0", httpAddr: "127.0.0.1:0", secureAddr: "127.0.0.1:0", stateDir, autoRegistration: { cleanupGracePeriod: `${GRACE_MS}ms` } },
        tcp.dir,
        {},
      );
      await tcp.cp.reload(next);
      expect(await endpointAt("127.0.0.9"), "still registered on the new registry").to.not.equal(undefined);
      c.close();
      await eventually("entry removed after the proxy left", 20_000, async () => ((await endpointAt("127.0.0.9")) === undefined ? true : undefined));
    } finally {
      await rm(extraDir, { recursive: true, force: true });
    }
  });

  it("serves a proxy whose group does not exist, registers nothing, and shows why in /debug/configz", async function () {
    const c = new RawAdsClient(tcp.xdsAddress, "sotw");
    clients.push(c);
    c.send({
      node: testNode("sidecar~127.0.0.8~lost-vm.shop~shop.svc.cluster.local", { NAMESPACE: "shop", AUTO_REGISTER_GROUP: "no-such-group" }),
      type_url: TypeUrl.Cluster,
      resource_names: [],
    });
    const r = await c.next(10_000);
    expect(r.type_url).to.equal(TypeUrl.Cluster);
    const { value: problem } = await eventually("problem in /debug/configz", 10_000, async () => {
      const z = JSON.parse((await tcp.get("/debug/configz")).body) as { problems: J[] };
      return z.problems.find((p) => p.name === "no-such-group");
    });
    expect(problem.message).to.match(/WorkloadGroup shop\/no-such-group, which does not exist/);
    expect(problem.severity).to.equal("warning");
    const z = JSON.parse((await tcp.get("/debug/registryz")).body) as { services: J[] };
    expect(z.services.flatMap((s) => s.endpoints).some((e: J) => e.address === "127.0.0.8")).to.equal(false);
    c.close();
    await eventually("problem gone once the proxy left", 10_000, async () => {
      const z2 = JSON.parse((await tcp.get("/debug/configz")).body) as { problems: J[] };
      return z2.problems.some((p) => p.name === "no-such-group") ? undefined : true;
    });
  });
});

describe("server config: autoRegistration", function () {
  it("takes cleanupGracePeriod as a duration, defaults to Istio's 10 s, and rejects unknown keys", function () {
    expect(resolveServerConfig({ configDirs: ["/x"] }, "/", {}).autoRegistration).to.deep.equal({ cleanupGracePeriodMs: 10_000 });
    expect(resolveServerConfig({ configDirs: ["/x"], autoRegistration: { cleanupGracePeriod: "2m" } }, "/", {}).autoRegistration).to.deep.equal({ cleanupGracePeriodMs: 120_000 });
    expect(() => resolveServerConfig({ configDirs: ["/x"], autoRegistration: { gracePeriod: "1s" } }, "/", {})).to.throw(/autoRegistration: unknown key "gracePeriod"/);
    expect(() => resolveServerConfig({ configDirs: ["/x"], autoRegistration: { cleanupGracePeriod: "soon" } }, "/", {})).to.throw(/autoRegistration.cleanupGracePeriod/);
  });
});
