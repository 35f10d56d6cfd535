// `vmpilot-agent run` with dns.enabled against a REAL control plane: its secure port (mesh CA, mTLS xDS with
// the identity check) and the name tables `vmpilot server` serves. The agent gets its certificate with a token,
// subscribes to the name table as its proxy's node, and its DNS proxy answers Node's resolver; a ServiceEntry
// edit in the watched directory changes the answer within 2 seconds.
import dgram from "node:dgram";
import dns from "node:dns";
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { expect } from "chai";
import { setLogLevel } from "@vmpilot/registry/logger";
import { ResourceCache } from "@vmpilot/xds/cache";
import { withNameTables } from "@vmpilot/xds/dns/nametable-cache";
import { resolveServerConfig } from "@vmpilot/xds/server/config";
import { ControlPlane } from "@vmpilot/xds/server/control-plane";
import { Agent } from "../src/agent.js";
import { parseAgentConfig } from "../src/config.js";
import { memoryLogger, tmpDir, until } from "./helpers.js";

if (!process.env.VMPILOT_LOG_LEVEL) setLogLevel("warn");

const DNS_ADDRESS = "127.0.0.47";

function entries(address: string): string {
  return `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: billing, namespace: shop }
spec:
  hosts: [billing.shop.internal]
  addresses: [${address}]
  ports: [{ number: 8080, name: http, protocol: HTTP }]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: private, namespace: other }
spec:
  hosts: [private.other.internal]
  exportTo: ["."]
  addresses: [192.0.2.99]
  ports: [{ number: 8080, name: http, protocol: HTTP }]
  resolution: DNS
`;
}

async function resolve4(r: dns.promises.Resolver, name: string): Promise<string> {
  try {
    return (await r.resolve4(name)).join(",");
  } catch (e) {
    return (e as NodeJS.ErrnoException).code ?? "error";
  }
}

function getJson(addr: { address: string; port: number }, p: string): Promise<Record<string, any>> { // eslint-disable-line @typescript-eslint/no-explicit-any
  return new Promise((resolve, reject) => {
    http
      .get({ host: addr.address, port: addr.port, path: p }, (res) => {
        let body = "";
        res.on("data", (c) => (body += c));
        res.on("end", () => resolve(JSON.parse(body)));
      })
      .on("error", reject);
  });
}

