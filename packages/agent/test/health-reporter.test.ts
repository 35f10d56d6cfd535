// Probe results reach the control plane as Istio-style HealthInformation requests on an ADS stream that the
// agent opens with its workload certificate. Upstream: real secure-port credentials of the mesh CA.
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import { expect } from "chai";
import { peerIdentity } from "@vmpilot/xds/ca/identity";
import { decodeToJson } from "@vmpilot/xds/protojson";
import { Agent } from "../src/agent.js";
import { parseAgentConfig } from "../src/config.js";
import { HEALTH_TYPE_URL } from "../src/health-reporter.js";
import { ADS_METHODS } from "../src/xds-proxy.js";
import { memoryLogger, startCa, tmpDir, until, type RunningCa } from "./helpers.js";

type J = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const raw = (b: Buffer) => b;

describe("health reporting over ADS (real CA credentials)", function () {
  this.timeout(60_000);
  let ca: RunningCa;
  let server: grpc.Server;
  let dir: string;
  let app: net.Server;
  let agent: Agent;
  const streams: { peer: string; requests: J[]; call: grpc.ServerDuplexStream<Buffer, Buffer> }[] = [];

  before(async () => {
    ca = await startCa();
    server = new grpc.Server();
    const method = { path: ADS_METHODS.StreamAggregatedResources, requestStream: true, responseStream: true, requestSerialize: raw, requestDeserialize: raw, responseSerialize: raw, responseDeserialize: raw };
    server.addService({ StreamAggregatedResources: method }, {
      StreamAggregatedResources: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
        const peer = peerIdentity(call, "cluster.local");
        const s = { peer: peer.ok ? peer.spiffeId : `refused: ${peer.reason}`, requests: [] as J[], call };
        streams.push(s);
        call.on("data", (b: Buffer) => s.requests.push(decodeToJson("envoy.service.discovery.v3.DiscoveryRequest", b) as J));
        call.on("end", () => call.end());
      },
    });
    const port = await new Promise<number>((resolve, reject) => server.bindAsync("127.0.0.1:0", ca.ca.secure.credentials, (e, p) => (e ? reject(e) : resolve(p))));
    ca.ca.addTo(server);

    app = net.createServer((s) => s.end());
    await new Promise<void>((r) => app.listen(0, "127.0.0.1", r));
    const appPort = (app.address() as net.AddressInfo).port;

    dir = tmpDir("vmpilot-health-");
    fs.writeFileSync(path.join(dir, "root.pem"), ca.rootPem);
    fs.writeFileSync(path.join(dir, "token"), await ca.ca.tokens.create({ trustDomain: "cluster.local", namespace: "shop", serviceAccount: "ratings" }));
    const cfg = parseAgentConfig(
      `name: ratings-vm\nnamespace: shop\nserviceAccount: ratings\naddress: 127.0.0.1\nautoRegisterGroup: ratings\nproxy: {kind: grpc}\ngrpc: {xdsProxy: false}\n` +
        `controlPlane: {address: "127.0.0.1:${port}", tokenFile: ${dir}/token, rootCertFile: ${dir}/root.pem}\noutput: {dir: ${dir}/out}\n` +
        `status: {address: "127.0.0.1:0", readinessAddress: "127.0.0.1:0"}\nprobe: {tcpSocket: {port: ${appPort}}, periodSeconds: 1, failureThreshold: 1}\n`,
      "agent.yaml",
    );
    agent = new Agent(cfg, { logger: memoryLogger() });
    await agent.start();
  });
  after(async () => {
    await agent?.stop();
    server?.forceShutdown();
    await new Promise<void>((r) => (app?.listening ? app.close(() => r()) : r()));
    await ca?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("sends healthy with the workload's node and identity, then unhealthy with the probe's reason, then re-sends after a broken stream", async () => {
    const first = await until("a health report", () => streams[0]?.requests[0]);
    expect(streams[0]!.peer).to.equal("spiffe://cluster.local/ns/shop/sa/ratings");
    expect(first.type_url).to.equal(HEALTH_TYPE_URL);
    expect(first).not.to.have.property("error_detail");
    expect(first.node.id).to.equal("grpc~127.0.0.1~ratings-vm.shop~shop.svc.cluster.local");
    expect(first.node.metadata).to.deep.include({ NAMESPACE: "shop", SERVICE_ACCOUNT: "ratings", AUTO_REGISTER_GROUP: "ratings", WORKLOAD_NAME: "ratings-vm" });

    await new Promise<void>((r) => app.close(() => r()));
    const unhealthy = await until("an unhealthy report", () => streams[0]!.requests.find((r) => r.error_detail));
    expect(unhealthy).not.to.have.property("node"); // node only on a stream's first message
    expect(unhealthy.error_detail).to.deep.equal({ code: grpc.status.UNAVAILABLE, message: "connect ECONNREFUSED" });

    // The control plane drops the stream: the agent comes back and states the current health first.
    streams[0]!.call.emit("error", { code: grpc.status.UNAVAILABLE, details: "test: stream reset" });
    const again = await until("a new stream", () => streams[1]?.requests[0], 20_000);
    expect(again.node.id).to.equal(first.node.id);
    expect(again.error_detail.message).to.equal("connect ECONNREFUSED");
  });
});
