// Server listeners for proxyless gRPC servers (generators/grpc-server-listeners.ts): which names a node gets, the
// shape gRPC requires, the TLS decision, and that every one encodes with the Envoy protos and passes
// @grpc/grpc-js-xds's own listener validation.
import { expect } from "chai";
import { ResourceCache } from "../src/cache.js";
import { generate } from "../src/generators/index.js";
import { grpcServerListenerName } from "../src/generators/grpc-server-listeners.js";
import { canonicalIp } from "../src/ip.js";
import { decodeToJson, encodeJson } from "../src/protojson.js";
import { TypeUrl } from "../src/protos.js";
import { formatNodeId, nodeMetadataOf, proxyViewFromNode, type ProxyView } from "../src/proxy-view.js";
import { deprecatedFieldsIn } from "./fixtures/deprecated.js";
import { grpcValidators, validateWithGrpcJsXds } from "./fixtures/grpc-validate.js";
import { grpcView, sidecarView, snapshotOf } from "./fixtures/snapshots.js";

type J = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const PREFIX = "grpc/server?xds.resource.listening_address=";

const MESH = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: echo, namespace: shop}
spec:
  hosts: [echo.shop.mesh]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 7070, name: grpc, protocol: GRPC, targetPort: 17070}]
  workloadSelector: {labels: {app: echo}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: echo-1, namespace: shop}