describe("vmpilot-agent run with the DNS proxy (real control plane, secure port)", function () {
  this.timeout(60_000);
  let dir: string;
  let configDir: string;
  let cp: ControlPlane;
  let agent: Agent;
  let resolver: dns.promises.Resolver;
  const log = memoryLogger();

  before(async () => {
    dir = tmpDir("vmpilot-agent-dns-run-");
    configDir = path.join(dir, "config");
    fs.mkdirSync(configDir);
    fs.writeFileSync(path.join(configDir, "entries.yaml"), entries("192.0.2.10"));
    const config = resolveServerConfig({ configDirs: [configDir], xdsAddr: "127.0.0.1:0", secureAddr: "127.0.0.1:0", httpAddr: "127.0.0.1:0", stateDir: path.join(dir, "state") }, dir, {});
    cp = new ControlPlane({ config, createCache: () => withNameTables(new ResourceCache()) });
    await cp.start();

    fs.writeFileSync(path.join(dir, "root-cert.pem"), cp.meshCa!.authority.rootCertPem);
    fs.writeFileSync(path.join(dir, "token"), await cp.meshCa!.tokens.create({ trustDomain: "cluster.local", namespace: "shop", serviceAccount: "billing-client" }));
    const cfg = parseAgentConfig(
      `name: billing-client-vm
namespace: shop
serviceAccount: billing-client
address: 127.0.0.1
proxy: {kind: grpc}
controlPlane: {address: "${cp.addresses.secure}", tokenFile: ${dir}/token, rootCertFile: ${dir}/root-cert.pem}
output: {dir: ${dir}/out}
status: {address: "127.0.0.1:0", readinessAddress: "127.0.0.1:0"}
certificates: {ttl: 4s, minRetry: 100ms, maxRetry: 500ms}
dns:
  enabled: true
  address: ${DNS_ADDRESS}
  port: 0
  upstreams: []
`,
      path.join(dir, "agent.yaml"),
    );
    expect(cfg.dns.capture).to.equal(false); // proxyless: no traffic capture, so no DNS capture by default
    agent = new Agent(cfg, { logger: log });
    await agent.start();
    resolver = new dns.promises.Resolver({ timeout: 2000, tries: 1 });
    resolver.setServers([`${DNS_ADDRESS}:${agent.dns!.address.port}`]);
  });

  afterEach(function () {
    if (this.currentTest?.state === "failed") console.log(log.lines.map((l) => `      agent: ${l}`).join("\n"));
  });

  after(async () => {
    await agent?.stop();
    await cp?.stop(1000);
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it("answers the mesh hosts exported to its namespace, from the table the control plane sends its node", async () => {
    await until("the first name table", () => agent.nameTables!.status().tables > 0, 30_000);
    expect(await resolve4(resolver, "billing.shop.internal")).to.equal("192.0.2.10");
    // Not exported to `shop`, and there is no upstream to forward to.
    expect(await resolve4(resolver, "private.other.internal")).to.equal("EREFUSED");
    // The stream went through the secure port as the proxy's own node.
    const syncz = (await (await fetch(`http://${cp.addresses.http}/debug/syncz`)).json()) as { proxyId: string }[];
    expect(syncz.map((p) => p.proxyId)).to.include("grpc~127.0.0.1~billing-client-vm.shop~shop.svc.cluster.local");
  });

  it("shows the DNS state on /status", async () => {
    const st = await getJson(agent.status.statusAddress!, "/status");
    expect(st.dns).to.deep.include({ address: `${DNS_ADDRESS}:${agent.dns!.address.port}`, capture: false, upstreams: [] });
    expect(st.dns.names).to.be.greaterThan(0);
    expect(st.dns.nameTable.connected).to.equal(true);
    expect(st.dns.nameTable.tables).to.be.greaterThan(0);
    expect(st.dns.nameTable.version).to.be.a("string").and.not.equal("");
    expect(Date.parse(st.dns.nameTable.lastUpdate)).to.be.closeTo(Date.now(), 60_000);
  });

  it("changes the answer within 2 seconds of a ServiceEntry edit", async () => {
    const t0 = Date.now();
    fs.writeFileSync(path.join(configDir, "entries.yaml"), entries("192.0.2.11"));
    await until("the edited address", async () => (await resolve4(resolver, "billing.shop.internal")) === "192.0.2.11", 2000, 20);
    console.log(`      (file write -> new DNS answer: ${Date.now() - t0} ms)`);
  });

  it("reconnects after a control plane restart with its CURRENT certificate, and learns what changed meanwhile", async () => {
    const secure = cp.addresses.secure!;
    const before = agent.nameTables!.status().tables;
    // Certificates live 4 s here: wait until the one the first stream presented has expired, so the secure port
    // refuses any reconnect that does not present a renewed one.
    const first = agent.rotator.current!;
    await until("the first certificate to expire", () => Date.now() > first.notAfter.getTime() + 500, 15_000, 100);
    expect(agent.rotator.current!.serial).not.to.equal(first.serial);
    await cp.stop(1000);
    await until("the agent to notice the stream ended", () => !agent.nameTables!.status().connected);
    fs.writeFileSync(path.join(configDir, "entries.yaml"), entries("192.0.2.12"));
    // Same secure port and state dir (the CA persists): what a restarted `vmpilot server` looks like to agents.
    const config = resolveServerConfig({ configDirs: [configDir], xdsAddr: "127.0.0.1:0", secureAddr: secure, httpAddr: "127.0.0.1:0", stateDir: path.join(dir, "state") }, dir, {});
    cp = new ControlPlane({ config, createCache: () => withNameTables(new ResourceCache()) });
    await cp.start();
    await until("a table from the restarted control plane", () => agent.nameTables!.status().tables > before, 30_000);
    expect(await resolve4(resolver, "billing.shop.internal")).to.equal("192.0.2.12");
  });

  it("releases the DNS port and ends its subscription when stopped", async () => {
    const port = agent.dns!.address.port;
    const sub = agent.nameTables!;
    await agent.stop();
    expect(sub.status().connected).to.equal(false);
    const socket = dgram.createSocket("udp4");
    await new Promise<void>((resolve, reject) => {
      socket.once("error", reject);
      socket.bind(port, DNS_ADDRESS, () => resolve());
    });
    await new Promise<void>((r) => socket.close(() => r()));
  });
});
