// A gateway proxy end to end over ADS: a raw client speaking as Envoy in router mode (node id router~..., wildcard
// LDS/CDS, then RDS by name) against the real control plane watching a config directory with the ingress and
// egress gateway fixtures. Proves the node id selects the gateway kind, the Gateway selector picks the servers,
// and an edit of the Gateway file is pushed as a new listener set.
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { expect } from "chai";
import { ResourceCache } from "../src/cache.js";
import { decodeToJson } from "../src/protojson.js";
import { typeNameOfUrl, TypeUrl } from "../src/protos.js";
import { eventually, TestControlPlane } from "../../../test/helpers/e2e.js";
import { RawAdsClient, testNode } from "../../../test/helpers/raw-ads-client.js";
import { fixtureFiles } from "./fixtures/gateway/golden.js";

type Json = Record<string, any>;
const { Cluster: CDS, Listener: LDS, RouteConfiguration: RDS } = TypeUrl;

describe("gateway proxy over ADS (real control plane, SotW)", function () {
  this.timeout(30_000);
  let tcp: TestControlPlane;
  let client: RawAdsClient<"sotw"> | undefined;
  const files = fixtureFiles("services.yaml", "ingress-simple.yaml");

  before(async () => {
    tcp = await TestControlPlane.start(() => new ResourceCache(), files);
  });
  after(async () => {
    client?.close();
    await tcp?.stop();
  });

  it("serves the Gateway's listeners and routes to a router node, and pushes a Gateway edit", async () => {
    client = new RawAdsClient(tcp.xdsAddress, "sotw");
    // LABELS as a Struct, the way the agent's bootstrap sends them.
    const node = testNode("router~10.0.0.9~ingress-1.bookinfo~bookinfo.svc.cluster.local", { NAMESPACE: "bookinfo", LABELS: { istio: "ingressgateway" } });
    const acked = new Map<string, { version: string; nonce: string; names: string[] }>();
    const ask = async (typeUrl: string, names: string[], first = false): Promise<Json[]> => {
      client!.send({ ...(first ? { node } : {}), type_url: typeUrl, resource_names: names });
      const r = await client!.next();
      expect(r.type_url).to.equal(typeUrl);
      client!.send({ type_url: typeUrl, resource_names: names, response_nonce: r.nonce, version_info: r.version_info });
      acked.set(typeUrl, { version: r.version_info, nonce: r.nonce, names });
      return r.resources.map((a) => decodeToJson(typeNameOfUrl(typeUrl), a.value) as Json);
    };
    const clusters = await ask(CDS, [], true);
    expect(clusters.map((c) => c.name)).to.include("outbound|9080||reviews.bookinfo.svc.cluster.local");
    // Gateways have no capture: neither PassthroughCluster nor virtual listeners.
    expect(clusters.map((c) => c.name)).to.not.include("PassthroughCluster");
    const listeners = await ask(LDS, []);
    expect(listeners.map((l) => l.name).sort()).to.deep.equal(["0.0.0.0_443", "0.0.0.0_80"]);
    const routes = await ask(RDS, ["http.80", "https.443.https.bookinfo-gateway.bookinfo"]);
    expect(routes.map((r) => r.name).sort()).to.deep.equal(["http.80", "https.443.https.bookinfo-gateway.bookinfo"]);

    // Move the HTTPS server to 8443: the next LDS response replaces 0.0.0.0_443 by 0.0.0.0_8443.
    await writeFile(path.join(tcp.dir, "ingress-simple.yaml"), files["ingress-simple.yaml"]!.replace("number: 443, name: https", "number: 8443, name: https"));
    const { value } = await eventually("an LDS push with 0.0.0.0_8443", 10_000, async () => {
      const r = await client!.next(10_000);
      const last = acked.get(r.type_url);
      client!.send({ type_url: r.type_url, resource_names: last?.names ?? [], response_nonce: r.nonce, version_info: r.version_info });
      if (r.type_url !== LDS) return undefined;
      const names = r.resources.map((a) => (decodeToJson(typeNameOfUrl(LDS), a.value) as Json).name as string).sort();
      return names.includes("0.0.0.0_8443") ? names : undefined;
    });
    expect(value).to.deep.equal(["0.0.0.0_80", "0.0.0.0_8443"]);
  });
});
