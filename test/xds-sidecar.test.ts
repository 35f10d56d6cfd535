// The Envoy sidecar paths (Envoy itself does not run here): a raw client speaking exactly as Envoy does —
// wildcard LDS/CDS, then EDS/RDS by name; delta with `DELTA_GRPC` — against the real control plane serving
// the example config. Every resource must decode strictly with the Envoy protos, both protocols must agree
// on the content, and a reconnect with initial_resource_versions must resend nothing.
import { expect } from "chai";
import path from "node:path";
import { rm } from "node:fs/promises";
import { ResourceCache } from "@vmpilot/xds/cache";
import { decodeToJson } from "@vmpilot/xds/protojson";
import { typeNameOfUrl, TypeUrl } from "@vmpilot/xds/protos";
import { RawAdsClient, testNode } from "./helpers/raw-ads-client.js";
import { eventually, TestControlPlane } from "./helpers/e2e.js";

const EXAMPLES = path.join(import.meta.dirname, "..", "config", "examples");
const NODE = testNode("sidecar~10.10.1.5~catalog-vm-1.shop~shop.svc.cluster.local", { NAMESPACE: "shop", SERVICE_ACCOUNT: "catalog", LABELS: { app: "catalog", version: "v1" } });
const { Cluster: CDS, ClusterLoadAssignment: EDS, Listener: LDS, RouteConfiguration: RDS } = TypeUrl;

type Json = Record<string, unknown>;

/** Every value of `key` anywhere in a decoded resource. */
function collect(v: unknown, key: string, out: Set<string> = new Set()): Set<string> {
  if (Array.isArray(v)) for (const e of v) collect(e, key, out);
  else if (v && typeof v === "object") {
    for (const [k, e] of Object.entries(v)) {
      if (k === key && typeof e === "string") out.add(e);
      else collect(e, key, out);
    }
  }
  return out;
}

function decodeAll(typeUrl: string, bodies: Uint8Array[]): Json[] {
  return bodies.map((b) => decodeToJson(typeNameOfUrl(typeUrl), b) as Json);
}

