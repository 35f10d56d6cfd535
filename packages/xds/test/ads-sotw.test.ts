// State-of-the-world ADS rules, proven with our raw client against the real server on a real gRPC port.
import { expect } from "chai";
import * as grpc from "@grpc/grpc-js";
import { startAds } from "../../../test/helpers/ads-port.js";
import { AdsServer } from "../src/server/ads-server.js";
import { decodeToJson } from "../src/protojson.js";
import { TypeUrl } from "../src/protos.js";
import { RawAdsClient, testNode } from "../../../test/helpers/raw-ads-client.js";
import { cla, cluster, listener, routeConfig, StaticSource } from "../../../test/helpers/static-source.js";

const CDS = TypeUrl.Cluster;
const EDS = TypeUrl.ClusterLoadAssignment;
const LDS = TypeUrl.Listener;
const RDS = TypeUrl.RouteConfiguration;

function names(r: { resources: { type_url: string; value: Uint8Array }[] }): string[] {
  return r.resources.map((a) => {
    const j = decodeToJson(a.type_url.slice(a.type_url.lastIndexOf("/") + 1), a.value) as Record<string, string>;
    return j.name ?? j.cluster_name!;
  });
}

describe("ADS state of the world", function () {
  let source: StaticSource;
  let ads: AdsServer;
  let server: grpc.Server;
  let address: string;
  const clients: RawAdsClient<"sotw">[] = [];

  function connect(): RawAdsClient<"sotw"> {
    const c = new RawAdsClient(address, "sotw");
    clients.push(c);
    return c;
  }

  beforeEach(async function () {
    source = new StaticSource();
    source.set(CDS, [cluster("a"), cluster("b")]);
    source.set(EDS, [cla("a", ["10.0.0.1"]), cla("b", [])]);
    source.set(LDS, [listener("svc:80", "80")]);
    source.set(RDS, [routeConfig("80", "a")]);
    ads = new AdsServer({ source });
    ({ address, server } = await startAds(ads));
  });

  afterEach(function () {
    for (const c of clients.splice(0)) c.close();
    server.forceShutdown();
  });

  it("answers a wildcard CDS request with every cluster, and a later one without a removed cluster (absence = removal)", async function () {
    const c = connect();
    c.send({ node: testNode("envoy-1"), type_url: CDS, resource_names: [] });
    const r1 = await c.next();
    expect(r1.type_url).to.equal(CDS);
    expect(names(r1)).to.deep.equal(["a", "b"]);
    c.send({ type_url: CDS, resource_names: [], response_nonce: r1.nonce, version_info: r1.version_info });
    source.set(CDS, [cluster("a")]);
    ads.push();
    const r2 = await c.next();
    expect(names(r2)).to.deep.equal(["a"]);
    expect(r2.version_info).to.not.equal(r1.version_info);
  });

  it("answers named subscriptions with the subscribed names that exist, including an EDS assignment without endpoints", async function () {
    const c = connect();
    c.send({ node: testNode("grpc-1"), type_url: EDS, resource_names: ["b", "nope"] });
    const r = await c.next();
    expect(names(r)).to.deep.equal(["b"]);
    const json = decodeToJson("envoy.config.endpoint.v3.ClusterLoadAssignment", r.resources[0]!.value) as Record<string, unknown>;
    expect(json).to.deep.equal({ cluster_name: "b" });
    // An unknown LDS name still gets an answer (an empty, complete response: it does not exist).
    c.send({ type_url: LDS, resource_names: ["unknown:1"] });
    const l = await c.next();
    expect(l.type_url).to.equal(LDS);
    expect(l.resources).to.have.length(0);
  });

  it("treats a request with error_detail as a NACK, does not resend the same content, and sends the fix", async function () {
    const c = connect();
    c.send({ node: testNode("grpc-1"), type_url: CDS, resource_names: ["a"] });
    const r1 = await c.next();
    // grpc-js-xds reports a partial NACK with the NEW version: only error_detail makes it a NACK.
    c.send({ type_url: CDS, resource_names: ["a"], response_nonce: r1.nonce, version_info: r1.version_info, error_detail: { code: 14, message: "bad cluster a" } });
    await c.expectNothingPending();
    const [st] = ads.status();
    const cds = st!.types.find((t) => t.typeUrl === CDS)!;
    expect(cds.lastNack?.message).to.equal("bad cluster a");
    expect(cds.lastNack?.nonce).to.equal(r1.nonce);
    expect(cds.acked).to.equal(undefined);
    // A push that does not change CDS (an EDS change) must not re-offer the rejected content: no NACK loop.
    source.set(EDS, [cla("a", ["10.0.0.2"]), cla("b", [])]);
    ads.push();
    await c.expectNothingPending();
    // Repeating the NACKed nonce with the same subscription (grpc-js does on every later request) is not a second NACK.
    c.send({ type_url: CDS, resource_names: ["a"], response_nonce: r1.nonce, version_info: r1.version_info, error_detail: { code: 14, message: "bad cluster a" } });
    await c.expectNothingPending();
    // The operator fixes it: new content, new response, and its ACK is recorded.
    source.set(CDS, [cluster("a", { connect_timeout: "2s" }), cluster("b")]);
    ads.push();
    const r2 = await c.next();
    expect(r2.type_url).to.equal(CDS);
    expect(r2.version_info).to.not.equal(r1.version_info);
    c.send({ type_url: CDS, resource_names: ["a"], response_nonce: r2.nonce, version_info: r2.version_info });
    await c.expectNothingPending();
    const after = ads.status()[0]!.types.find((t) => t.typeUrl === CDS)!;
    expect(after.acked?.version).to.equal(r2.version_info);
    expect(after.lastNack?.nonce).to.equal(r1.nonce);
  });

  it("keeps at most one un-ACKed response per type and sends the newest state after the ACK", async function () {
    const c = connect();
    c.send({ node: testNode("grpc-1"), type_url: EDS, resource_names: ["a"] });
    const r1 = await c.next();
    source.set(EDS, [cla("a", ["10.0.0.2"])]);
    ads.push();
    source.set(EDS, [cla("a", ["10.0.0.3"])]);
    ads.push();
    await c.expectNothingPending();
    c.send({ type_url: EDS, resource_names: ["a"], response_nonce: r1.nonce, version_info: r1.version_info });
    const r2 = await c.next();
    const json = decodeToJson("envoy.config.endpoint.v3.ClusterLoadAssignment", r2.resources[0]!.value) as {
      endpoints: { lb_endpoints: { endpoint: { address: { socket_address: { address: string } } } }[] }[];
    };
    expect(json.endpoints[0]!.lb_endpoints[0]!.endpoint.address.socket_address.address).to.equal("10.0.0.3");
    c.send({ type_url: EDS, resource_names: ["a"], response_nonce: r2.nonce, version_info: r2.version_info });
    await c.expectNothingPending();
  });

  it("sends only changed or new resources in EDS and RDS responses (incremental), and the complete set in CDS", async function () {
    const c = connect();
    source.set(CDS, [cluster("a"), cluster("b")]);
    source.set(EDS, [cla("a", ["10.0.0.1"]), cla("b", ["10.0.0.2"])]);
    c.send({ node: testNode("envoy-1"), type_url: CDS, resource_names: [] });
    const cds1 = await c.next();
    c.send({ type_url: CDS, resource_names: [], response_nonce: cds1.nonce, version_info: cds1.version_info });
    c.send({ type_url: EDS, resource_names: ["a", "b"] });
    const r1 = await c.next();
    expect(names(r1)).to.deep.equal(["a", "b"]);
    c.send({ type_url: EDS, resource_names: ["a", "b"], response_nonce: r1.nonce, version_info: r1.version_info });
    await c.expectNothingPending();

    // One endpoint change: the response carries a alone, under a new version for the whole set.
    source.set(EDS, [cla("a", ["10.0.0.3"]), cla("b", ["10.0.0.2"])]);
    ads.push();
    const r2 = await c.next();
    expect(names(r2)).to.deep.equal(["a"]);
    expect(r2.version_info).to.not.equal(r1.version_info);
    c.send({ type_url: EDS, resource_names: ["a", "b"], response_nonce: r2.nonce, version_info: r2.version_info });
    await c.expectNothingPending();

    // Changing a back gives back the first version: versions name content, not history.
    source.set(EDS, [cla("a", ["10.0.0.1"]), cla("b", ["10.0.0.2"])]);
    ads.push();
    const r3 = await c.next();
    expect(names(r3)).to.deep.equal(["a"]);
    expect(r3.version_info).to.equal(r1.version_info);
    c.send({ type_url: EDS, resource_names: ["a", "b"], response_nonce: r3.nonce, version_info: r3.version_info });

    // b vanishes from EDS: a SotW EDS response cannot remove it, so nothing is sent; CDS (complete) still lists both.
    source.set(EDS, [cla("a", ["10.0.0.1"])]);
    source.set(CDS, [cluster("a"), cluster("b"), cluster("c")]);
    ads.push();
    const cds2 = await c.next();
    expect(cds2.type_url).to.equal(CDS);
    expect(names(cds2)).to.deep.equal(["a", "b", "c"]);
    c.send({ type_url: CDS, resource_names: [], response_nonce: cds2.nonce, version_info: cds2.version_info });
    await c.expectNothingPending();
  });

  it("with a send budget smaller than one response, still answers every stream and delivers a push to all", async function () {
    const tight = new AdsServer({ source, sendBudgetBytes: 1 });
    const started = await startAds(tight);
    const own: RawAdsClient<"sotw">[] = [];
    try {
      for (let i = 0; i < 5; i++) own.push(new RawAdsClient(started.address, "sotw"));
      own.forEach((c, i) => c.send({ node: testNode(`envoy-${i}`), type_url: CDS, resource_names: [] }));
      const first = await Promise.all(own.map((c) => c.next()));
      for (const r of first) expect(names(r)).to.deep.equal(["a", "b"]);
      own.forEach((c, i) => c.send({ type_url: CDS, resource_names: [], response_nonce: first[i]!.nonce, version_info: first[i]!.version_info }));
      source.set(CDS, [cluster("a"), cluster("b"), cluster("c")]);
      tight.push();
      const second = await Promise.all(own.map((c) => c.next()));
      for (const r of second) expect(names(r)).to.deep.equal(["a", "b", "c"]);
    } finally {
      for (const c of own) c.close();
      started.server.forceShutdown();
    }
  });

  it("ignores a request whose nonce is not the latest sent for its type", async function () {
    const c = connect();
    c.send({ node: testNode("grpc-1"), type_url: EDS, resource_names: ["a"] });
    const r1 = await c.next();
    c.send({ type_url: EDS, resource_names: ["a"], response_nonce: r1.nonce, version_info: r1.version_info });
    source.set(EDS, [cla("a", ["10.0.0.9"]), cla("b", [])]);
    ads.push();
    const r2 = await c.next();
    // A late request still carrying r1's nonce asks for b: stale, so neither a NACK nor a subscription change.
    c.send({ type_url: EDS, resource_names: ["a", "b"], response_nonce: r1.nonce, error_detail: { code: 3, message: "old" } });
    await c.expectNothingPending();
    const eds = ads.status()[0]!.types.find((t) => t.typeUrl === EDS)!;
    expect(eds.lastNack).to.equal(undefined);
    expect(eds.subscription.names).to.deep.equal(["a"]);
    expect(eds.pending).to.equal(true);
    // The current nonce with the new subscription is honoured.
    c.send({ type_url: EDS, resource_names: ["a", "b"], response_nonce: r2.nonce, version_info: r2.version_info });
    const r3 = await c.next();
    // EDS responses are incremental: only the newly subscribed b (a is unchanged and kept by the client).
    expect(names(r3)).to.deep.equal(["b"]);
  });

  it("does not answer an unsubscribe, and answers a re-subscribe", async function () {
    const c = connect();
    c.send({ node: testNode("grpc-1"), type_url: EDS, resource_names: ["a", "b"] });
    const r1 = await c.next();
    c.send({ type_url: EDS, resource_names: ["a", "b"], response_nonce: r1.nonce, version_info: r1.version_info });
    c.send({ type_url: EDS, resource_names: ["a"], response_nonce: r1.nonce, version_info: r1.version_info });
    await c.expectNothingPending();
    c.send({ type_url: EDS, resource_names: ["a", "b"], response_nonce: r1.nonce, version_info: r1.version_info });
    const r2 = await c.next();
    // b is new again (unsubscribing made it forgotten); a is unchanged, so the incremental response leaves it out.
    expect(names(r2)).to.deep.equal(["b"]);
  });

  it("orders a push make-before-break: CDS, EDS, LDS, RDS, and the cluster removal only after the listener moved", async function () {
    const c = connect();
    c.send({ node: testNode("envoy-1"), type_url: CDS, resource_names: [] });
    const cds1 = await c.next();
    c.send({ type_url: CDS, resource_names: [], response_nonce: cds1.nonce });
    c.send({ type_url: EDS, resource_names: ["a", "b"] });
    const eds1 = await c.next();
    c.send({ type_url: EDS, resource_names: ["a", "b"], response_nonce: eds1.nonce });
    c.send({ type_url: LDS, resource_names: [] });
    const lds1 = await c.next();
    c.send({ type_url: LDS, resource_names: [], response_nonce: lds1.nonce });
    c.send({ type_url: RDS, resource_names: ["80", "81"] });
    const rds1 = await c.next();
    c.send({ type_url: RDS, resource_names: ["80", "81"], response_nonce: rds1.nonce });
    await c.expectNothingPending();

    // One change: cluster a replaced by c, listener 80 replaced by 81 (route 81 -> c).
    source.set(CDS, [cluster("b"), cluster("c")]);
    source.set(EDS, [cla("b", ["10.0.0.7"]), cla("c", ["10.0.0.5"])]);
    source.set(LDS, [listener("svc:81", "81")]);
    source.set(RDS, [routeConfig("80", "a"), routeConfig("81", "c")]);
    ads.push();
    const cds2 = await c.next();
    expect(cds2.type_url).to.equal(CDS);
    expect(names(cds2)).to.deep.equal(["a", "b", "c"]); // c added, a kept until nothing refers to it
    const eds2 = await c.next(); // EDS: b changed; c is not subscribed yet; a vanished (SotW EDS cannot say so)
    expect(eds2.type_url).to.equal(EDS);
    expect(names(eds2)).to.deep.equal(["b"]);
    const lds2 = await c.next();
    expect(lds2.type_url).to.equal(LDS);
    expect(names(lds2)).to.deep.equal(["svc:80", "svc:81"]); // the new listener in, the old one still there
    const rds2 = await c.next();
    expect(rds2.type_url).to.equal(RDS);
    expect(names(rds2)).to.deep.equal(["81"]); // incremental: route config 80 did not change
    await c.expectNothingPending();
    // ACK everything; the removals follow in reverse dependency order, one at a time: LDS, then CDS.
    c.send({ type_url: CDS, resource_names: [], response_nonce: cds2.nonce });
    c.send({ type_url: EDS, resource_names: ["a", "b"], response_nonce: eds2.nonce });
    c.send({ type_url: LDS, resource_names: [], response_nonce: lds2.nonce });
    c.send({ type_url: RDS, resource_names: ["80", "81"], response_nonce: rds2.nonce });
    const lds3 = await c.next();
    expect(lds3.type_url).to.equal(LDS);
    expect(names(lds3)).to.deep.equal(["svc:81"]);
    await c.expectNothingPending();
    c.send({ type_url: LDS, resource_names: [], response_nonce: lds3.nonce });
    const cds3 = await c.next();
    expect(cds3.type_url).to.equal(CDS);
    expect(names(cds3)).to.deep.equal(["b", "c"]);
  });

  it("keeps the proxy view of the stream's first request", async function () {
    const c = connect();
    c.send({ node: testNode("grpc-first", { NAMESPACE: "team-a" }), type_url: CDS, resource_names: ["a"] });
    await c.next();
    c.send({ node: testNode("grpc-second", { NAMESPACE: "team-b" }), type_url: EDS, resource_names: ["a"] });
    await c.next();
    const [st] = ads.status();
    expect(st!.proxyId).to.equal("grpc-first");
    expect(st!.namespace).to.equal("team-a");
  });

  it("pushes only to proxies whose view changed", async function () {
    source.set(EDS, [cla("a", ["10.0.1.1"])], "team-a");
    source.set(EDS, [cla("a", ["10.0.2.1"])], "team-b");
    const ca = connect();
    const cb = connect();
    ca.send({ node: testNode("grpc-a", { NAMESPACE: "team-a" }), type_url: EDS, resource_names: ["a"] });
    cb.send({ node: testNode("grpc-b", { NAMESPACE: "team-b" }), type_url: EDS, resource_names: ["a"] });
    const ra = await ca.next();
    const rb = await cb.next();
    ca.send({ type_url: EDS, resource_names: ["a"], response_nonce: ra.nonce });
    cb.send({ type_url: EDS, resource_names: ["a"], response_nonce: rb.nonce });
    source.set(EDS, [cla("a", ["10.0.1.2"])], "team-a");
    ads.push();
    const ra2 = await ca.next();
    expect(ra2.type_url).to.equal(EDS);
    await cb.expectNothingPending();
  });

  it("refuses a stream the authorization hook rejects, before any response", async function () {
    ads = new AdsServer({ source, authorizeStream: (_call, view) => (view.namespace === "forbidden" ? "namespace forbidden is not yours" : undefined) });
    server.forceShutdown();
    ({ address, server } = await startAds(ads));
    const c = connect();
    c.send({ node: testNode("grpc-x", { NAMESPACE: "forbidden" }), type_url: CDS, resource_names: ["a"] });
    const st = await c.ended();
    expect(st.code).to.equal(grpc.status.PERMISSION_DENIED);
    expect(st.details).to.equal("namespace forbidden is not yours");
    expect(c.buffered).to.have.length(0);
  });

  it("takes Istio HealthInformation requests as health reports, never answers them, and shows the latest", async function () {
    const reports: { id: string; healthy: boolean; message?: string }[] = [];
    ads = new AdsServer({ source, observer: { health: (st, r) => reports.push({ id: st.view.id, healthy: r.healthy, ...(r.message ? { message: r.message } : {}) }) } });
    server.forceShutdown();
    ({ address, server } = await startAds(ads));
    const c = connect();
    const HEALTH = "type.googleapis.com/istio.v1.HealthInformation";
    c.send({ node: testNode("sidecar~10.0.0.7~vm-1.shop~shop.svc.cluster.local", { NAMESPACE: "shop" }), type_url: HEALTH });
    c.send({ type_url: HEALTH, error_detail: { code: 14, message: "readiness probe failed" } });
    await c.expectNothingPending();
    expect(reports).to.deep.equal([
      { id: "sidecar~10.0.0.7~vm-1.shop~shop.svc.cluster.local", healthy: true },
      { id: "sidecar~10.0.0.7~vm-1.shop~shop.svc.cluster.local", healthy: false, message: "readiness probe failed" },
    ]);
    const st = ads.status()[0]!;
    expect(st.health).to.include({ healthy: false, message: "readiness probe failed" });
    expect(st.types.map((t) => t.typeUrl)).to.not.include(HEALTH);
  });

  it("keeps the stream when the source fails for one type, and serves that type on the next push", async function () {
    let broken = true;
    const failures: string[] = [];
    const flaky = { resources: (view: Parameters<StaticSource["resources"]>[0], typeUrl: string) => {
      if (broken && typeUrl === EDS) throw new Error("generator bug");
      return source.resources(view, typeUrl);
    } };
    ads = new AdsServer({ source: flaky, observer: { sourceFailed: (_s, typeUrl, err) => failures.push(`${typeUrl}: ${(err as Error).message}`) } });
    server.forceShutdown();
    ({ address, server } = await startAds(ads));
    const c = connect();
    c.send({ node: testNode("grpc-1"), type_url: EDS, resource_names: ["a"] });
    c.send({ type_url: CDS, resource_names: ["a"] });
    const cds = await c.next();
    expect(cds.type_url).to.equal(CDS); // CDS served; EDS not (and not answered empty: that would be a lie)
    expect(failures).to.deep.equal([`${EDS}: generator bug`, `${EDS}: generator bug`]);
    broken = false;
    ads.push();
    const eds = await c.next();
    expect(eds.type_url).to.equal(EDS);
    expect(names(eds)).to.deep.equal(["a"]);
  });

  it("ends a stream the client half-closes with OK and forgets it", async function () {
    const c = connect();
    c.send({ node: testNode("grpc-1"), type_url: CDS, resource_names: ["a"] });
    await c.next();
    expect(ads.status()).to.have.length(1);
    c.halfClose();
    expect((await c.ended()).code).to.equal(grpc.status.OK);
    expect(ads.status()).to.have.length(0);
  });

  it("ends a stream whose first request has no node id with INVALID_ARGUMENT", async function () {
    const c = connect();
    c.send({ type_url: CDS, resource_names: ["a"] });
    const st = await c.ended();
    expect(st.code).to.equal(grpc.status.INVALID_ARGUMENT);
  });

  it("streams of one view are sent one shared encoding of a whole map, and are still acknowledged one by one", async function () {
    const [c1, c2] = [connect(), connect()];
    const first: { r: Awaited<ReturnType<typeof c1.next>>; e: Awaited<ReturnType<typeof c1.next>> }[] = [];
    for (const [i, c] of [c1!, c2!].entries()) {
      c.send({ node: testNode(`envoy-${i}`), type_url: CDS, resource_names: [] });
      const r = await c.next();
      c.send({ type_url: CDS, resource_names: [], response_nonce: r.nonce, version_info: r.version_info });
      c.send({ type_url: EDS, resource_names: ["a", "b"] });
      const e = await c.next();
      c.send({ type_url: EDS, resource_names: ["a", "b"], response_nonce: e.nonce, version_info: e.version_info });
      first.push({ r, e });
    }
    // The same response (nonce included) for both: encoded once.
    expect(first[1]!.r.nonce).to.equal(first[0]!.r.nonce);
    expect(first[1]!.e.nonce).to.equal(first[0]!.e.nonce);
    expect(names(first[1]!.e)).to.deep.equal(["a", "b"]);
    await c2!.expectNothingPending();
    expect(ads.status().every((st) => st.types.filter((t) => t.typeUrl === CDS || t.typeUrl === EDS).every((t) => !t.pending && t.acked?.nonce === t.sent?.nonce))).to.equal(true);
    // A change reaches each with a nonce it has not seen (one shared encoding again: both move between the same
    // two maps), and each ACK settles its own stream.
    source.set(EDS, [cla("a", ["10.0.0.7"]), cla("b", [])]);
    ads.push();
    const changeNonces: string[] = [];
    for (const [i, c] of [c1!, c2!].entries()) {
      const e = await c.next();
      expect(names(e)).to.deep.equal(["a"]);
      expect(e.nonce).to.not.equal(first[i]!.e.nonce);
      changeNonces.push(e.nonce);
      c.send({ type_url: EDS, resource_names: ["a", "b"], response_nonce: e.nonce, version_info: e.version_info });
    }
    await c2!.expectNothingPending();
    expect(changeNonces[1]).to.equal(changeNonces[0]);
    expect(ads.status().every((st) => st.types.filter((t) => t.typeUrl === CDS || t.typeUrl === EDS).every((t) => !t.pending && t.acked?.nonce === t.sent?.nonce))).to.equal(true);
  });
});
