// Incremental (delta) ADS rules, proven with our raw client: no real delta client runs on this machine.
import { expect } from "chai";
import type * as grpc from "@grpc/grpc-js";
import { AdsServer } from "../src/server/ads-server.js";
import { TypeUrl } from "../src/protos.js";
import { RawAdsClient, testNode } from "../../../test/helpers/raw-ads-client.js";
import { cla, cluster, encodeResource, StaticSource } from "../../../test/helpers/static-source.js";
import { startAds } from "../../../test/helpers/ads-port.js";

const CDS = TypeUrl.Cluster;
const EDS = TypeUrl.ClusterLoadAssignment;

type Res = { resources: { name: string; version: string }[]; removed_resources: string[] };
const got = (r: Res): Record<string, string> => Object.fromEntries(r.resources.map((x) => [x.name, x.version]));

describe("ADS delta", function () {
  let source: StaticSource;
  let ads: AdsServer;
  let server: grpc.Server;
  let address: string;
  const clients: RawAdsClient<"delta">[] = [];

  function connect(): RawAdsClient<"delta"> {
    const c = new RawAdsClient(address, "delta");
    clients.push(c);
    return c;
  }

  beforeEach(async function () {
    source = new StaticSource();
    source.set(CDS, [cluster("a"), cluster("b")]);
    source.set(EDS, [cla("a", ["10.0.0.1"]), cla("b", [])]);
    ads = new AdsServer({ source });
    ({ address, server } = await startAds(ads));
  });

  afterEach(function () {
    for (const c of clients.splice(0)) c.close();
    server.forceShutdown();
  });

  it("treats an empty first CDS subscription as wildcard and versions each resource by its content", async function () {
    const c = connect();
    c.send({ node: testNode("envoy-1"), type_url: CDS });
    const r = await c.next();
    expect(got(r)).to.deep.equal({ a: encodeResource(CDS, cluster("a")).version, b: encodeResource(CDS, cluster("b")).version });
    expect(r.removed_resources).to.deep.equal([]);
    expect(r.system_version_info).to.match(/^[0-9a-f]{16}$/);
    // Only what changed goes out next: one resource, not the world.
    c.send({ type_url: CDS, response_nonce: r.nonce });
    source.set(CDS, [cluster("a", { connect_timeout: "3s" }), cluster("b")]);
    ads.push();
    const r2 = await c.next();
    expect(Object.keys(got(r2))).to.deep.equal(["a"]);
  });

  it("answers an empty wildcard subscription even with nothing to send (Envoy waits for it)", async function () {
    source.set(CDS, []);
    const c = connect();
    c.send({ node: testNode("envoy-1"), type_url: CDS });
    const r = await c.next();
    expect(r.type_url).to.equal(CDS);
    expect(r.resources).to.have.length(0);
  });

  it("honours initial_resource_versions on reconnect: sends only what differs and removes what is gone", async function () {
    const a = encodeResource(CDS, cluster("a"));
    const c = connect();
    c.send({ node: testNode("envoy-1"), type_url: CDS, initial_resource_versions: { a: a.version, b: "stale", gone: "v1" } });
    const r = await c.next();
    expect(Object.keys(got(r))).to.deep.equal(["b"]);
    expect(r.removed_resources).to.deep.equal(["gone"]);
    // A reconnect with everything current gets nothing at all.
    const c2 = connect();
    c2.send({ node: testNode("envoy-2"), type_url: EDS, resource_names_subscribe: ["a"], initial_resource_versions: { a: encodeResource(EDS, cla("a", ["10.0.0.1"])).version } });
    await c2.expectNothingPending();
  });

  it("subscribes and unsubscribes names, reports an unknown name once as removed, and sends it when it appears", async function () {
    const c = connect();
    c.send({ node: testNode("envoy-1"), type_url: EDS, resource_names_subscribe: ["a", "later"] });
    const r1 = await c.next();
    expect(Object.keys(got(r1))).to.deep.equal(["a"]);
    expect(r1.removed_resources).to.deep.equal(["later"]);
    c.send({ type_url: EDS, response_nonce: r1.nonce });
    c.send({ type_url: EDS, resource_names_subscribe: ["b"] });
    const r2 = await c.next();
    expect(Object.keys(got(r2))).to.deep.equal(["b"]); // the empty assignment of an endpoint-less cluster
    expect(r2.removed_resources).to.deep.equal([]);
    c.send({ type_url: EDS, response_nonce: r2.nonce, resource_names_unsubscribe: ["a"] });
    await c.expectNothingPending();
    // An unsubscribed resource's change is not sent; a subscribed one's that appears is.
    source.set(EDS, [cla("a", ["10.0.0.2"]), cla("b", []), cla("later", ["10.0.0.3"])]);
    ads.push();
    const r3 = await c.next();
    expect(Object.keys(got(r3))).to.deep.equal(["later"]);
    expect(ads.status()[0]!.types.find((t) => t.typeUrl === EDS)!.subscription.names).to.deep.equal(["b", "later"]);
  });

  it("sends removed_resources when a resource goes away, after the types that might reference it", async function () {
    const c = connect();
    c.send({ node: testNode("envoy-1"), type_url: CDS });
    const r1 = await c.next();
    c.send({ type_url: CDS, response_nonce: r1.nonce });
    c.send({ type_url: EDS, resource_names_subscribe: ["a", "b"] });
    const e1 = await c.next();
    c.send({ type_url: EDS, response_nonce: e1.nonce });
    source.set(CDS, [cluster("b")]);
    source.set(EDS, [cla("b", ["10.0.0.4"])]);
    ads.push();
    // EDS b changed (an update) goes first; the removals (CDS a, then EDS a) follow one ACK at a time.
    const e2 = await c.next();
    expect(e2.type_url).to.equal(EDS);
    expect(Object.keys(got(e2))).to.deep.equal(["b"]);
    expect(e2.removed_resources).to.deep.equal([]);
    await c.expectNothingPending();
    c.send({ type_url: EDS, response_nonce: e2.nonce });
    const r2 = await c.next();
    expect(r2.type_url).to.equal(CDS);
    expect(r2.removed_resources).to.deep.equal(["a"]);
    c.send({ type_url: CDS, response_nonce: r2.nonce });
    const e3 = await c.next();
    expect(e3.type_url).to.equal(EDS);
    expect(e3.removed_resources).to.deep.equal(["a"]);
    expect(e3.resources).to.have.length(0);
  });

  it("records a NACK, does not resend the rejected versions, and sends the fix", async function () {
    const c = connect();
    c.send({ node: testNode("envoy-1"), type_url: CDS });
    const r1 = await c.next();
    c.send({ type_url: CDS, response_nonce: r1.nonce, error_detail: { code: 3, message: "cluster a: bad" } });
    await c.expectNothingPending();
    source.set(EDS, [cla("a", ["10.0.0.9"]), cla("b", [])]);
    ads.push();
    await c.expectNothingPending();
    const cds = ads.status()[0]!.types.find((t) => t.typeUrl === CDS)!;
    expect(cds.lastNack?.message).to.equal("cluster a: bad");
    expect(cds.acked).to.equal(undefined);
    source.set(CDS, [cluster("a", { connect_timeout: "5s" }), cluster("b")]);
    ads.push();
    const r2 = await c.next();
    expect(Object.keys(got(r2))).to.deep.equal(["a"]);
    c.send({ type_url: CDS, response_nonce: r2.nonce });
    await c.expectNothingPending();
    expect(ads.status()[0]!.types.find((t) => t.typeUrl === CDS)!.acked?.version).to.equal(r2.system_version_info);
  });

  it("applies subscription changes carried by a stale-nonce request but does not take it as an ACK", async function () {
    const c = connect();
    c.send({ node: testNode("envoy-1"), type_url: EDS, resource_names_subscribe: ["a"] });
    const r1 = await c.next();
    c.send({ type_url: EDS, response_nonce: "not-a-nonce-we-sent", resource_names_subscribe: ["b"] });
    await c.expectNothingPending(); // b is queued: r1 is still un-ACKed
    const eds = ads.status()[0]!.types.find((t) => t.typeUrl === EDS)!;
    expect(eds.pending).to.equal(true);
    expect(eds.subscription.names).to.deep.equal(["a", "b"]);
    c.send({ type_url: EDS, response_nonce: r1.nonce });
    const r2 = await c.next();
    expect(Object.keys(got(r2))).to.deep.equal(["b"]);
  });

  it("keeps one un-ACKed response per type", async function () {
    const c = connect();
    c.send({ node: testNode("envoy-1"), type_url: EDS, resource_names_subscribe: ["a"] });
    const r1 = await c.next();
    source.set(EDS, [cla("a", ["10.0.0.2"]), cla("b", [])]);
    ads.push();
    source.set(EDS, [cla("a", ["10.0.0.3"]), cla("b", [])]);
    ads.push();
    await c.expectNothingPending();
    c.send({ type_url: EDS, response_nonce: r1.nonce });
    const r2 = await c.next();
    expect(got(r2)).to.deep.equal({ a: encodeResource(EDS, cla("a", ["10.0.0.3"])).version });
  });

  it("streams in sync share the source map: each holds only its differences, and stays exact through subscription changes", async function () {
    const names = Array.from({ length: 200 }, (_, i) => `c${i}`);
    source.set(CDS, names.map((n) => cluster(n)));
    source.set(EDS, names.map((n) => cla(n, ["10.0.0.1"])));
    const cs = [connect(), connect(), connect()];
    for (const [i, c] of cs.entries()) {
      c.send({ node: testNode(`envoy-${i}`), type_url: CDS });
      const r = await c.next();
      expect(r.resources).to.have.length(200);
      c.send({ type_url: CDS, response_nonce: r.nonce });
      c.send({ type_url: EDS, resource_names_subscribe: [...names, "missing"] });
      const e = await c.next();
      expect(e.resources).to.have.length(200);
      expect(e.removed_resources).to.deep.equal(["missing"]);
      c.send({ type_url: EDS, response_nonce: e.nonce });
    }
    await cs[2]!.expectNothingPending();
    // 400 names known per stream; held per stream: only the notice that "missing" does not exist.
    expect([...ads.connections].map((s) => s.ownEntries())).to.deep.equal([1, 1, 1]);

    // One change: one resource each (one shared encoding: all move between the same two maps), and again nothing
    // of their own once sent.
    source.set(EDS, names.map((n) => cla(n, [n === "c7" ? "10.0.0.2" : "10.0.0.1"])));
    ads.push();
    const nonces = new Set<string>();
    for (const c of cs) {
      const e = await c.next();
      expect(Object.keys(got(e))).to.deep.equal(["c7"]);
      nonces.add(e.nonce);
      c.send({ type_url: EDS, response_nonce: e.nonce });
    }
    expect(nonces.size).to.equal(1);
    await cs[2]!.expectNothingPending();
    expect([...ads.connections].map((s) => s.ownEntries())).to.deep.equal([1, 1, 1]);

    // One stream forgets c3 and asks again: it gets it again; the others are left alone.
    const [c0] = cs;
    c0!.send({ type_url: EDS, resource_names_unsubscribe: ["c3"] });
    await c0!.expectNothingPending();
    c0!.send({ type_url: EDS, resource_names_subscribe: ["c3"] });
    const again = await c0!.next();
    expect(Object.keys(got(again))).to.deep.equal(["c3"]);
    c0!.send({ type_url: EDS, response_nonce: again.nonce });
    // c9 changes while the first stream no longer wants it: only the others get it.
    c0!.send({ type_url: EDS, resource_names_unsubscribe: ["c9"] });
    await c0!.expectNothingPending();
    source.set(EDS, names.map((n) => cla(n, [n === "c7" ? "10.0.0.2" : n === "c9" ? "10.0.0.3" : "10.0.0.1"])));
    ads.push();
    for (const c of cs.slice(1)) {
      const e = await c.next();
      expect(Object.keys(got(e))).to.deep.equal(["c9"]);
    }
    await c0!.expectNothingPending();
    // And when it subscribes to c9 again it gets the current one.
    c0!.send({ type_url: EDS, resource_names_subscribe: ["c9"] });
    const c9 = await c0!.next();
    expect(got(c9)).to.deep.equal({ c9: encodeResource(EDS, cla("c9", ["10.0.0.3"])).version });
    // A removal reaches a stream that shares the map, as a removal.
    c0!.send({ type_url: EDS, response_nonce: c9.nonce });
    source.set(CDS, names.filter((n) => n !== "c5").map((n) => cluster(n)));
    ads.push();
    const r = await c0!.next();
    expect(r.type_url).to.equal(CDS);
    expect(r.removed_resources).to.deep.equal(["c5"]);
  });
});
