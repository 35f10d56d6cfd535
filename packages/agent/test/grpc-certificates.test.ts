// The files the agent rotates, read the way proxyless gRPC reads them: grpc-js's own file_watcher certificate
// provider, configured from the agent's gRPC bootstrap, backing a real mTLS call (server requires a client
// certificate, client verifies the server's SPIFFE id). Calls keep succeeding across renewals.
import fs from "node:fs";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import { expect } from "chai";
import { checkServerSpiffeId } from "@vmpilot/xds/ca/client";
import { peerIdentity } from "@vmpilot/xds/ca/identity";
import { Agent } from "../src/agent.js";
import { parseAgentConfig } from "../src/config.js";
import { inspectLeaf } from "../src/certs.js";
import { memoryLogger, startCa, tmpDir, until, type RunningCa } from "./helpers.js";

const raw = (b: Buffer) => b;
const ECHO = "/vmpilot.test.Echo/Who";

describe("rotated files through grpc-js's file_watcher provider (real CA)", function () {
  this.timeout(60_000);
  let ca: RunningCa;
  let dir: string;
  let agent: Agent;
  let server: grpc.Server;
  let target: string;
  let channelCreds: grpc.ChannelCredentials;
  let provider: grpc.experimental.FileWatcherCertificateProvider;

  before(async () => {
    ca = await startCa();
    dir = tmpDir("vmpilot-grpc-certs-");
    fs.writeFileSync(path.join(dir, "root.pem"), ca.rootPem);
    fs.writeFileSync(path.join(dir, "token"), await ca.ca.tokens.create({ trustDomain: "cluster.local", namespace: "shop", serviceAccount: "ratings", ttlMs: 1000 }));
    const cfg = parseAgentConfig(
      `name: ratings-vm\nnamespace: shop\nserviceAccount: ratings\naddress: 127.0.0.1\nproxy: {kind: grpc}\ngrpc: {xdsProxy: false, xdsServerUri: "127.0.0.1:1", certRefreshInterval: 200ms}\n` +
        `controlPlane: {address: "${ca.address}", tokenFile: ${dir}/token, rootCertFile: ${dir}/root.pem}\noutput: {dir: ${dir}/out}\n` +
        `status: {address: "127.0.0.1:0", readinessAddress: "127.0.0.1:0"}\ncertificates: {ttl: 3s, minRetry: 100ms}\n`,
      "agent.yaml",
    );
    agent = new Agent(cfg, { logger: memoryLogger() });
    await agent.start();

    // Exactly what grpc-js-xds builds from the bootstrap's certificate_providers.default.
    const bootstrap = JSON.parse(fs.readFileSync(cfg.output.grpcBootstrapFile, "utf8"));
    const c = bootstrap.certificate_providers.default.config;
    provider = new grpc.experimental.FileWatcherCertificateProvider({
      certificateFile: c.certificate_file,
      privateKeyFile: c.private_key_file,
      caCertificateFile: c.ca_certificate_file,
      refreshIntervalMs: 200,
    });

    server = new grpc.Server();
    server.register(ECHO, (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      const peer = peerIdentity(call, "cluster.local");
      const serial = call.getAuthContext().sslPeerCertificate?.serialNumber ?? "";
      cb(null, Buffer.from(JSON.stringify({ peer: peer.ok ? peer.spiffeId : peer.reason, serial })));
    }, raw, raw, "unary");
    const creds = grpc.experimental.createCertificateProviderServerCredentials(provider, provider, true);
    const port = await new Promise<number>((resolve, reject) => server.bindAsync("127.0.0.1:0", creds, (e, p) => (e ? reject(e) : resolve(p))));
    target = `127.0.0.1:${port}`;
    channelCreds = grpc.experimental.createCertificateProviderChannelCredentials(provider, provider, { checkServerIdentity: checkServerSpiffeId(cfg.identity) });
  });
  after(async () => {
    server?.forceShutdown();
    await agent?.stop();
    await ca?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  /**
   * One call on a NEW connection (a private subchannel pool: grpc-js would otherwise reuse a pooled connection,
   * and a TLS session keeps the certificate of its handshake, which is how TLS works everywhere).
   */
  async function call(): Promise<{ peer: string; serial: string }> {
    const client = new grpc.Client(target, channelCreds, { "grpc.use_local_subchannel_pool": 1 });
    try {
      return await new Promise((resolve, reject) =>
        client.makeUnaryRequest(ECHO, raw, raw, Buffer.alloc(0), { deadline: Date.now() + 5000 }, (e, r) => (e ? reject(e) : resolve(JSON.parse(r!.toString())))),
      );
    } finally {
      client.close();
    }
  }

  it("authenticates with the agent's certificate, and new connections use the renewed one after the token expired", async () => {
    const first = await until("a successful mTLS call", () => call());
    expect(first.peer).to.equal("spiffe://cluster.local/ns/shop/sa/ratings");
    const serials = new Set<string>([first.serial.toUpperCase()]);
    let calls = 1;
    // Keep calling across several renewals (3 s lifetime, token long expired after the first).
    await until(
      "calls presenting three different certificates",
      async () => {
        const r = await call();
        calls++;
        expect(r.peer).to.equal("spiffe://cluster.local/ns/shop/sa/ratings");
        serials.add(r.serial.toUpperCase());
        return serials.size >= 3;
      },
      30_000,
      300,
    ).catch(async (e) => {
      throw new Error(`${(e as Error).message}; saw ${[...serials].join(", ")} in ${calls} calls; on disk ${inspectLeaf(fs.readFileSync(agent.cfg.output.certChainFile, "utf8")).serial}`);
    });
  });
});