spec: {address: 10.0.0.5, labels: {app: echo}, serviceAccount: echo}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: echo-2, namespace: shop}
spec: {address: 10.0.0.6, labels: {app: echo}, serviceAccount: echo}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: echo-v6, namespace: shop}
spec: {address: "2001:db8::5", labels: {app: echo}, serviceAccount: echo}
`;

const MUTUAL = (name: string, ns: string, host: string, extra = "") => `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ${name}, namespace: ${ns}}
spec:
  host: "${host}"
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL}
${extra}`;

function echoServer(overrides: Partial<ProxyView> = {}): ProxyView {
  return grpcView("shop", { id: "grpc~10.0.0.5~echo-1.shop~shop.svc.cluster.local", serviceAccount: "echo", ips: ["10.0.0.5"], workloadName: "echo-1", labels: { app: "echo" }, ...overrides });
}

/** echo-v6 as the agent announces it (through proxyViewFromNode, as the server reads every node), its IP spelled `ip`. */
function v6Node(ip: string): ProxyView {
  const id = formatNodeId("grpc", ip, "echo-v6-vm", "shop");
  return proxyViewFromNode({ id, metadata: nodeMetadataOf({ kind: "grpc", namespace: "shop", serviceAccount: "echo", labels: { app: "echo" }, ips: [ip], interceptionMode: "NONE" }) });
}

function serverListeners(files: Record<string, string>, view: ProxyView): Map<string, J> {
  const out = new Map<string, J>();
  for (const [name, l] of generate(snapshotOf(files), view).listeners) if (name.startsWith(PREFIX)) out.set(name, l as J);
  return out;
}

function mtlsOf(l: J): boolean {
  return l.filter_chains[0].transport_socket !== undefined;
}

describe("gRPC server listeners (gRFC A36)", () => {
  it("names the node's own instance at its IP and at the wildcard binds, on the port it listens on (targetPort)", () => {
    const ls = serverListeners({ "mesh.yaml": MESH }, echoServer());
    expect([...ls.keys()]).to.deep.equal([`${PREFIX}0.0.0.0:17070`, `${PREFIX}10.0.0.5:17070`, `${PREFIX}[::]:17070`]);
    expect(ls.get(`${PREFIX}10.0.0.5:17070`)!.address).to.deep.equal({ socket_address: { address: "10.0.0.5", port_value: 17070 } });
    // grpc-js compares the listener's address with the host of its bind string, so `[::]` is served as `::`.
    expect(ls.get(`${PREFIX}[::]:17070`)!.address).to.deep.equal({ socket_address: { address: "::", port_value: 17070 } });
  });

  it("has the shape gRPC servers require: one match-less chain, inline route config with non_forwarding_action, router last", () => {
    const l = serverListeners({ "mesh.yaml": MESH }, echoServer()).get(`${PREFIX}10.0.0.5:17070`)!;
    expect(l.listener_filters).to.equal(undefined);
    expect(l.use_original_dst).to.equal(undefined);
    expect(l.api_listener).to.equal(undefined);
    expect(l.filter_chains).to.have.length(1);
    const chain = l.filter_chains[0];
    expect(chain.filter_chain_match).to.equal(undefined);
    expect(chain.filters).to.have.length(1);
    const hcm = chain.filters[0].typed_config;
    expect(hcm["@type"]).to.equal("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager");
    expect(hcm.rds).to.equal(undefined);
    expect(hcm.route_config.virtual_hosts).to.deep.equal([
      { name: "inbound|http|17070", domains: ["*"], routes: [{ match: { prefix: "/" }, non_forwarding_action: {} }] },
    ]);
    expect(hcm.http_filters.at(-1).typed_config["@type"]).to.equal("type.googleapis.com/envoy.extensions.filters.http.router.v3.Router");
    expect(chain.transport_socket, "no DestinationRule: plaintext").to.equal(undefined);
  });

  it("spells IPv6 addresses canonically (RFC 5952), the form gRPC formats a bound address in", () => {
    expect(canonicalIp("2001:DB8:0:0::5")).to.equal("2001:db8::5");
    expect(canonicalIp("10.0.0.5")).to.equal("10.0.0.5");
    expect(canonicalIp("echo.example.com")).to.equal(undefined);
    expect(grpcServerListenerName("2001:db8::5", 80)).to.equal(`${PREFIX}[2001:db8::5]:80`);
    // The node and the WorkloadEntry each spell the address their own way; both sides are compared canonically.
    const node = v6Node("2001:0DB8:0:0::5");
    const ls = serverListeners({ "mesh.yaml": MESH.replace('address: "2001:db8::5"', 'address: "2001:DB8::5"') }, node);
    expect([...ls.keys()]).to.include(`${PREFIX}[2001:db8::5]:17070`);
    expect(ls.get(`${PREFIX}[2001:db8::5]:17070`)!.address.socket_address.address).to.equal("2001:db8::5");
  });

  it("through the cache, an IPv6 node spelled otherwise than its WorkloadEntry loses its listeners with the entry", () => {
    const cache = new ResourceCache();
    const node = v6Node("2001:0db8:0:0::5");
    const names = () => [...cache.resources(node, TypeUrl.Listener).keys()].filter((n) => n.startsWith(PREFIX)).sort();
    const s1 = snapshotOf({ "mesh.yaml": MESH });
    cache.update(s1);
    expect(names()).to.deep.equal([`${PREFIX}0.0.0.0:17070`, `${PREFIX}[2001:db8::5]:17070`, `${PREFIX}[::]:17070`]);
    const s2 = snapshotOf({ "mesh.yaml": MESH.replace(/---\napiVersion: networking.istio.io\/v1\nkind: WorkloadEntry\nmetadata: \{name: echo-v6,[^]*$/, "") }, {}, s1);
    expect(s2.changes.full, "an incremental change set").to.equal(false);
    cache.update(s2);
    expect(names()).to.deep.equal([]);
  });

  it("gives a node only its own instances: not another address, namespace or service account, whatever IPs it claims", () => {
    const files = { "mesh.yaml": MESH };
    // echo-2's address is not one of echo-1's: no listener for it.
    expect([...serverListeners(files, echoServer()).keys()]).not.to.include(`${PREFIX}10.0.0.6:17070`);
    // Nor for an address no instance has.
    expect(serverListeners(files, echoServer({ ips: ["10.0.0.99"], workloadName: "nobody" })).size).to.equal(0);
    // Claiming echo-1's IP from another namespace or with another service account gets nothing.
    expect(serverListeners(files, grpcView("other", { serviceAccount: "echo", ips: ["10.0.0.5"] })).size).to.equal(0);
    expect(serverListeners(files, echoServer({ serviceAccount: "frontend", workloadName: "x" })).size).to.equal(0);
    expect(serverListeners(files, echoServer({ serviceAccount: undefined as unknown as string, workloadName: "x" })).size).to.equal(0);
    // A node without instance IPs is matched by its WorkloadEntry, and then only for the wildcard binds and the
    // entry's own address.
    expect([...serverListeners(files, echoServer({ ips: [] })).keys()]).to.deep.equal([`${PREFIX}0.0.0.0:17070`, `${PREFIX}10.0.0.5:17070`, `${PREFIX}[::]:17070`]);
    // Envoy sidecars never get them (they serve through virtualInbound).
    const sidecar = generate(snapshotOf(files), sidecarView("shop", { ips: ["10.0.0.5"], serviceAccount: "echo" }));
    expect([...sidecar.listeners.keys()].filter((n) => n.startsWith(PREFIX))).to.deep.equal([]);
  });

  it("serves an endpoint without a service account to a node of its namespace, and never a unix socket", () => {
    const files = {
      "mesh.yaml": `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: legacy, namespace: shop}
spec:
  hosts: [legacy.shop.mesh]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9090, name: grpc, protocol: GRPC}]
  endpoints: [{address: 10.0.0.5}, {address: "unix:///run/legacy.sock"}]
