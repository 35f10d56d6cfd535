// The agent end to end against the REAL CA (in-process, secure-port credentials on 127.0.0.1:0) with a
// stand-in for the envoy binary.
import { createPrivateKey, X509Certificate } from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import path from "node:path";
import { expect } from "chai";
import * as grpc from "@grpc/grpc-js";
import { parse as parseYaml } from "yaml";
import { decodeToJson, encodeJson } from "@vmpilot/xds/protojson";
import { Agent, AgentStartError } from "../src/agent.js";
import { credentialSdsSocket } from "../src/bootstrap/envoy.js";
import { caIssuer, inspectLeaf, type CertificateIssuer } from "../src/certs.js";
import { parseAgentConfig, type AgentConfig } from "../src/config.js";
import { isAlive, keyPair, memoryLogger, startCa, tmpDir, until, writeEnvoyStandIn, type RunningCa } from "./helpers.js";
import { SdsTestStream, sdsClientConstructor, type J } from "./sds-client.js";

const IDENTITY = "spiffe://cluster.local/ns/shop/sa/reviews";

function get(addr: { address: string; port: number }, p: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: addr.address, port: addr.port, path: p }, (res) => {
        let body = "";
        res.on("data", (c) => (body += c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      })
      .on("error", reject);
  });
}

interface Setup {
  dir: string;
  cfg: AgentConfig;
  yaml: string;
  configFile: string;
}

async function setup(ca: RunningCa, extra = "", tokenTtlMs = 60_000): Promise<Setup> {
  const dir = tmpDir("vmpilot-agent-run-");
  fs.writeFileSync(path.join(dir, "root-cert.pem"), ca.rootPem);
  const token = await ca.ca.tokens.create({ trustDomain: "cluster.local", namespace: "shop", serviceAccount: "reviews", ttlMs: tokenTtlMs });
  fs.writeFileSync(path.join(dir, "token"), token);
  const yaml = `name: reviews-vm-1
namespace: shop
serviceAccount: reviews
address: 127.0.0.1
ports:
  - {name: http, port: 9080}
controlPlane:
  address: ${ca.address}
  tokenFile: ${dir}/token
  rootCertFile: ${dir}/root-cert.pem
output:
  dir: ${dir}/out
status:
  address: 127.0.0.1:0
  readinessAddress: 127.0.0.1:0
certificates:
  minRetry: 100ms
  maxRetry: 500ms
${extra}`;
  const configFile = path.join(dir, "agent.yaml");
  fs.writeFileSync(configFile, yaml);
  return { dir, cfg: parseAgentConfig(yaml, configFile), yaml, configFile };
}

