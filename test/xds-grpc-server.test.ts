// Proxyless gRPC SERVERS end to end: the real control plane (files -> registry -> generators -> cache -> ADS) and
// @grpc/grpc-js-xds's XdsServer (gRFC A36) configured by the bootstrap the agent writes for a gRPC workload, with
// certificates minted by the mesh CA (packages/xds/src/ca) in the files the bootstrap's `file_watcher` provider
// reads. The server serves only once the control plane has sent the listener for its address; callers reach it
// through `xds:///HOST:PORT`; with a DestinationRule ISTIO_MUTUAL it requires the mesh certificate.
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { expect } from "chai";
import * as grpc from "@grpc/grpc-js";
import * as grpcXds from "@grpc/grpc-js-xds";
import { grpcBootstrap } from "@vmpilot/agent/bootstrap/grpc";
import { parseAgentConfig, type AgentConfig } from "@vmpilot/agent/config";
import { CertificateAuthority, controlPlaneSpiffeId } from "@vmpilot/xds/ca/authority";
import { SECURE_PORT_CHANNEL_OPTIONS, securePortChannelCredentials } from "@vmpilot/xds/ca/client";
import { generateKeyAndCsr, parseCsr } from "@vmpilot/xds/ca/csr";
import { peerIdentity } from "@vmpilot/xds/ca/identity";
import { ResourceCache } from "@vmpilot/xds/cache";
import { GRPC_SERVER_LISTENER_TEMPLATE, grpcServerListenerName } from "@vmpilot/xds/generators/grpc-server-listeners";
import { GRPC_CERT_PROVIDER_INSTANCE } from "@vmpilot/xds/generators/tls";
import { decodeToJson } from "@vmpilot/xds/protojson";
import { TypeUrl } from "@vmpilot/xds/protos";
import { setLogLevel } from "@vmpilot/registry/logger";
import { call, ECHO_SERVICE, type EchoClient, type EchoReply, type EchoRequest } from "./helpers/echo.js";
import { eventually, serviceEntry, TestControlPlane } from "./helpers/e2e.js";
import { RawAdsClient, testNode } from "./helpers/raw-ads-client.js";

const BOOTSTRAP_OPTION = "grpc.TEST_ONLY_DO_NOT_USE_IN_PROD.xds_bootstrap_config";
const TRUST_DOMAIN = "cluster.local";
const NS = "shop";
const HOST = "echo.shop.mesh";
const SERVICE_PORT = 7070;
const ECHO_IP = "127.0.0.21";
const BILLING_IP = "127.0.0.22";
const EchoClientCtor = grpc.makeGenericClientConstructor(ECHO_SERVICE, "Echo");

function spiffe(sa: string, ns = NS): string {
  return `spiffe://${TRUST_DOMAIN}/ns/${ns}/sa/${sa}`;
}

function workloadEntry(name: string, address: string, port: number, app: string, sa: string): string {
  return `apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ${name}, namespace: ${NS}}
spec:
  address: ${address}
  ports: {grpc: ${port}}
  labels: {app: ${app}}
  serviceAccount: ${sa}
`;
}