`,
    };
    expect([...serverListeners(files, echoServer()).keys()]).to.deep.equal([`${PREFIX}0.0.0.0:9090`, `${PREFIX}10.0.0.5:9090`, `${PREFIX}[::]:9090`]);
    expect(serverListeners(files, grpcView("web", { ips: ["10.0.0.5"] })).size).to.equal(0);
  });

  describe("TLS: what the DestinationRule published with the service tells callers", () => {
    it("ISTIO_MUTUAL: the workload certificate and a required client certificate from the mesh root, from the bootstrap's provider instance", () => {
      const l = serverListeners({ "mesh.yaml": MESH, "dr.yaml": MUTUAL("echo", "shop", "echo.shop.mesh") }, echoServer()).get(`${PREFIX}10.0.0.5:17070`)!;
      expect(l.filter_chains[0].name).to.equal("inbound-mtls");
      expect(l.filter_chains[0].transport_socket).to.deep.equal({
        name: "envoy.transport_sockets.tls",
        typed_config: {
          "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
          common_tls_context: {
            tls_certificate_provider_instance: { instance_name: "default", certificate_name: "default" },
            validation_context: { ca_certificate_provider_instance: { instance_name: "default", certificate_name: "ROOTCA" } },
          },
          require_client_certificate: true,
        },
      });
    });

    it("follows the client side's rule lookup from the service's namespace: own namespace, then the root namespace; wildcard hosts", () => {
      const at = (files: Record<string, string>) => mtlsOf(serverListeners({ "mesh.yaml": MESH, ...files }, echoServer()).get(`${PREFIX}10.0.0.5:17070`)!);
      expect(at({ "dr.yaml": MUTUAL("all", "istio-system", "*.mesh") })).to.equal(true);
      // The service's own namespace decides over the root namespace.
      expect(at({ "a.yaml": MUTUAL("all", "istio-system", "*.mesh"), "b.yaml": MUTUAL("echo", "shop", "echo.shop.mesh").replace("ISTIO_MUTUAL", "DISABLE") })).to.equal(false);
      // A rule in a caller's namespace is that caller's business, and so is one that selects particular workloads.
      expect(at({ "dr.yaml": MUTUAL("echo", "web", "echo.shop.mesh") })).to.equal(false);
      expect(at({ "dr.yaml": MUTUAL("echo", "shop", "echo.shop.mesh", "  workloadSelector: {labels: {app: frontend}}\n") })).to.equal(false);
    });

    it("portLevelSettings apply to the service port the instance serves", () => {
      const dr = MUTUAL("echo", "shop", "echo.shop.mesh", "    portLevelSettings:\n    - port: {number: 7070}\n      tls: {mode: DISABLE}\n");
      const l = serverListeners({ "mesh.yaml": MESH, "dr.yaml": dr }, echoServer()).get(`${PREFIX}10.0.0.5:17070`)!;
      expect(mtlsOf(l)).to.equal(false);
    });

    it("SIMPLE/MUTUAL with files and DISABLE leave the server in plaintext", () => {
      for (const mode of ["DISABLE", "SIMPLE"]) {
        const l = serverListeners({ "mesh.yaml": MESH, "dr.yaml": MUTUAL("echo", "shop", "echo.shop.mesh").replace("ISTIO_MUTUAL", mode) }, echoServer()).get(`${PREFIX}10.0.0.5:17070`)!;
        expect(mtlsOf(l), mode).to.equal(false);
      }
    });

    it("two services on one port that disagree: mTLS (a caller told to use mTLS is never answered in plaintext)", () => {
      const other = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: echo-alias, namespace: shop}
spec:
  hosts: [alias.shop.mesh]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 17070, name: grpc, protocol: GRPC}]
  workloadSelector: {labels: {app: echo}}
`;
      const plain = serverListeners({ "mesh.yaml": MESH, "alias.yaml": other }, echoServer()).get(`${PREFIX}10.0.0.5:17070`)!;
      expect(mtlsOf(plain)).to.equal(false);
      const mixed = serverListeners({ "mesh.yaml": MESH, "alias.yaml": other, "dr.yaml": MUTUAL("alias", "shop", "alias.shop.mesh") }, echoServer()).get(`${PREFIX}10.0.0.5:17070`)!;
      expect(mtlsOf(mixed)).to.equal(true);
    });
  });

  it("through the resource cache: follow the node's instances and the DestinationRule across snapshots, per node", () => {
    const cache = new ResourceCache();
    const names = (v: ProxyView) => [...cache.resources(v, TypeUrl.Listener).keys()].filter((n) => n.startsWith(PREFIX)).sort();
    const mtls = (v: ProxyView, n: string) => decodeToJson("envoy.config.listener.v3.Listener", cache.resources(v, TypeUrl.Listener).get(n)!.bytes);
    const own = `${PREFIX}10.0.0.5:17070`;
    const files: Record<string, string> = { "mesh.yaml": MESH };
    const s1 = snapshotOf(files);
    cache.update(s1);
    const echo1 = echoServer();
    const echo2 = echoServer({ id: "grpc~10.0.0.6~echo-2.shop~shop.svc.cluster.local", ips: ["10.0.0.6"], workloadName: "echo-2" });
    const client = grpcView("shop");
    expect(names(echo1)).to.deep.equal([`${PREFIX}0.0.0.0:17070`, own, `${PREFIX}[::]:17070`]);
    expect(names(echo2)).to.include(`${PREFIX}10.0.0.6:17070`).and.not.include(own);
    expect(names(client)).to.deep.equal([]);
    // Every other listener of the scope is shared with the plain client.
    expect(cache.resources(echo1, TypeUrl.Listener).get("echo.shop.mesh:7070")).to.equal(cache.resources(client, TypeUrl.Listener).get("echo.shop.mesh:7070"));
    expect(mtlsOf(mtls(echo1, own) as J)).to.equal(false);

    // A DestinationRule change (routing only) reaches the server listener.
    const s2 = snapshotOf({ ...files, "dr.yaml": MUTUAL("echo", "shop", "echo.shop.mesh") }, {}, s1);
    expect(s2.changes.full, "an incremental change set").to.equal(false);
    cache.update(s2);
    expect(mtlsOf(mtls(echo1, own) as J)).to.equal(true);

    // A VirtualService change is routing too, but no server listener depends on it: the encoded listener is kept.
    const before = cache.resources(echo1, TypeUrl.Listener).get(own);
    const vs = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo, namespace: shop}
spec:
  hosts: [echo.shop.mesh]
  http: [{timeout: 3s, route: [{destination: {host: echo.shop.mesh}}]}]
`;
    const s2b = snapshotOf({ ...files, "dr.yaml": MUTUAL("echo", "shop", "echo.shop.mesh"), "vs.yaml": vs }, {}, s2);
    expect([...s2b.changes.routing]).to.deep.equal(["VirtualService/shop/echo"]);
    cache.update(s2b);
    expect(cache.resources(echo1, TypeUrl.Listener).get(own)).to.equal(before);

    // The instance going away removes it; another node's instances stay.
    const s3 = snapshotOf({ "mesh.yaml": MESH.replace(/---\napiVersion: networking.istio.io\/v1\nkind: WorkloadEntry\nmetadata: \{name: echo-1,[^]*?(?=---)/, ""), "dr.yaml": MUTUAL("echo", "shop", "echo.shop.mesh"), "vs.yaml": vs }, {}, s2b);
    expect([...s3.configs.keys()].some((k) => k.includes("echo-1"))).to.equal(false);
    cache.update(s3);
    expect(names(echo1)).to.deep.equal([]);
    expect(names(echo2)).to.include(`${PREFIX}10.0.0.6:17070`);
  });

  it("encode and decode losslessly with the Envoy protos (no deprecated fields) and pass grpc-js-xds's listener validation", function () {
    const mutual = { "mesh.yaml": MESH, "dr.yaml": MUTUAL("echo", "shop", "echo.shop.mesh") };
    const groups = [
      { files: { "mesh.yaml": MESH }, view: echoServer(), mtls: false },
      { files: mutual, view: echoServer(), mtls: true },
      { files: mutual, view: echoServer({ ips: ["2001:db8::5"], workloadName: "echo-v6" }), mtls: true },
    ].map((g) => ({ ...g, listeners: new Map([...generate(snapshotOf(g.files), g.view).listeners].filter(([n]) => n.startsWith(PREFIX))) }));
    const validators = grpcValidators();
    for (const g of groups) {
      expect(g.listeners.size).to.equal(3);
      for (const [name, json] of g.listeners) {
        expect(mtlsOf(json as J), name).to.equal(g.mtls);
        expect(deprecatedFieldsIn("envoy.config.listener.v3.Listener", json), name).to.deep.equal([]);
        const bytes = encodeJson("envoy.config.listener.v3.Listener", json);
        expect(decodeToJson("envoy.config.listener.v3.Listener", bytes), name).to.deep.equal(JSON.parse(JSON.stringify(json)));
      }
      if (validators) expect(validateWithGrpcJsXds(validators, { listeners: g.listeners, routes: new Map(), clusters: new Map(), endpoints: new Map() })).to.deep.equal([]);
    }
    if (!validators) {
      console.log("      grpc-js-xds's validators are not loadable: the protos were checked, its own validation was not");
      this.skip();
    }
  });
});