describe("vmpilot-agent run (real CA, envoy stand-in)", function () {
  this.timeout(60_000);
  let ca: RunningCa;
  const cleanups: (() => Promise<void> | void)[] = [];

  before(async () => {
    ca = await startCa();
  });
  const logs: string[][] = [];
  afterEach(async function () {
    // What the agent said is the first thing to read when one of these fails.
    if (this.currentTest?.state === "failed") for (const lines of logs) console.log(lines.map((l) => `      agent: ${l}`).join("\n"));
    logs.length = 0;
    for (const c of cleanups.splice(0).reverse()) await c();
  });
  after(async () => {
    await ca.close();
  });

  async function startAgent(s: Setup, issuer?: CertificateIssuer): Promise<{ agent: Agent; envoy: ReturnType<typeof writeEnvoyStandIn>; log: ReturnType<typeof memoryLogger> }> {
    const envoy = writeEnvoyStandIn(s.dir);
    const log = memoryLogger();
    logs.push(log.lines);
    const agent = new Agent(s.cfg, { envoyBinary: envoy.binary, logger: log, envoyBackoff: { minMs: 50, maxMs: 400 }, envoyStopGraceMs: 5000, ...(issuer ? { issuer } : {}) });
    cleanups.push(async () => {
      await agent.stop();
      fs.rmSync(s.dir, { recursive: true, force: true });
    });
    await agent.start();
    return { agent, envoy, log };
  }

  it("gets a certificate for its own identity with the token and writes key, chain, root, SDS files and bootstrap", async () => {
    const s = await setup(ca);
    const { envoy } = await startAgent(s);
    const o = s.cfg.output;

    const chain = fs.readFileSync(o.certChainFile, "utf8");
    const leaf = inspectLeaf(chain);
    expect(leaf.uris).to.deep.equal([IDENTITY]);
    // The chain links up to the mesh root the agent was given, and the key on disk is the leaf's.
    const certs = (chain.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []).map((p) => new X509Certificate(p));
    expect(certs.at(-1)!.fingerprint256).to.equal(new X509Certificate(ca.rootPem).fingerprint256);
    for (let i = 0; i + 1 < certs.length; i++) expect(certs[i]!.verify(certs[i + 1]!.publicKey), `link ${i}`).to.equal(true);
    expect(certs[0]!.checkPrivateKey(createPrivateKey(fs.readFileSync(o.keyFile)))).to.equal(true);
    expect(fs.readFileSync(o.rootCertFile, "utf8")).to.equal(ca.rootPem);

    expect(fs.statSync(o.keyFile).mode & 0o777).to.equal(0o600);
    expect(fs.statSync(o.sdsDefaultFile).mode & 0o777).to.equal(0o600);
    expect(fs.statSync(o.certChainFile).mode & 0o777).to.equal(0o644);
    expect(fs.statSync(o.dir).mode & 0o777).to.equal(0o700);
    // No temp files left behind by the atomic writes.
    expect(fs.readdirSync(o.dir).filter((f) => f.endsWith(".tmp"))).to.deep.equal([]);

    const sds = parseYaml(fs.readFileSync(o.sdsDefaultFile, "utf8"));
    const decoded = decodeToJson("envoy.service.discovery.v3.DiscoveryResponse", encodeJson("envoy.service.discovery.v3.DiscoveryResponse", sds)) as any; // eslint-disable-line @typescript-eslint/no-explicit-any
    expect(decoded.resources[0].tls_certificate.certificate_chain.inline_string).to.equal(chain);

    const bootstrap = JSON.parse(fs.readFileSync(o.envoyBootstrapFile, "utf8"));
    expect(() => encodeJson("envoy.config.bootstrap.v3.Bootstrap", bootstrap)).not.to.throw();

    const started = await until("the envoy stand-in to record its start", () => envoy.events().find((e) => e.args));
    expect(started.args!.slice(0, 2)).to.deep.equal(["-c", o.envoyBootstrapFile]);
    expect(started.args).to.include.members(["--drain-time-s", "--parent-shutdown-time-s"]);
  });

  it("restarts envoy after it dies, with backoff, and reports it on /status", async () => {
    const s = await setup(ca);
    const { agent, envoy } = await startAgent(s);
    const first = await until("envoy to start", () => envoy.events().find((e) => e.args));
    process.kill(first.pid, "SIGKILL");
    const second = await until("envoy to be restarted", () => envoy.events().find((e) => e.args && e.pid !== first.pid));
    expect(isAlive(second.pid)).to.equal(true);
    await until("the supervisor to report the restart", () => agent.envoy!.status().state === "running" && agent.envoy!.status().starts === 2);
    const st = JSON.parse((await get(agent.status.statusAddress!, "/status")).body);
    expect(st.envoy).to.deep.include({ state: "running", starts: 2, pid: second.pid });
    expect(st.envoy.lastExit.signal).to.equal("SIGKILL");
    expect(st.certificate.identity).to.equal(IDENTITY);
  });

  it("is ready only once Envoy is LIVE and has received listeners and clusters (asked through its admin API)", async () => {
    const s = await setup(ca);
    const { agent, envoy } = await startAgent(s);
    const ready = () => get(agent.status.statusAddress!, "/healthz/ready");
    await until("ready with a live, configured envoy", async () => (await ready()).status === 200);
    envoy.setAdmin({ live: false, cds: 0, lds: 0 });
    await until("not ready while envoy initializes", async () => (await ready()).body.includes("envoy is PRE_INITIALIZING"));
    envoy.setAdmin({ live: true, cds: 1, lds: 0 });
    await until("not ready without listeners", async () => (await ready()).body.includes("envoy has not received its configuration yet (CDS updates 1, LDS updates 0)"));
    envoy.setAdmin({ live: true, cds: 1, lds: 1 });
    await until("ready again", async () => (await ready()).status === 200);
    const st = JSON.parse((await get(agent.status.statusAddress!, "/status")).body);
    expect(st).to.deep.include({ ready: true, reasons: [] });
    expect(st.envoy.ready).to.equal(true);
  });

  it("keeps rotating with its current certificate after the bootstrap token expired", async function () {
    this.timeout(60_000);
    // Token valid for 1 s (+ the CA's 5 s clock tolerance); certificates live 3 s and renew at about half that.
    const s = await setup(ca, "  ttl: 3s\n", 1000);
    const tokenExpiredAt = Date.now() + 1000 + 5000;
    const { agent } = await startAgent(s);
    const serials = new Set<string>([agent.rotator.current!.serial]);
    // Wait for a certificate issued well after the token stopped being acceptable, then one more.
    const late = await until(
      "a renewal after the token expired",
      () => {
        const b = agent.rotator.current!;
        serials.add(b.serial);
        return b.notBefore.getTime() + 300 > tokenExpiredAt ? b : undefined;
      },
      30_000,
    );
    await until("another renewal", () => agent.rotator.current!.serial !== late.serial, 15_000);
    expect(serials.size).to.be.greaterThan(2);
    // What is on disk is what the rotator holds: the SDS file and the chain file moved together.
    const onDisk = inspectLeaf(fs.readFileSync(s.cfg.output.certChainFile, "utf8"));
    const sds = parseYaml(fs.readFileSync(s.cfg.output.sdsDefaultFile, "utf8"));
    expect(inspectLeaf(sds.resources[0].tls_certificate.certificate_chain.inline_string).serial).to.equal(onDisk.serial);
    expect(onDisk.uris).to.deep.equal([IDENTITY]);
    expect((agent.rotator.status() as { renewals: number }).renewals).to.be.greaterThan(1);
  });

  it("keeps the old certificate and retries with backoff while the CA is unreachable", async () => {
    const s = await setup(ca, "  ttl: 2s\n");
    const real = caIssuer(s.cfg);
    let reachable = true;
    let refused = 0;
    let heldAtFirstRefusal: string | undefined;
    let agentRef: Agent | undefined;
    // The real CA behind a switch: while "down", calls fail as a closed port would.
    const issuer: CertificateIssuer = {
      issue: (req) => {
        if (reachable) return real.issue(req);
        if (refused++ === 0) heldAtFirstRefusal = agentRef?.rotator.current?.serial;
        return Promise.reject(new Error("connect ECONNREFUSED (CA switched off by the test)"));
      },
    };
    const { agent, log } = await startAgent(s, issuer);
    agentRef = agent;
    reachable = false;
    await until("several failed renewal attempts", () => refused >= 3, 20_000);
    const held = heldAtFirstRefusal!;
    expect(held).to.be.a("string");
    expect(agent.rotator.current!.serial).to.equal(held);
    expect(inspectLeaf(fs.readFileSync(s.cfg.output.certChainFile, "utf8")).serial).to.equal(held);
    expect(log.lines.some((l) => l.includes("renewing the certificate failed") && l.includes(`keeping certificate ${held}`))).to.equal(true);
    expect((agent.rotator.status() as { lastError?: string }).lastError).to.match(/ECONNREFUSED/);
    reachable = true;
    await until("renewal once the CA is back", () => agent.rotator.current!.serial !== held, 15_000);
  });

  it("serves readiness from the probe: ready while the app listens, not ready after failureThreshold failures", async () => {
    const app = net.createServer((sock) => sock.end());
    await new Promise<void>((r) => app.listen(0, "127.0.0.1", r));
    const appPort = (app.address() as net.AddressInfo).port;
    cleanups.push(() => new Promise<void>((r) => app.close(() => r())));
    const s = await setup(ca, `probe:\n  tcpSocket: {port: ${appPort}}\n  periodSeconds: 1\n  failureThreshold: 2\n`);
    const { agent } = await startAgent(s);
    await until("ready", async () => (await get(agent.status.statusAddress!, "/healthz/ready")).status === 200);
    app.close();
    const notReady = await until("not ready after the app went away", async () => {
      const r = await get(agent.status.statusAddress!, "/healthz/ready");
      return r.status === 503 ? r : undefined;
    });
    expect(notReady.body).to.match(/application probe not passing \(connect ECONNREFUSED\)/);
  });

  it("as a gateway, serves gateway.credentialsDir over its SDS socket before Envoy starts, and points the bootstrap's sds-grpc at it", async () => {
    const credDir = tmpDir("vmpilot-agent-gw-creds-");
    cleanups.push(() => fs.rmSync(credDir, { recursive: true, force: true }));
    const pair = await keyPair("api.bookinfo.com");
    fs.mkdirSync(path.join(credDir, "api-cert"));
    fs.writeFileSync(path.join(credDir, "api-cert", "cert.pem"), pair.certPem);
    fs.writeFileSync(path.join(credDir, "api-cert", "key.pem"), pair.keyPem);
    const s = await setup(ca, `proxy:\n  kind: gateway\ngateway:\n  credentialsDir: ${credDir}\n`);
    const { agent, envoy } = await startAgent(s);
    await until("envoy to start", () => envoy.events().find((e) => e.args));
    const bootstrap = JSON.parse(fs.readFileSync(s.cfg.output.envoyBootstrapFile, "utf8"));
    expect(() => encodeJson("envoy.config.bootstrap.v3.Bootstrap", bootstrap)).not.to.throw();
    expect(bootstrap.node.id).to.match(/^router~/);
    expect(bootstrap.node.metadata.CREDENTIAL_SDS_CLUSTER).to.equal("sds-grpc");
    const sdsCluster = bootstrap.static_resources.clusters.find((c: { name: string }) => c.name === "sds-grpc");
    const socket = sdsCluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.pipe.path;
    expect(fs.statSync(socket).isSocket()).to.equal(true);
    expect(fs.statSync(socket).mode & 0o777).to.equal(0o600);
    expect(fs.statSync(path.dirname(socket)).mode & 0o777).to.equal(0o700);
    // What Envoy's sds-grpc cluster would get on that socket.
    const client = new (sdsClientConstructor())(`unix://${socket}`, grpc.credentials.createInsecure());
    cleanups.push(() => client.close());
    const stream = new SdsTestStream((client as J).StreamSecrets());
    cleanups.push(() => stream.call.cancel());
    stream.send({ node: bootstrap.node, resource_names: ["api-cert"] });
    const r = await stream.next("the credential over SDS");
    expect(r.secrets).to.deep.equal([{ name: "api-cert", tls_certificate: { certificate_chain: { inline_string: pair.certPem }, private_key: { inline_string: pair.keyPem } } }]);
    const st = JSON.parse((await get(agent.status.statusAddress!, "/status")).body);
    expect(st.gatewayCredentials.sdsSocket).to.equal(socket);
    expect(st.gatewayCredentials.credentials).to.deep.equal([{ name: "api-cert", served: true, hasCa: false, notAfter: st.gatewayCredentials.credentials[0].notAfter }]);
    expect(st.gatewayCredentials.sds.served).to.deep.equal(["api-cert"]);
  });

  it("stopped while start-up waits for its first certificate, opens nothing afterwards (no SDS socket, no Envoy)", async () => {
    const credDir = tmpDir("vmpilot-agent-gw-creds-");
    cleanups.push(() => fs.rmSync(credDir, { recursive: true, force: true }));
    const s = await setup(ca, `proxy:\n  kind: gateway\ngateway:\n  credentialsDir: ${credDir}\n`);
    // The CA answers only when the test says so: SIGTERM arrives while the first certificate is in flight.
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let asked = false;
    const real = caIssuer(s.cfg);
    const issuer: CertificateIssuer = { issue: async (req) => ((asked = true), await gate, real.issue(req)) };
    const envoy = writeEnvoyStandIn(s.dir);
    const agent = new Agent(s.cfg, { envoyBinary: envoy.binary, logger: memoryLogger(), issuer });
    cleanups.push(() => fs.rmSync(s.dir, { recursive: true, force: true }));
    const starting = agent.start();
    await until("the certificate request", () => asked);
    const stopping = agent.stop();
    release();
    await stopping;
    await starting;
    expect(fs.existsSync(credentialSdsSocket(s.cfg)), "the SDS socket").to.equal(false);
    expect(envoy.events(), "Envoy runs").to.deep.equal([]);
    expect(agent.credentials, "the credentials watcher").to.equal(undefined);
  });

  it("refuses to start without an envoy binary, with a clear error", async () => {
    const s = await setup(ca);
    const agent = new Agent(s.cfg, { envoyBinary: path.join(s.dir, "no-such-envoy"), logger: memoryLogger() });
    cleanups.push(() => fs.rmSync(s.dir, { recursive: true, force: true }));
    try {
      await agent.start();
      expect.fail("start should have failed");
    } catch (e) {
      expect(e).to.be.instanceOf(AgentStartError);
      expect((e as Error).message).to.match(/envoy binary ".*no-such-envoy" not found; install Envoy, pass --envoy-bin PATH, or set proxy.kind: grpc/);
    }
  });

  it("runs proxyless (proxy.kind grpc) without Envoy: gRPC bootstrap, readiness on its own port", async () => {
    const s = await setup(ca, "proxy:\n  kind: grpc\n");
    const agent = new Agent(s.cfg, { envoyBinary: "/nonexistent/envoy", logger: memoryLogger() });
    cleanups.push(async () => {
      await agent.stop();
      fs.rmSync(s.dir, { recursive: true, force: true });
    });
    await agent.start();
    expect(agent.envoy).to.equal(undefined);
    const bootstrap = JSON.parse(fs.readFileSync(s.cfg.output.grpcBootstrapFile, "utf8"));
    expect(bootstrap.certificate_providers.default.config.certificate_file).to.equal(s.cfg.output.certChainFile);
    expect(fs.existsSync(s.cfg.output.envoyBootstrapFile)).to.equal(false);
    expect((await get(agent.status.readinessAddress!, "/healthz/ready")).status).to.equal(200);
  });
});