const MUTUAL = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo, namespace: ${NS}}
spec:
  host: ${HOST}
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
`;

/** A port the OS says is free on `ip` now (the XdsServer needs a concrete one: gRFC A36 names the listener by it). */
async function freePort(ip: string): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((resolve, reject) => s.once("error", reject).listen(0, ip, resolve));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

/** Whether something accepts TCP connections at ip:port. */
function accepts(ip: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ host: ip, port });
    sock.once("connect", () => {
      sock.destroy();
      resolve(true);
    });
    sock.once("error", () => resolve(false));
  });
}

interface Workload {
  cfg: AgentConfig;
  /** The gRPC bootstrap the agent writes for this workload (node, xDS server, certificate_providers, template). */
  bootstrap: Record<string, unknown>;
  key: string;
  chain: string;
}

describe("proxyless gRPC servers (XdsServer, gRFC A36) end to end", function () {
  this.timeout(90_000);
  let tcp: TestControlPlane;
  let dir: string;
  let ca: CertificateAuthority;
  let foreignCa: CertificateAuthority;
  const servers: grpc.Server[] = [];
  const clients: grpc.Client[] = [];
  const raws: RawAdsClient<"sotw">[] = [];

  let echo: Workload;
  let frontend: Workload;
  let echoServer: grpcXds.XdsServer;
  let echoPort: number;
  let billingPort: number;
  const statuses: { address: string; code: grpc.status; details: string }[] = [];
  let plainClient: EchoClient;
  let mtlsClient: EchoClient;

  async function mint(authority: CertificateAuthority, spiffeId: string): Promise<{ key: string; chain: string }> {
    const { keyPem, csrPem } = await generateKeyAndCsr(spiffeId);
    const csr = await parseCsr(csrPem);
    const issued = await authority.issue({ publicKey: csr.publicKey, spiffeId });
    return { key: keyPem, chain: issued.chainPem.join("") };
  }

  /** A gRPC workload as its agent sets it up: config, certificate files from the mesh CA, the gRPC bootstrap. */
  async function workload(name: string, sa: string, address: string): Promise<Workload> {
    const wdir = path.join(dir, name);
    fs.mkdirSync(wdir, { recursive: true });
    fs.writeFileSync(path.join(wdir, "token"), "unused");
    fs.writeFileSync(path.join(wdir, "root.pem"), ca.rootCertPem);
    const cfg = parseAgentConfig(
      `name: ${name}\nnamespace: ${NS}\nserviceAccount: ${sa}\naddress: ${address}\nproxy: {kind: grpc}\n` +
        `grpc: {xdsProxy: false, xdsServerUri: "${tcp.xdsAddress}", certRefreshInterval: 200ms}\n` +
        `controlPlane: {address: "127.0.0.1:1", tokenFile: ${wdir}/token, rootCertFile: ${wdir}/root.pem}\noutput: {dir: ${wdir}/out}\n` +
        `status: {address: "127.0.0.1:0", readinessAddress: "127.0.0.1:0"}\n`,
      path.join(wdir, "agent.yaml"),
    );
    const { key, chain } = await mint(ca, cfg.identity);
    fs.mkdirSync(cfg.output.dir, { recursive: true });
    fs.writeFileSync(cfg.output.keyFile, key, { mode: 0o600 });
    fs.writeFileSync(cfg.output.certChainFile, chain);
    fs.writeFileSync(cfg.output.rootCertFile, ca.rootCertPem);
    return { cfg, bootstrap: grpcBootstrap(cfg), key, chain };
  }

  /**
   * An XdsServer with the workload's bootstrap and XdsServerCredentials (so the listener's TLS applies; insecure
   * when the listener has none). Answers with its name and the caller's SPIFFE id as its TLS stack authenticated it.
   */
  function xdsServer(w: Workload): grpcXds.XdsServer {
    // A short drain: a listener update (plaintext -> mTLS) moves callers to new connections within a second.
    const server = new grpcXds.XdsServer({ [BOOTSTRAP_OPTION]: JSON.stringify(w.bootstrap), drainGraceTimeMs: 1000 });
    server.addService(ECHO_SERVICE, {
      Call: (c: grpc.ServerUnaryCall<EchoRequest, EchoReply>, cb: grpc.sendUnaryData<EchoReply>) => {
        const peer = peerIdentity(c, TRUST_DOMAIN);
        cb(null, { server: w.cfg.name, headers: { peer: peer.ok ? peer.spiffeId : "none" } });
      },
    });
    servers.push(server);
    return server;
  }

  /**
   * Binds `ip:port` and resolves once it serves. grpc-js-xds 1.14 listens on the PORT on every interface whatever
   * address bindAsync was given; this suite listens on loopback only, so the bound port's socket is told the host.
   */
  function bind(server: grpcXds.XdsServer, ip: string, port: number): Promise<number> {
    const address = `${ip}:${port}`;
    const serving = new Promise<number>((resolve, reject) =>
      server.bindAsync(address, new grpcXds.XdsServerCredentials(grpc.ServerCredentials.createInsecure()), (err, p) => (err ? reject(err) : resolve(p))),
    );
    const entry = (server as unknown as { boundPortMap?: Map<string, { tcpServer?: net.Server }> }).boundPortMap?.get(address);
    if (!entry?.tcpServer) throw new Error("grpc-js-xds internals changed: cannot keep the XdsServer on loopback");
    const tcpServer = entry.tcpServer;
    const listen = tcpServer.listen.bind(tcpServer) as (...args: unknown[]) => net.Server;
    tcpServer.listen = ((p: number, cb?: () => void) => listen({ port: p, host: ip }, cb)) as typeof tcpServer.listen;
    server.addServingStateListener(address, (s) => statuses.push({ address, code: s.code, details: s.details }));
    return serving;
  }

  function xdsClient(w: Workload, secure: boolean): EchoClient {
    const creds = secure ? new grpcXds.XdsChannelCredentials(grpc.credentials.createInsecure()) : grpc.credentials.createInsecure();
    const c = new EchoClientCtor(`xds:///${HOST}:${SERVICE_PORT}`, creds, { [BOOTSTRAP_OPTION]: JSON.stringify(w.bootstrap) }) as unknown as EchoClient;
    clients.push(c);
    return c;
  }

  /** A client straight to ip:port over TLS, with or without a client certificate; it does not check the server. */
  function directTlsClient(ip: string, port: number, clientCert?: { key: string; chain: string }): EchoClient {
    const creds = grpc.credentials.createSsl(
      Buffer.from(ca.rootCertPem),
      clientCert ? Buffer.from(clientCert.key) : null,
      clientCert ? Buffer.from(clientCert.chain) : null,
      { checkServerIdentity: () => undefined },
    );
    const c = new EchoClientCtor(`${ip}:${port}`, creds, { "grpc.use_local_subchannel_pool": 1, "grpc.ssl_target_name_override": HOST }) as unknown as EchoClient;
    clients.push(c);
    return c;
  }

  /** A client straight to ip:port in plaintext, on a connection of its own (not shared with earlier clients). */
  function directPlainClient(ip: string, port: number): EchoClient {
    const c = new EchoClientCtor(`${ip}:${port}`, grpc.credentials.createInsecure(), { "grpc.use_local_subchannel_pool": 1 }) as unknown as EchoClient;
    clients.push(c);
    return c;
  }

  /** The LDS state of one proxy on the control plane (/debug/syncz), found by node id. */
  async function lds(nodeId: string): Promise<{ subscription: string[]; acked?: { version: string }; sent?: { version: string } } | undefined> {
    for (const p of await tcp.syncz()) {
      if (p.proxyId !== nodeId) continue;
      const t = Object.values(p.types).find((x) => (x as { typeUrl?: string }).typeUrl === TypeUrl.Listener);
      if (t) return t as unknown as { subscription: string[]; acked?: { version: string } };
    }
    return undefined;
  }

  /** The listener names the control plane sends `node` for a named LDS request (a raw ADS stream of our own). */
  async function listenerNamesFor(bootstrap: Record<string, unknown>, names: string[]): Promise<string[]> {
    const raw = new RawAdsClient(tcp.xdsAddress, "sotw");
    raws.push(raw);
    raw.send({ node: bootstrap.node as never, type_url: TypeUrl.Listener, resource_names: names });
    const r = await raw.next(10_000);
    expect(r.type_url).to.equal(TypeUrl.Listener);
    return r.resources.map((x) => (decodeToJson("envoy.config.listener.v3.Listener", x.value) as { name: string }).name).sort();
  }

  before(async function () {
    if (!process.env.VMPILOT_LOG_LEVEL) setLogLevel("error");
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "vmpilot-grpc-server-"));
    ca = await CertificateAuthority.load({ dir: path.join(dir, "ca"), trustDomain: TRUST_DOMAIN });
    foreignCa = await CertificateAuthority.load({ dir: path.join(dir, "foreign-ca"), trustDomain: TRUST_DOMAIN });
    tcp = await TestControlPlane.start(() => new ResourceCache());
    await tcp.write("se-echo.yaml", serviceEntry({ name: "echo", host: HOST, port: SERVICE_PORT, selector: { app: "echo" }, namespace: NS }));
    echo = await workload("echo-1", "echo", ECHO_IP);
    frontend = await workload("frontend-1", "frontend", "127.0.0.30");
    echoPort = await freePort(ECHO_IP);
    billingPort = await freePort(BILLING_IP);
  });

  after(async function () {
    for (const r of raws) r.close();
    for (const c of clients) c.close();
    for (const s of servers) s.forceShutdown();
    await tcp?.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  afterEach(async function () {
    // grpc-js-xds NACKs a listener it cannot use (client or server side): none may have.
    expect(await tcp.nacks()).to.deep.equal([]);
  });

  it("does not serve until the control plane sends the listener for its address, then serves callers of xds:///HOST:PORT", async function () {
    // The names the agent's bootstrap makes the server ask for, and the provider instance it defines, are the ones
    // the control plane generates and references.
    expect(echo.bootstrap.server_listener_resource_name_template).to.equal(GRPC_SERVER_LISTENER_TEMPLATE);
    expect(Object.keys(echo.bootstrap.certificate_providers as object)).to.deep.equal([GRPC_CERT_PROVIDER_INSTANCE]);
    echoServer = xdsServer(echo);
    const served = bind(echoServer, ECHO_IP, echoPort);
    const name = grpcServerListenerName(ECHO_IP, echoPort);
    // The control plane has answered the server's LDS request (its ACK is recorded) while no WorkloadEntry puts
    // the workload at that address: the listener does not exist, and the server does not listen.
    const nodeId = (echo.bootstrap.node as { id: string }).id;
    await eventually("the XdsServer's LDS request answered and ACKed", 15_000, async () => {
      const t = await lds(nodeId);
      return t?.subscription.includes(name) && t.acked ? true : undefined;
    });
    expect(statuses.filter((s) => s.code === grpc.status.OK)).to.deep.equal([]);
    expect(await accepts(ECHO_IP, echoPort), "the port before the listener exists").to.equal(false);

    await tcp.write("we-echo-1.yaml", workloadEntry("echo-1", ECHO_IP, echoPort, "echo", "echo"));
    const t0 = Date.now();
    const port = await Promise.race([served, new Promise<never>((_, reject) => setTimeout(() => reject(new Error("not serving within 20 s")), 20_000))]);
    console.log(`      serving ${Date.now() - t0} ms after the WorkloadEntry was written`);
    expect(port).to.equal(echoPort);
    expect(await listenerNamesFor(echo.bootstrap, [name])).to.deep.equal([name]);

    plainClient = xdsClient(frontend, false);
    const r = await eventually("a call through xds:///", 15_000, async () => {
      const res = await call(plainClient, {}, {}, 2000);
      return res.code === grpc.status.OK ? res : undefined;
    });
    expect(r.value.server).to.equal("echo-1");
    expect(r.value.reply!.headers.peer, "no DestinationRule: plaintext").to.equal("none");
  });

  it("never serves an address that is not one of its own instances; a node gets no listener for another identity's address", async function () {
    // billing-1 (service account billing) is declared at BILLING_IP; the echo node binds there anyway, before
    // binding a port of its own that serves.
    await tcp.write(
      "billing.yaml",
      serviceEntry({ name: "billing", host: "billing.shop.mesh", port: 9090, selector: { app: "billing" }, namespace: NS }) +
        "---\n" +
        workloadEntry("billing-1", BILLING_IP, billingPort, "billing", "billing"),
    );
    const foreign = grpcServerListenerName(BILLING_IP, billingPort);
    const own = grpcServerListenerName(ECHO_IP, echoPort);
    await eventually("billing-1's listener exists for billing's own node", 15_000, async () => {
      const billingNode = { ...(echo.bootstrap.node as Record<string, unknown>), id: "grpc~billing-1", metadata: { ...(echo.bootstrap.node as { metadata: object }).metadata, SERVICE_ACCOUNT: "billing", INSTANCE_IPS: BILLING_IP, WORKLOAD_NAME: "billing-1" } };
      const names = await listenerNamesFor({ node: billingNode }, [foreign]);
      return names.length === 1 ? true : undefined;
    });
    // The echo node, even claiming BILLING_IP as its own, gets only its own address.
    const claiming = { ...(echo.bootstrap.node as Record<string, unknown>), metadata: { ...(echo.bootstrap.node as { metadata: object }).metadata, INSTANCE_IPS: `${ECHO_IP},${BILLING_IP}` } };
    expect(await listenerNamesFor({ node: claiming }, [foreign, own])).to.deep.equal([own]);

    // A real XdsServer of the echo node: the foreign address first, then one of its own (a second port, 0.0.0.0 is
    // not used: this suite stays on loopback). The response that makes the second serve lacks the first, which
    // gRPC then treats as "does not exist" (SotW LDS is complete): it never listens there.
    const second = xdsServer(echo);
    const neverServed = bind(second, BILLING_IP, billingPort);
    neverServed.catch(() => undefined);
    const ownPort = await freePort(ECHO_IP);
    await tcp.write(
      "echo-extra.yaml",
      serviceEntry({ name: "echo-admin", host: "admin.echo.shop.mesh", port: ownPort, selector: { app: "echo" }, namespace: NS }).replace(
        `number: ${ownPort}, name: grpc`,
        `number: ${ownPort}, name: admin`,
      ),
    );
    await Promise.race([bind(second, ECHO_IP, ownPort), new Promise<never>((_, reject) => setTimeout(() => reject(new Error("own port not serving within 20 s")), 20_000))]);
    expect(statuses.filter((s) => s.address === `${BILLING_IP}:${billingPort}` && s.code === grpc.status.OK)).to.deep.equal([]);
    expect(await accepts(BILLING_IP, billingPort), "the foreign address").to.equal(false);
    expect(await accepts(ECHO_IP, ownPort), "its own second port").to.equal(true);
  });

  it("with a DestinationRule ISTIO_MUTUAL, requires the mesh certificate: callers with it get through, others are refused", async function () {
    await tcp.write("dr-echo.yaml", MUTUAL);
    mtlsClient = xdsClient(frontend, true);
    // The client's cluster and the server's listener both switch to mTLS; the server sees the caller's identity.
    const r = await eventually("an mTLS call through xds:/// that the server authenticates", 20_000, async () => {
      const res = await call(mtlsClient, {}, {}, 2000);
      return res.code === grpc.status.OK && res.reply!.headers.peer !== "none" ? res : undefined;
    });
    expect(r.value.server).to.equal("echo-1");
    expect(r.value.reply!.headers.peer).to.equal(spiffe("frontend"));

    // The plaintext xDS caller of before (no certificate at all) is refused once its old connection drained.
    await eventually("the plaintext caller refused", 20_000, async () => {
      const res = await call(plainClient, {}, {}, 2000);
      return res.code === grpc.status.UNAVAILABLE ? true : undefined;
    });

    // Straight to the server over TLS: without a client certificate, and with one from another CA (same SPIFFE id),
    // the handshake is refused; with the mesh certificate it succeeds (so it is the certificate that decides).
    const noCert = await call(directTlsClient(ECHO_IP, echoPort), {}, {}, 3000);
    expect(noCert.code, noCert.details).to.equal(grpc.status.UNAVAILABLE);
    const foreign = await call(directTlsClient(ECHO_IP, echoPort, await mint(foreignCa, spiffe("frontend"))), {}, {}, 3000);
    expect(foreign.code, foreign.details).to.equal(grpc.status.UNAVAILABLE);
    const mesh = await call(directTlsClient(ECHO_IP, echoPort, { key: frontend.key, chain: frontend.chain }), {}, {}, 3000);
    expect(mesh.code, mesh.details).to.equal(grpc.status.OK);
    expect(mesh.reply!.headers.peer).to.equal(spiffe("frontend"));
  });

  it("without the rule, serves plaintext again (callers without a certificate get through)", async function () {
    await tcp.remove("dr-echo.yaml");
    const r = await eventually("the plaintext caller served again", 20_000, async () => {
      const res = await call(plainClient, {}, {}, 2000);
      return res.code === grpc.status.OK ? res : undefined;
    });
    expect(r.value.reply!.headers.peer).to.equal("none");
  });

  it("stops accepting connections when its instance goes away (the listener is removed)", async function () {
    // Plaintext since the previous test: a fresh direct connection is served now, so a refusal below is the removal.
    await eventually("a direct plaintext call served before the removal", 20_000, async () => {
      const res = await call(directPlainClient(ECHO_IP, echoPort), {}, {}, 2000);
      return res.code === grpc.status.OK ? true : undefined;
    });
    await tcp.remove("we-echo-1.yaml");
    const name = grpcServerListenerName(ECHO_IP, echoPort);
    await eventually("the listener gone from the control plane's answer", 15_000, async () => ((await listenerNamesFor(echo.bootstrap, [name])).length === 0 ? true : undefined));
    await eventually("new connections refused after the WorkloadEntry was removed", 20_000, async () => {
      const res = await call(directPlainClient(ECHO_IP, echoPort), {}, {}, 2000);
      return res.code === grpc.status.UNAVAILABLE ? true : undefined;
    });
  });
});

