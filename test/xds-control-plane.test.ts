// The control plane's plumbing with real files, a real registry and a real gRPC port: debounced pushes after
// file edits, readiness, the HTTP views, metrics, SIGHUP-style reload, drain, and `vmpilot proxy-status`'s
// reading of /debug/syncz. (What the generators emit is the end-to-end suites' business.)
import { expect } from "chai";
import path from "node:path";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import * as grpc from "@grpc/grpc-js";
import { TypeUrl } from "@vmpilot/xds/protos";
import { loadServerConfig, resolveServerConfig, ServerConfigError } from "@vmpilot/xds/server/config";
import { formatTable, syncState, type SynczEntry } from "@vmpilot/xds/cli/proxy-status";
import { grpcServerOptions } from "@vmpilot/xds/server/control-plane";
import { controlPlaneSpiffeId, generateKeyAndCsr, parseCsr, SECURE_PORT_CHANNEL_OPTIONS, securePortChannelCredentials } from "@vmpilot/xds/ca/index";
import { RawAdsClient, testNode } from "./helpers/raw-ads-client.js";
import { StubCache } from "./helpers/stub-cache.js";
import { eventually, serviceEntry, TestControlPlane } from "./helpers/e2e.js";

const CDS = TypeUrl.Cluster;

describe("control plane (files -> registry -> ADS -> HTTP)", function () {
  this.timeout(30_000);
  let tcp: TestControlPlane;
  let cache: StubCache;
  const clients: RawAdsClient<"sotw">[] = [];

  beforeEach(async function () {
    cache = new StubCache();
    tcp = await TestControlPlane.start(() => cache, {
      "echo.yaml": serviceEntry({ name: "echo", host: "echo.example.com", port: 7070, endpoints: [{ address: "10.1.0.1" }] }),
    });
  });

  afterEach(async function () {
    for (const c of clients.splice(0)) c.close();
    await tcp.stop();
  });

  function connect(): RawAdsClient<"sotw"> {
    const c = new RawAdsClient(tcp.xdsAddress, "sotw");
    clients.push(c);
    return c;
  }

  it("is ready once the file source synced, and shows config with origins, services and endpoints", async function () {
    const ready = await tcp.get("/ready");
    expect(ready.status).to.equal(200);
    const configz = JSON.parse((await tcp.get("/debug/configz")).body) as { configs: { kind: string; name: string; origin: string }[]; problems: unknown[] };
    expect(configz.configs).to.have.length(1);
    expect(configz.configs[0]!.kind).to.equal("ServiceEntry");
    expect(configz.configs[0]!.origin).to.equal(`${path.join(tcp.dir, "echo.yaml")}:1:1`);
    const registryz = JSON.parse((await tcp.get("/debug/registryz")).body) as { services: { hostname: string; endpoints: { address: string }[] }[] };
    expect(registryz.services.map((s) => s.hostname)).to.deep.equal(["echo.example.com"]);
    expect(registryz.services[0]!.endpoints.map((e) => e.address)).to.deep.equal(["10.1.0.1"]);
    expect((await tcp.get("/nope")).status).to.equal(404);
  });

  it("pushes a file change to a connected proxy, debounced, and records sent/acked versions in /debug/syncz", async function () {
    const c = connect();
    c.send({ node: testNode("grpc-cp-1", { NAMESPACE: "default" }), type_url: CDS, resource_names: [] });
    const r1 = await c.next();
    expect(r1.resources).to.have.length(1);
    c.send({ type_url: CDS, resource_names: [], response_nonce: r1.nonce, version_info: r1.version_info });
    const updatesBefore = cache.updates;
    await tcp.write("other.yaml", serviceEntry({ name: "other", host: "other.example.com", port: 9090, endpoints: [{ address: "10.1.0.2" }] }));
    const r2 = await c.next(10_000);
    expect(r2.type_url).to.equal(CDS);
    expect(r2.resources).to.have.length(2);
    expect(cache.updates).to.be.greaterThan(updatesBefore);
    c.send({ type_url: CDS, resource_names: [], response_nonce: r2.nonce, version_info: r2.version_info });
    const { value: entry } = await eventually("ACK in syncz", 5000, async () => {
      const [p] = await tcp.syncz();
      return p?.types.CDS?.acked?.nonce === r2.nonce ? p : undefined;
    });
    expect(entry.proxyId).to.equal("grpc-cp-1");
    expect(entry.kind).to.equal("grpc");
    expect(entry.types.CDS!.acked!.version).to.equal(r2.version_info);
    expect(syncState(entry.types.CDS as SynczEntry["types"][string])).to.equal("SYNCED");
    const table = formatTable((await tcp.syncz()) as unknown as SynczEntry[]);
    expect(table).to.match(/^NAME\s+KIND\s+NAMESPACE\s+PROTOCOL\s+CDS\s+LDS\s+EDS\s+RDS\s+AGE\n/);
    expect(table).to.match(/grpc-cp-1\s+grpc\s+default\s+sotw\s+SYNCED\s+-\s+-\s+-\s+\d+s\n$/);

    const metrics = (await tcp.get("/metrics")).body;
    expect(metrics).to.match(/vmpilot_xds_connected_proxies\{kind="grpc",protocol="sotw"\} 1/);
    expect(metrics).to.match(/vmpilot_xds_pushes_total\{type="CDS"\} 2/);
    expect(metrics).to.match(/vmpilot_xds_push_latency_seconds_count\{type="CDS"\} 1/);
    expect(metrics).to.match(/vmpilot_config_objects\{kind="ServiceEntry"\} 2/);
    expect(metrics).to.match(/vmpilot_config_problems\{severity="error"\} 0/);
  });

  it("counts NACKs in /metrics and shows them in /debug/syncz and proxy-status", async function () {
    const c = connect();
    c.send({ node: testNode("grpc-cp-2"), type_url: CDS, resource_names: [] });
    const r1 = await c.next();
    c.send({ type_url: CDS, resource_names: [], response_nonce: r1.nonce, error_detail: { code: 3, message: "cluster rejected" } });
    const { value: p } = await eventually("NACK in syncz", 5000, async () => (await tcp.syncz()).find((x) => x.types.CDS?.lastNack));
    expect(p.types.CDS!.lastNack!.message).to.equal("cluster rejected");
    expect(await tcp.nacks()).to.deep.equal(["grpc-cp-2 CDS: cluster rejected"]);
    expect(formatTable((await tcp.syncz()) as unknown as SynczEntry[])).to.contain("NACKED");
    expect((await tcp.get("/metrics")).body).to.match(/vmpilot_xds_nacks_total\{type="CDS"\} 1/);
  });

  it("reports a broken file in /debug/configz and /metrics while serving the good objects", async function () {
    await tcp.write("broken.yaml", "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: broken}\nspec:\n  hosts: [b.example.com]\n  bogusField: 1\n");
    const { value: problems } = await eventually("problem reported", 10_000, async () => {
      const z = JSON.parse((await tcp.get("/debug/configz")).body) as { problems: { file: string; message: string }[] };
      return z.problems.length > 0 ? z.problems : undefined;
    });
    expect(problems[0]!.file).to.equal(path.join(tcp.dir, "broken.yaml"));
    expect((await tcp.get("/metrics")).body).to.match(/vmpilot_config_problems\{severity="error"\} [1-9]/);
    const registryz = JSON.parse((await tcp.get("/debug/registryz")).body) as { services: { hostname: string }[] };
    expect(registryz.services.map((s) => s.hostname)).to.deep.equal(["echo.example.com"]);
  });

  it("reloads: new config dirs replace the sources, new mesh settings republish", async function () {
    const dir2 = await mkdtemp(path.join(os.tmpdir(), "vmpilot-e2e-reload-"));
    try {
      await writeFile(path.join(dir2, "x.yaml"), serviceEntry({ name: "x", host: "x.example.com", port: 80, endpoints: [{ address: "10.2.0.1" }] }));
      const next = resolveServerConfig({ configDirs: [dir2], xdsAddr: "127.0.0.1:0", httpAddr: "127.0.0.1:0", mesh: { trustDomain: "example.org" } }, dir2, {});
      await tcp.cp.reload(next);
      const snap = tcp.cp.current();
      expect([...snap.services.values()].map((s) => s.hostname)).to.deep.equal(["x.example.com"]);
      expect(snap.mesh.trustDomain).to.equal("example.org");
      await tcp.cp.reload({ ...next, mesh: { ...next.mesh, outboundTrafficPolicy: "REGISTRY_ONLY" } });
      expect(tcp.cp.current().mesh.outboundTrafficPolicy).to.equal("REGISTRY_ONLY");
      expect((await tcp.get("/ready")).status).to.equal(200);
    } finally {
      await rm(dir2, { recursive: true, force: true });
    }
  });

  it("drains on stop: open streams end with OK and the port closes", async function () {
    const c = connect();
    c.send({ node: testNode("grpc-cp-3"), type_url: CDS, resource_names: [] });
    await c.next();
    await tcp.cp.stop(2000);
    const st = await c.ended();
    expect(st.code).to.equal(grpc.status.OK);
    const late = new RawAdsClient(tcp.xdsAddress, "sotw");
    clients.push(late);
    late.send({ node: testNode("grpc-cp-4"), type_url: CDS, resource_names: [] });
    expect((await late.ended(10_000)).code).to.equal(grpc.status.UNAVAILABLE);
  });
});