describe("Envoy sidecar protocol paths on the example config", function () {
  this.timeout(30_000);
  let tcp: TestControlPlane;
  const clients: RawAdsClient<"sotw" | "delta">[] = [];

  before(async function () {
    tcp = await TestControlPlane.start(() => new ResourceCache(), {}, "127.0.0.1:0", {}, EXAMPLES);
  });
  after(async function () {
    for (const c of clients) c.close();
    await tcp?.stop();
  });

  function connect<P extends "sotw" | "delta">(p: P): RawAdsClient<P> {
    const c = new RawAdsClient(tcp.xdsAddress, p);
    clients.push(c);
    return c;
  }

  let sotwContent: Map<string, Map<string, string>>;

  it("SotW: wildcard CDS and LDS, then every EDS and RDS name they reference, all decoding strictly", async function () {
    const c = connect("sotw");
    const content = new Map<string, Map<string, string>>();
    const ask = async (typeUrl: string, names: string[]): Promise<Json[]> => {
      c.send({ ...(content.size === 0 ? { node: NODE } : {}), type_url: typeUrl, resource_names: names });
      const r = await c.next();
      expect(r.type_url).to.equal(typeUrl);
      c.send({ type_url: typeUrl, resource_names: names, response_nonce: r.nonce, version_info: r.version_info });
      const decoded = decodeAll(typeUrl, r.resources.map((a) => a.value));
      content.set(typeUrl, new Map(decoded.map((d, i) => [String(d.name ?? d.cluster_name), Buffer.from(r.resources[i]!.value).toString("base64")])));
      return decoded;
    };
    const clusters = await ask(CDS, []);
    expect(clusters.map((x) => x.name)).to.include.members(["PassthroughCluster", "BlackHoleCluster", "outbound|8080||catalog.shop.mesh.internal", "outbound|8080|v1|catalog.shop.mesh.internal"]);
    const edsNames = clusters.filter((x) => x.type === "EDS" || x.eds_cluster_config).map((x) => String(x.name));
    expect(edsNames.length).to.be.greaterThan(0);
    const assignments = await ask(EDS, edsNames);
    expect(assignments.map((x) => x.cluster_name).sort()).to.deep.equal([...edsNames].sort()); // every EDS cluster answered, endpoint-less ones too
    const listeners = await ask(LDS, []);
    expect(listeners.map((x) => x.name)).to.include.members(["virtualOutbound", "virtualInbound"]);
    const routeNames = [...collect(listeners, "route_config_name")];
    expect(routeNames.length).to.be.greaterThan(0);
    const routes = await ask(RDS, routeNames);
    expect(routes.map((x) => x.name).sort()).to.deep.equal([...routeNames].sort());
    await c.expectNothingPending();
    sotwContent = content;
  });

  it("delta: the same content, per-resource versions, and a reconnect with initial_resource_versions resends nothing", async function () {
    const c = connect("delta");
    const versions = new Map<string, Record<string, string>>();
    const ask = async (typeUrl: string, subscribe: string[], client = c, first = versions.size === 0) => {
      client.send({ ...(first ? { node: NODE } : {}), type_url: typeUrl, resource_names_subscribe: subscribe });
      const r = await client.next();
      expect(r.type_url).to.equal(typeUrl);
      client.send({ type_url: typeUrl, response_nonce: r.nonce });
      versions.set(typeUrl, Object.fromEntries(r.resources.map((x) => [x.name, x.version])));
      for (const x of r.resources) {
        // Same bytes as the SotW stream got: one encoding, shared.
        expect(Buffer.from(x.resource!.value).toString("base64"), `${x.name}`).to.equal(sotwContent.get(typeUrl)!.get(x.name));
      }
      return r;
    };
    const cds = await ask(CDS, []);
    expect(cds.resources.map((x) => x.name).sort()).to.deep.equal([...sotwContent.get(CDS)!.keys()].sort());
    await ask(EDS, [...sotwContent.get(EDS)!.keys()]);
    await ask(LDS, []);
    await ask(RDS, [...sotwContent.get(RDS)!.keys()]);
    await c.expectNothingPending();

    const again = connect("delta");
    let first = true;
    for (const typeUrl of [CDS, EDS, LDS, RDS]) {
      const wildcard = typeUrl === CDS || typeUrl === LDS;
      again.send({ ...(first ? { node: NODE } : {}), type_url: typeUrl, resource_names_subscribe: wildcard ? [] : Object.keys(versions.get(typeUrl)!), initial_resource_versions: versions.get(typeUrl)! });
      first = false;
    }
    await again.expectNothingPending();
  });

  it("delta: a removed WorkloadEntry file empties the assignments of the service it fed, and only those", async function () {
    const c = connect("delta");
    c.send({ node: NODE, type_url: EDS, resource_names_subscribe: [...sotwContent.get(EDS)!.keys()] });
    const r1 = await c.next();
    c.send({ type_url: EDS, response_nonce: r1.nonce });
    await rm(path.join(tcp.dir, "shop", "catalog-workloads.yaml"));
    const { value: r2 } = await eventually("EDS update", 10_000, async () => c.buffered.find((r) => r.type_url === EDS) && c.next());
    const changed = r2.resources.map((x) => x.name);
    expect(changed.length).to.be.greaterThan(0);
    expect(changed.every((n) => n.endsWith("catalog.shop.mesh.internal"))).to.equal(true);
    for (const a of decodeAll(EDS, r2.resources.map((x) => x.resource!.value))) expect(collect(a, "address").size).to.equal(0);
  });

  it("pushes a namespace-private change only to the proxies that can see it", async function () {
    const shop = connect("sotw");
    const other = connect("sotw");
    const otherNode = testNode("sidecar~10.10.9.9~tool-vm.ops~ops.svc.cluster.local", { NAMESPACE: "ops" });
    for (const [c, node] of [[shop, NODE], [other, otherNode]] as const) {
      c.send({ node, type_url: CDS, resource_names: [] });
      const r = await c.next();
      c.send({ type_url: CDS, resource_names: [], response_nonce: r.nonce, version_info: r.version_info });
    }
    await tcp.write(
      "shop/private.yaml",
      "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: private, namespace: shop}\nspec:\n  hosts: [private.shop.mesh.internal]\n  exportTo: [\".\"]\n  location: MESH_INTERNAL\n  resolution: DNS\n  ports: [{number: 80, name: http, protocol: HTTP}]\n",
    );
    const pushed = await shop.next(10_000);
    expect(pushed.type_url).to.equal(CDS);
    expect(decodeAll(CDS, pushed.resources.map((a) => a.value)).map((x) => x.name)).to.include("outbound|80||private.shop.mesh.internal");
    // The same push loop visited the ops proxy; its view did not change, so it got nothing.
    await other.expectNothingPending();
  });
});