describe("gRPC server listeners on the secure port: a node gets only the instances of the identity its certificate proves", function () {
  this.timeout(60_000);
  let tcp: TestControlPlane;
  let stateDir: string;
  const raws: RawAdsClient<"sotw">[] = [];
  const echoName = grpcServerListenerName(ECHO_IP, 7070);
  const billingName = grpcServerListenerName(BILLING_IP, 9090);

  before(async function () {
    stateDir = fs.mkdtempSync(path.join(os.tmpdir(), "vmpilot-grpc-server-state-"));
    tcp = await TestControlPlane.start(
      () => new ResourceCache(),
      {
        "mesh.yaml": [
          serviceEntry({ name: "echo", host: HOST, port: SERVICE_PORT, selector: { app: "echo" }, namespace: NS }),
          workloadEntry("echo-1", ECHO_IP, 7070, "echo", "echo"),
          serviceEntry({ name: "billing", host: "billing.shop.mesh", port: 9090, selector: { app: "billing" }, namespace: NS }),
          workloadEntry("billing-1", BILLING_IP, 9090, "billing", "billing"),
        ].join("---\n"),
      },
      "127.0.0.1:0",
      { stateDir, secureAddr: "127.0.0.1:0" },
    );
  });

  after(async function () {
    for (const r of raws) r.close();
    await tcp?.stop();
    fs.rmSync(stateDir, { recursive: true, force: true });
  });

  /** A raw ADS stream on the secure port with a mesh certificate for shop/SA, asking for both server listeners. */
  async function ask(certSa: string, metadata: Record<string, unknown>): Promise<{ names?: string[]; status?: string }> {
    const spiffeId = spiffe(certSa);
    const { keyPem, csrPem } = await generateKeyAndCsr(spiffeId);
    const issued = await tcp.cp.meshCa!.authority.issue({ publicKey: (await parseCsr(csrPem)).publicKey, spiffeId });
    const creds = securePortChannelCredentials({
      rootCaPem: tcp.cp.meshCa!.authority.rootCertPem,
      expectedServerSan: controlPlaneSpiffeId(TRUST_DOMAIN),
      clientKeyCert: { keyPem, certChainPem: issued.certPem },
    });
    const raw = new RawAdsClient(tcp.cp.addresses.secure!, "sotw", creds, SECURE_PORT_CHANNEL_OPTIONS);
    raws.push(raw);
    raw.send({ node: testNode(`grpc~${certSa}`, { NAMESPACE: NS, PROXY_KIND: "grpc", ...metadata }), type_url: TypeUrl.Listener, resource_names: [echoName, billingName] });
    try {
      const r = await raw.next(10_000);
      return { names: r.resources.map((x) => (decodeToJson("envoy.config.listener.v3.Listener", x.value) as { name: string }).name).sort() };
    } catch {
      return { status: grpc.status[(await raw.ended(10_000)).code] };
    }
  }

  it("claiming another workload's IP gets nothing for it; claiming its service account is refused", async function () {
    expect(await ask("echo", { SERVICE_ACCOUNT: "echo", INSTANCE_IPS: `${ECHO_IP},${BILLING_IP}` })).to.deep.equal({ names: [echoName] });
    expect(await ask("echo", { SERVICE_ACCOUNT: "billing", INSTANCE_IPS: BILLING_IP })).to.deep.equal({ status: "PERMISSION_DENIED" });
    expect(await ask("billing", { SERVICE_ACCOUNT: "billing", INSTANCE_IPS: BILLING_IP })).to.deep.equal({ names: [billingName] });
  });
});