describe("server config", function () {
  it("refuses plaintext xDS on a non-loopback address unless insecure", function () {
    expect(() => resolveServerConfig({ configDirs: ["/x"], xdsAddr: "0.0.0.0:15010" }, "/", {})).to.throw(ServerConfigError, /not a loopback address/);
    expect(resolveServerConfig({ configDirs: ["/x"], xdsAddr: "0.0.0.0:15010" }, "/", { insecure: true }).xdsAddr).to.equal("0.0.0.0:15010");
    expect(resolveServerConfig({ configDirs: ["/x"] }, "/", { xdsAddr: "[::1]:1" }).xdsAddr).to.equal("[::1]:1");
  });

  it("lets flags override the file and resolves relative paths against the file's directory", function () {
    const c = resolveServerConfig({ configDirs: ["examples"], httpAddr: "127.0.0.1:1", consul: { address: "http://127.0.0.1:8500", tokenFile: "tok" } }, "/etc/vmpilot", {
      httpAddr: "127.0.0.1:2",
      consulAddr: "http://127.0.0.1:8501",
    });
    expect(c.configDirs).to.deep.equal(["/etc/vmpilot/examples"]);
    expect(c.httpAddr).to.equal("127.0.0.1:2");
    expect(c.xdsAddr).to.equal("127.0.0.1:15010");
    expect(c.consul).to.deep.equal({ address: "http://127.0.0.1:8501", tokenFile: "/etc/vmpilot/tok" });
    expect(resolveServerConfig({ configDirs: ["a"] }, "/etc", { configDir: ["b", "c"] }, "/w").configDirs).to.deep.equal(["/w/b", "/w/c"]);
  });

  it("accepts config/vmpilot.yaml (what npm start serves): the examples, loopback only, no secure port", async function () {
    const c = await loadServerConfig({ config: path.join(import.meta.dirname, "..", "config", "vmpilot.yaml") });
    expect(c.configDirs).to.deep.equal([path.join(import.meta.dirname, "..", "config", "examples")]);
    expect(c.xdsAddr).to.equal("127.0.0.1:15010");
    expect(c.httpAddr).to.equal("127.0.0.1:15014");
    expect(c.consul).to.equal(undefined);
    if (!process.env.VMPILOT_STATE_DIR) expect(c.stateDir).to.equal(undefined);
  });

  it("turns maxConnectionAge into a jittered gRPC connection age with a grace period, off by default", function () {
    const c = resolveServerConfig({ configDirs: ["/x"], maxConnectionAge: "30m" }, "/", {});
    expect(c.maxConnectionAgeMs).to.equal(30 * 60_000);
    const o = grpcServerOptions(c);
    expect(o["grpc.max_connection_age_ms"]).to.be.within(27 * 60_000, 33 * 60_000);
    expect(o["grpc.max_connection_age_grace_ms"]).to.equal(10_000);
    expect(o["grpc.keepalive_time_ms"]).to.equal(30_000);
    expect(grpcServerOptions(resolveServerConfig({ configDirs: ["/x"] }, "/", {}))).to.not.have.property("grpc.max_connection_age_ms");
  });

  it("rejects unknown keys and bad values with the key's path", function () {
    expect(() => resolveServerConfig({ configDirs: ["/x"], xdsAdr: "x" }, "/", {})).to.throw(/unknown key "xdsAdr"/);
    expect(() => resolveServerConfig({ configDirs: ["/x"], mesh: { outboundTrafficPolicy: "DENY" } }, "/", {})).to.throw(/outboundTrafficPolicy/);
    expect(() => resolveServerConfig({ configDirs: ["/x"], debounce: { quiet: "soon" } }, "/", {})).to.throw(/debounce.quiet/);
    expect(() => resolveServerConfig({}, "/", {})).to.throw(/nothing to serve/);
  });
});

