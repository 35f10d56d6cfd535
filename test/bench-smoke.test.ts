// Keeps `npm run bench` from rotting: the benchmark's own runner, at a toy size, against the real server in its
// own process (from the TypeScript sources) and the real load generator in another. It checks behaviour, not
// speed: every simulated proxy converges, and a change reaches exactly the proxies subscribed to it.
import path from "node:path";
import { fileURLToPath } from "node:url";
import { expect } from "chai";
import { benchMesh, type RunResult, runOne } from "../bench/run.js";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const serverCommand = [process.execPath, "--conditions=vmpilot-source", "--import", "tsx", path.join(repo, "packages/xds/src/cli.ts")];
const S = 10;
const K = 5;

function expectConverged(r: RunResult): void {
  expect(r.connectStorm.unconverged, "proxies that never got their full config").to.equal(0);
  expect(r.connectStorm.n).to.equal(K);
  expect(r.connectStorm.bytesPerProxy).to.be.greaterThan(0);
  expect(r.serverRssMb.connected).to.be.greaterThan(0);
}

describe("benchmark smoke (bench/run.ts at S=10, K=5)", function () {
  this.timeout(180_000);

  it("Envoy-style SotW: all proxies converge; an endpoint change and a routing change reach every subscribed proxy and no one else", async function () {
    const r = await runOne(benchMesh(S), K, "envoy-sotw", { serverCommand, settleMs: 200 });
    expectConverged(r);
    // Every service is exported everywhere, and an Envoy proxy subscribes to the EDS of every cluster it has.
    expect(r.endpointChange).to.include({ subscribed: K, missing: 0, unaffectedPushed: 0 });
    expect(r.endpointChange.n).to.equal(K);
    expect(r.routingChange, "the mesh has a routed service").to.not.equal(undefined);
    expect(r.routingChange).to.include({ subscribed: K, missing: 0, unaffectedPushed: 0 });
  });

  it("Envoy-style delta: all proxies converge; an endpoint change reaches every subscribed proxy", async function () {
    const r = await runOne(benchMesh(S), K, "envoy-delta", { serverCommand, settleMs: 200 });
    expectConverged(r);
    expect(r.endpointChange).to.include({ subscribed: K, missing: 0, unaffectedPushed: 0 });
  });

  it("gRPC-style: an endpoint change reaches only the client whose listener leads to the changed service", async function () {
    const r = await runOne(benchMesh(S), K, "grpc", { serverCommand, settleMs: 200 });
    expectConverged(r);
    // Client i asks for svc-(i mod S): only client 1 uses svc-1, whose WorkloadEntries are rewritten.
    expect(r.endpointChange).to.include({ subscribed: 1, missing: 0, unaffectedPushed: 0 });
    expect(r.routingChange).to.equal(undefined);
  });
});
