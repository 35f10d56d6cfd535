// The agent's local xDS proxy between a plaintext local client (what grpc-js-xds can do) and the control plane's
// mTLS secure port. Upstream: a gRPC server with the REAL secure-port credentials of the mesh CA whose ADS
// handler reports the verified peer identity and certificate serial it saw.
import fs from "node:fs";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import { expect } from "chai";
import { peerIdentity } from "@vmpilot/xds/ca/identity";
import { lookupType } from "@vmpilot/xds/protos";
import { Agent } from "../src/agent.js";
import { parseAgentConfig } from "../src/config.js";
import { ADS_METHODS } from "../src/xds-proxy.js";
import { memoryLogger, startCa, tmpDir, until, type RunningCa } from "./helpers.js";

const Request = lookupType("envoy.service.discovery.v3.DiscoveryRequest");
const Response = lookupType("envoy.service.discovery.v3.DiscoveryResponse");
const DeltaRequest = lookupType("envoy.service.discovery.v3.DeltaDiscoveryRequest");
const DeltaResponse = lookupType("envoy.service.discovery.v3.DeltaDiscoveryResponse");
const raw = (b: Buffer) => b;
const method = (p: string): grpc.MethodDefinition<Buffer, Buffer> => ({ path: p, requestStream: true, responseStream: true, requestSerialize: raw, requestDeserialize: raw, responseSerialize: raw, responseDeserialize: raw });

/** ADS on the secure port that answers each request with who the caller proved to be. */
async function startUpstream(ca: RunningCa): Promise<{ server: grpc.Server; address: string; refusals: string[] }> {
  const server = new grpc.Server();
  const refusals: string[] = [];
  const sotw = (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
    const peer = peerIdentity(call, "cluster.local");
    if (!peer.ok) {
      refusals.push(peer.reason);
      call.emit("error", { code: grpc.status.UNAUTHENTICATED, details: peer.reason });
      return;
    }
    const serial = call.getAuthContext().sslPeerCertificate!.serialNumber;
    call.on("data", (b: Buffer) => {
      const req = Request.toObject(Request.decode(b)) as { type_url: string; node?: { id: string } };
      call.write(Buffer.from(Response.encode(Response.fromObject({ version_info: peer.spiffeId, nonce: serial, type_url: req.type_url, control_plane: { identifier: req.node?.id ?? "" } })).finish()));
    });
    call.on("end", () => call.end());
  };
  const delta = (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
    const peer = peerIdentity(call, "cluster.local");
    call.on("data", (b: Buffer) => {
      const req = DeltaRequest.toObject(DeltaRequest.decode(b)) as { type_url: string };
      call.write(Buffer.from(DeltaResponse.encode(DeltaResponse.fromObject({ system_version_info: peer.ok ? peer.spiffeId : "none", type_url: req.type_url, nonce: "d1" })).finish()));
    });
    call.on("end", () => call.end());
  };
  server.addService(
    { StreamAggregatedResources: method(ADS_METHODS.StreamAggregatedResources), DeltaAggregatedResources: method(ADS_METHODS.DeltaAggregatedResources) },
    { StreamAggregatedResources: sotw, DeltaAggregatedResources: delta },
  );
  ca.ca.addTo(server);
  const port = await new Promise<number>((resolve, reject) => server.bindAsync("127.0.0.1:0", ca.ca.secure.credentials, (e, p) => (e ? reject(e) : resolve(p))));
  return { server, address: `127.0.0.1:${port}`, refusals };
}

/** One request/response over the proxy with plaintext credentials, as grpc-js-xds would connect. */
async function exchange(target: string, pathName: string, body: Buffer): Promise<Buffer> {
  const client = new grpc.Client(target, grpc.credentials.createInsecure());
  try {
    return await new Promise<Buffer>((resolve, reject) => {
      const call = client.makeBidiStreamRequest(pathName, raw, raw);
      call.on("data", (b: Buffer) => {
        resolve(b);
        call.end();
      });
      call.on("error", reject);
      call.write(body);
    });
  } finally {
    client.close();
  }
}