describe("control plane secure port (mTLS xDS + CA, from a state dir)", function () {
  this.timeout(30_000);
  let tcp: TestControlPlane;
  const clients: RawAdsClient<"sotw">[] = [];
  let stateDir: string;

  before(async function () {
    stateDir = await mkdtemp(path.join(os.tmpdir(), "vmpilot-e2e-state-"));
    tcp = await TestControlPlane.start(() => new StubCache(), { "echo.yaml": serviceEntry({ name: "echo", host: "echo.example.com", port: 7070, endpoints: [{ address: "10.1.0.1" }] }) }, "127.0.0.1:0", {
      stateDir,
      secureAddr: "127.0.0.1:0",
    });
  });

  after(async function () {
    for (const c of clients.splice(0)) c.close();
    await tcp?.stop();
    await rm(stateDir, { recursive: true, force: true });
  });

  function secureClient(clientKeyCert?: { keyPem: string; certChainPem: string }): RawAdsClient<"sotw"> {
    const ca = tcp.cp.meshCa!;
    const creds = securePortChannelCredentials({ rootCaPem: ca.authority.rootCertPem, expectedServerSan: controlPlaneSpiffeId("cluster.local"), clientKeyCert });
    const c = new RawAdsClient(tcp.cp.addresses.secure!, "sotw", creds, SECURE_PORT_CHANNEL_OPTIONS);
    clients.push(c);
    return c;
  }

  async function workloadCert(ns: string, sa: string): Promise<{ keyPem: string; certChainPem: string }> {
    const { keyPem, csrPem } = await generateKeyAndCsr(`spiffe://cluster.local/ns/${ns}/sa/${sa}`);
    const csr = await parseCsr(csrPem);
    const issued = await tcp.cp.meshCa!.authority.issue({ publicKey: csr.publicKey, spiffeId: `spiffe://cluster.local/ns/${ns}/sa/${sa}` });
    return { keyPem, certChainPem: issued.certPem };
  }

  it("refuses an ADS stream without a client certificate (UNAUTHENTICATED)", async function () {
    const c = secureClient();
    c.send({ node: testNode("sidecar~10.0.0.7~vm-1.shop~shop.svc.cluster.local", { NAMESPACE: "shop", SERVICE_ACCOUNT: "cart" }), type_url: CDS, resource_names: [] });
    const st = await c.ended(10_000);
    expect(grpc.status[st.code]).to.equal("UNAUTHENTICATED");
  });

  it("refuses a certificate for another identity than the node claims (PERMISSION_DENIED)", async function () {
    const c = secureClient(await workloadCert("shop", "admin"));
    c.send({ node: testNode("sidecar~10.0.0.7~vm-1.shop~shop.svc.cluster.local", { NAMESPACE: "shop", SERVICE_ACCOUNT: "cart" }), type_url: CDS, resource_names: [] });
    const st = await c.ended(10_000);
    expect(grpc.status[st.code]).to.equal("PERMISSION_DENIED");
    expect(c.buffered).to.have.length(0);
  });

  it("serves a proxy whose certificate matches its node metadata", async function () {
    const c = secureClient(await workloadCert("shop", "cart"));
    c.send({ node: testNode("sidecar~10.0.0.7~vm-1.shop~shop.svc.cluster.local", { NAMESPACE: "shop", SERVICE_ACCOUNT: "cart" }), type_url: CDS, resource_names: [] });
    const r = await c.next(10_000);
    expect(r.type_url).to.equal(CDS);
    expect(r.resources).to.have.length(1);
    const p = (await tcp.syncz()).find((x) => x.proxyId.startsWith("sidecar~"));
    expect(p?.kind).to.equal("sidecar");
  });
});