describe("xDS proxy for proxyless gRPC (real CA and secure-port credentials)", function () {
  this.timeout(60_000);
  let ca: RunningCa;
  let upstream: Awaited<ReturnType<typeof startUpstream>>;
  let dir: string;
  let agent: Agent;

  before(async () => {
    ca = await startCa();
    upstream = await startUpstream(ca);
    dir = tmpDir("vmpilot-xds-proxy-");
    fs.writeFileSync(path.join(dir, "root.pem"), ca.rootPem);
    fs.writeFileSync(path.join(dir, "token"), await ca.ca.tokens.create({ trustDomain: "cluster.local", namespace: "shop", serviceAccount: "ratings" }));
    const cfg = parseAgentConfig(
      `name: ratings-vm\nnamespace: shop\nserviceAccount: ratings\naddress: 127.0.0.1\nproxy: {kind: grpc}\ncontrolPlane: {address: "${upstream.address}", tokenFile: ${dir}/token, rootCertFile: ${dir}/root.pem}\noutput: {dir: ${dir}/out}\nstatus: {address: "127.0.0.1:0", readinessAddress: "127.0.0.1:0"}\ncertificates: {ttl: 3s, minRetry: 100ms}\n`,
      "agent.yaml",
    );
    agent = new Agent(cfg, { logger: memoryLogger() });
    await agent.start();
  });
  after(async () => {
    await agent?.stop();
    upstream?.server.forceShutdown();
    await ca?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("serves the gRPC bootstrap's xds server_uri and forwards SotW ADS with the workload certificate", async () => {
    const bootstrap = JSON.parse(fs.readFileSync(agent.cfg.output.grpcBootstrapFile, "utf8"));
    const target = bootstrap.xds_servers[0].server_uri;
    expect(target).to.equal(`unix://${dir}/out/xds.sock`);
    const req = Buffer.from(Request.encode(Request.fromObject({ type_url: "type.googleapis.com/envoy.config.listener.v3.Listener", node: { id: bootstrap.node.id } })).finish());
    const res = Response.toObject(Response.decode(await exchange(target, ADS_METHODS.StreamAggregatedResources, req))) as { version_info: string; nonce: string; type_url: string; control_plane: { identifier: string } };
    expect(res.version_info).to.equal("spiffe://cluster.local/ns/shop/sa/ratings");
    expect(res.type_url).to.equal("type.googleapis.com/envoy.config.listener.v3.Listener");
    expect(res.control_plane.identifier).to.equal(bootstrap.node.id); // the node went through untouched
    expect(upstream.refusals).to.deep.equal([]);
  });

  it("forwards delta ADS too", async () => {
    const target = agent.cfg.grpc.xdsServerUri;
    const req = Buffer.from(DeltaRequest.encode(DeltaRequest.fromObject({ type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster" })).finish());
    const res = DeltaResponse.toObject(DeltaResponse.decode(await exchange(target, ADS_METHODS.DeltaAggregatedResources, req))) as { system_version_info: string; type_url: string };
    expect(res).to.deep.include({ system_version_info: "spiffe://cluster.local/ns/shop/sa/ratings", type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster" });
  });

  it("presents the renewed certificate on streams opened after a rotation", async () => {
    const target = agent.cfg.grpc.xdsServerUri;
    const req = Buffer.from(Request.encode(Request.fromObject({ type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster" })).finish());
    const serialOf = async () => (Response.toObject(Response.decode(await exchange(target, ADS_METHODS.StreamAggregatedResources, req))) as { nonce: string }).nonce;
    // Every certificate the agent has held (renewals may happen at any moment with a 3 s lifetime).
    const held = new Set([agent.rotator.current!.serial.toUpperCase()]);
    const onRotated = (b: { serial: string }) => held.add(b.serial.toUpperCase());
    agent.rotator.on("rotated", onRotated);
    try {
      const first = (await serialOf()).toUpperCase();
      expect(held).to.include(first);
      await until("a rotation", () => agent.rotator.current!.serial.toUpperCase() !== first, 20_000);
      const second = (await serialOf()).toUpperCase();
      expect(held).to.include(second);
      expect(second).not.to.equal(first);
    } finally {
      agent.rotator.off("rotated", onRotated);
    }
  });
});
