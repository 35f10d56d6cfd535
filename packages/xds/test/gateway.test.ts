// Gateway proxies (node id router~...): listeners, route configs and clusters generated from Gateways and the
// VirtualServices bound to them, checked field by field where it matters and against committed golden files
// (fixtures/gateway/golden, regenerated with UPDATE_GOLDEN=1). Every resource is encoded and decoded with the
// real Envoy protos on the way.
import { expect } from "chai";
import type { RegistrySnapshot } from "@vmpilot/registry";
import { generate, type GeneratedResources } from "../src/generators/index.js";
import { proxyViewFromNode, type ProxyView } from "../src/proxy-view.js";
import { resolveGatewayName } from "../src/generators/gateway-binding.js";
import { ResourceCache } from "../src/cache.js";
import { TypeUrl } from "../src/protos.js";
import { canonicalResources, expectGolden, fixtureFiles } from "./fixtures/gateway/golden.js";
import { sidecarView, snapshotOf } from "./fixtures/snapshots.js";

type Json = Record<string, any>;

function gatewayView(name: string, namespace: string, ip: string, labels: Record<string, string>): ProxyView {
  const view = proxyViewFromNode({ id: `router~${ip}~${name}.${namespace}~${namespace}.svc.cluster.local`, metadata: { LABELS: labels } });
  expect(view.kind).to.equal("gateway");
  return view;
}

const INGRESS = (ns: string): ProxyView => gatewayView("ingress-1", ns, "10.0.0.9", { istio: "ingressgateway" });

function filterOf(chain: Json, name: string): Json {
  const f = (chain.filters as Json[]).find((x) => x.name === name);
  expect(f, `filter ${name} in chain ${chain.name}`).to.exist;
  return f!.typed_config;
}

function tlsContext(chain: Json): Json {
  expect(chain.transport_socket?.name).to.equal("envoy.transport_sockets.tls");
  expect(chain.transport_socket.typed_config["@type"]).to.equal("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext");
  return chain.transport_socket.typed_config;
}

function generated(snapshot: RegistrySnapshot, view: ProxyView): { g: GeneratedResources; c: Record<string, Record<string, any>> } {
  const g = generate(snapshot, view);
  return { g, c: canonicalResources(g) };
}

describe("gateway proxies", function () {
  this.timeout(60_000);

  describe("gateway names (Istio's resolveGatewayName)", () => {
    it("resolves ns/name, ./name, bare names (in the referring namespace) and the legacy FQDN form", () => {
      expect(resolveGatewayName("istio-system/egress", "apps")).to.equal("istio-system/egress");
      expect(resolveGatewayName("./egress", "apps")).to.equal("apps/egress");
      expect(resolveGatewayName("egress", "apps")).to.equal("apps/egress");
      expect(resolveGatewayName("egress.istio-system.svc.cluster.local", "apps")).to.equal("istio-system/egress");
      expect(resolveGatewayName("mesh", "apps")).to.equal("mesh");
    });
  });

  describe("ingress TLS termination for one host (SIMPLE)", () => {
    const snapshot = snapshotOf(fixtureFiles("services.yaml", "ingress-simple.yaml"));
    const { c } = generated(snapshot, INGRESS("bookinfo"));

    it("listens on 443 with one SNI chain presenting the certificate files, into RDS https.443.https.bookinfo-gateway.bookinfo", () => {
      const l = c.listeners["0.0.0.0_443"];
      expect(l.address.socket_address).to.deep.equal({ address: "0.0.0.0", port_value: 443 });
      expect(l.listener_filters.map((f: Json) => f.name)).to.deep.equal(["envoy.filters.listener.tls_inspector"]);
      expect(l.filter_chains).to.have.length(1);
      const chain = l.filter_chains[0];
      expect(chain.filter_chain_match).to.deep.equal({ server_names: ["bookinfo.com"] });
      const tls = tlsContext(chain);
      expect(tls.common_tls_context.tls_certificates).to.deep.equal([
        { certificate_chain: { filename: "/etc/vmpilot/gateway/tls.crt" }, private_key: { filename: "/etc/vmpilot/gateway/tls.key" } },
      ]);
      expect(tls.require_client_certificate).to.equal(undefined);
      expect(tls.common_tls_context.validation_context).to.equal(undefined);
      const hcm = filterOf(chain, "envoy.filters.network.http_connection_manager");
      expect(hcm.rds.route_config_name).to.equal("https.443.https.bookinfo-gateway.bookinfo");
      expect(hcm.http_filters.at(-1).name).to.equal("envoy.filters.http.router");
    });

    it("routes the bound VirtualService's rules for the server's host to the mesh clusters", () => {
      const rc = c.routes["https.443.https.bookinfo-gateway.bookinfo"];
      expect(rc.virtual_hosts).to.have.length(1);
      const vh = rc.virtual_hosts[0];
      expect(vh.name).to.equal("bookinfo.com:443");
      expect(vh.domains).to.deep.equal(["bookinfo.com", "bookinfo.com:*"]);
      expect(vh.routes.map((r: Json) => [r.match.prefix, r.route.cluster])).to.deep.equal([
        ["/reviews", "outbound|9080||reviews.bookinfo.svc.cluster.local"],
        ["/", "outbound|9080||productpage.bookinfo.svc.cluster.local"],
      ]);
      expect(vh.require_tls).to.equal(undefined);
      // The gateway has the clusters it routes to, with mesh mTLS to the identity-bearing endpoints.
      expect(c.clusters["outbound|9080||reviews.bookinfo.svc.cluster.local"].transport_socket_matches[0].name).to.equal("tlsMode-istio");
    });

    it("redirects plaintext HTTP on 80 to HTTPS (httpsRedirect) through RDS http.80", () => {
      const l = c.listeners["0.0.0.0_80"];
      expect(l.listener_filters).to.equal(undefined);
      expect(filterOf(l.filter_chains[0], "envoy.filters.network.http_connection_manager").rds.route_config_name).to.equal("http.80");
      const vh = c.routes["http.80"].virtual_hosts[0];
      expect(vh.domains).to.deep.equal(["bookinfo.com", "bookinfo.com:*"]);
      expect(vh.require_tls).to.equal("ALL");
    });

    it("matches the golden file", () => expectGolden("ingress-simple", c));

    it("is not served to a gateway whose labels the Gateway does not select, nor to sidecars", () => {
      const other = generate(snapshot, gatewayView("ingress-2", "bookinfo", "10.0.0.10", { istio: "other" }));
      expect(other.listeners.size).to.equal(0);
      const sidecar = generate(snapshot, sidecarView("bookinfo"));
      expect([...sidecar.routes.keys()].some((n) => n.startsWith("http"))).to.equal(false);
      const rc9080 = sidecar.routes.get("9080") as Json;
      expect(rc9080.virtual_hosts.some((v: Json) => v.domains.includes("bookinfo.com"))).to.equal(false);
    });
  });

  describe("MUTUAL with a CA (files and SDS) and ISTIO_MUTUAL", () => {
    const snapshot = snapshotOf(fixtureFiles("services.yaml", "ingress-mutual.yaml"));
    const { c } = generated(snapshot, INGRESS("bookinfo"));

    it("requires and verifies client certificates against the CA file, with SANs and the TLS floor", () => {
      const chains = c.listeners["0.0.0.0_443"].filter_chains as Json[];
      expect(chains.map((ch) => ch.filter_chain_match.server_names)).to.deep.equal([["partner.bookinfo.com"], ["api.bookinfo.com"]]);
      const tls = tlsContext(chains[0]!);
      expect(tls.require_client_certificate).to.equal(true);
      expect(tls.common_tls_context.validation_context).to.deep.equal({
        trusted_ca: { filename: "/etc/vmpilot/gateway/partner-ca.crt" },
        match_typed_subject_alt_names: [{ san_type: "URI", matcher: { exact: "spiffe://partner.example/ns/billing/sa/client" } }],
      });
      expect(tls.common_tls_context.tls_params).to.deep.equal({ tls_minimum_protocol_version: "TLSv1_3" });
      expect(filterOf(chains[0]!, "envoy.filters.network.http_connection_manager").rds.route_config_name).to.equal("https.443.https-files.partner-gateway.bookinfo");
    });

    it("takes the certificate and the CA of a credentialName by SDS (`NAME`, `NAME-cacert`)", () => {
      const tls = tlsContext(c.listeners["0.0.0.0_443"].filter_chains[1]);
      const ads = { ads: {}, resource_api_version: "V3" };
      expect(tls.common_tls_context.tls_certificate_sds_secret_configs).to.deep.equal([{ name: "partner-cred", sds_config: ads }]);
      expect(tls.common_tls_context.combined_validation_context.validation_context_sds_secret_config).to.deep.equal({ name: "partner-cred-cacert", sds_config: ads });
      expect(tls.require_client_certificate).to.equal(true);
    });

    it("ISTIO_MUTUAL uses the mesh identity (SDS default and ROOTCA) and answers any SNI", () => {
      const chain = c.listeners["0.0.0.0_15443"].filter_chains[0];
      expect(chain.filter_chain_match ?? {}).to.deep.equal({});
      const tls = tlsContext(chain);
      expect(tls.common_tls_context.tls_certificate_sds_secret_configs[0].name).to.equal("default");
      expect(tls.common_tls_context.combined_validation_context.validation_context_sds_secret_config.name).to.equal("ROOTCA");
      expect(tls.require_client_certificate).to.equal(true);
      const vhs = c.routes["https.15443.https-mesh.partner-gateway.bookinfo"].virtual_hosts;
      expect(vhs.map((v: Json) => v.name).sort()).to.deep.equal(["api.bookinfo.com:15443", "partner.bookinfo.com:15443"]);
    });

    it("matches the golden file", () => expectGolden("ingress-mutual", c));
  });

  describe("PASSTHROUGH by SNI", () => {
    const snapshot = snapshotOf(fixtureFiles("passthrough.yaml"));
    const { c } = generated(snapshot, INGRESS("ns1"));

    it("does not terminate TLS and sends each SNI to its tls route's cluster, first claim wins", () => {
      const l = c.listeners["0.0.0.0_443"];
      expect(l.listener_filters.map((f: Json) => f.name)).to.deep.equal(["envoy.filters.listener.tls_inspector"]);
      const chains = l.filter_chains as Json[];
      expect(chains.every((ch) => ch.transport_socket === undefined)).to.equal(true);
      expect(chains.map((ch) => [ch.filter_chain_match.server_names, filterOf(ch, "envoy.filters.network.tcp_proxy").cluster])).to.deep.equal([
        [["en.wikipedia.org"], "outbound|443||en-mirror.ns1.svc.cluster.local"],
        [["*.wikipedia.org", "wikipedia.org"], "outbound|443||internal-egress-firewall.ns1.svc.cluster.local"],
      ]);
      expect(Object.keys(c.routes)).to.deep.equal([]);
      expect(c.clusters).to.have.property("outbound|443||internal-egress-firewall.ns1.svc.cluster.local");
    });

    it("matches the golden file", () => expectGolden("passthrough", c));
  });

  describe("egress gateway: the ServiceEntry reference's pair of VirtualService rules", () => {
    const snapshot = snapshotOf(fixtureFiles("egress.yaml"));
    const sidecar = generated(snapshot, sidecarView("egress"));
    const gateway = generated(snapshot, gatewayView("egressgw-1", "egress", "10.0.0.20", { istio: "egressgateway" }));

    it("sidecar side: the `mesh` rule sends httpbin.com to the egress gateway service, the gateway rule is absent", () => {
      const vh = (sidecar.c.routes["80"].virtual_hosts as Json[]).find((v) => v.name === "httpbin.com:80")!;
      expect(vh.routes.map((r: Json) => r.route.cluster)).to.deep.equal(["outbound|80||istio-egressgateway.istio-system.svc.cluster.local"]);
      expect(sidecar.c.clusters).to.have.property("outbound|80||istio-egressgateway.istio-system.svc.cluster.local");
      expect(Object.keys(sidecar.c.listeners).some((n) => n.startsWith("0.0.0.0_80"))).to.equal(true);
      expect(sidecar.c.listeners["0.0.0.0_80"].bind_to_port).to.equal(false);
    });

    it("sidecar side, in a namespace the ServiceEntry is not exported to: the VirtualService alone still sends httpbin.com to the gateway", () => {
      const other = generated(snapshot, sidecarView("apps"));
      expect(other.c.clusters).to.not.have.property("outbound|80||httpbin.com");
      const vh = (other.c.routes["80"].virtual_hosts as Json[]).find((v) => v.domains.includes("httpbin.com"))!;
      expect(vh.name).to.equal("httpbin.com:80");
      expect(vh.domains).to.deep.equal(["httpbin.com", "httpbin.com:80"]);
      expect(vh.routes.map((r: Json) => r.route.cluster)).to.deep.equal(["outbound|80||istio-egressgateway.istio-system.svc.cluster.local"]);
      // Under REGISTRY_ONLY too: the VirtualService names the host, so it is not blocked.
      const strict = generate(snapshotOf(fixtureFiles("egress.yaml"), { outboundTrafficPolicy: "REGISTRY_ONLY" }), sidecarView("apps"));
      const names = ((strict.routes.get("80") as Json).virtual_hosts as Json[]).map((v) => v.name);
      expect(names).to.include("httpbin.com:80");
      expect(names.at(-1)).to.equal("block_all");
    });

    it("gateway side: a bound listener on 80 whose route sends httpbin.com to the external host, the mesh rule is absent", () => {
      const l = gateway.c.listeners["0.0.0.0_80"];
      expect(l.bind_to_port).to.equal(undefined);
      expect(filterOf(l.filter_chains[0], "envoy.filters.network.http_connection_manager").rds.route_config_name).to.equal("http.80");
      const vhs = gateway.c.routes["http.80"].virtual_hosts as Json[];
      expect(vhs.map((v) => [v.name, v.domains])).to.deep.equal([["httpbin.com:80", ["httpbin.com", "httpbin.com:*"]]]);
      expect(vhs[0]!.routes.map((r: Json) => r.route.cluster)).to.deep.equal(["outbound|80||httpbin.com"]);
      expect(gateway.c.clusters["outbound|80||httpbin.com"].type).to.equal("STRICT_DNS");
      // Gateways have no capture listeners and no inbound side.
      expect(Object.keys(gateway.c.listeners)).to.deep.equal(["0.0.0.0_80"]);
    });

    it("a bare Gateway name binds only in the VirtualService's own namespace (Istio), so the reference's literal text binds nothing", () => {
      const literal = fixtureFiles("egress.yaml")["egress.yaml"]!.replaceAll("istio-system/istio-egressgateway", "istio-egressgateway");
      const s = snapshotOf({ "egress.yaml": literal });
      const g = generate(s, gatewayView("egressgw-1", "egress", "10.0.0.20", { istio: "egressgateway" }));
      const vhs = (g.routes.get("http.80") as Json).virtual_hosts as Json[];
      expect(vhs.map((v) => v.name)).to.deep.equal(["blackhole:80"]);
    });

    it("matches the golden files", () => {
      expectGolden("egress-sidecar", { listeners: { "0.0.0.0_80": sidecar.c.listeners["0.0.0.0_80"] }, routes: sidecar.c.routes, clusters: sidecar.c.clusters });
      expectGolden("egress-gateway", gateway.c);
    });
  });

  describe("TCP servers and TLS terminated into TCP", () => {
    const yaml = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: postgres, namespace: data }
spec:
  hosts: [postgres.data.mesh]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 5432, name: pg, protocol: TCP }]
  endpoints: [{ address: 10.4.0.1 }, { address: 10.4.0.2, labels: { version: v2 } }]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: { name: data-gateway, namespace: data }
spec:
  selector: { istio: ingressgateway }
  servers:
  - port: { number: 5432, name: pg, protocol: TCP }
    hosts: ["*"]
  - port: { number: 6432, name: pg-tls, protocol: TLS }
    hosts: [pg.data.example]
    tls: { mode: SIMPLE, credentialName: pg-cert }
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: postgres, namespace: data }
spec:
  hosts: ["*"]
  gateways: [data-gateway]
  tcp:
  - match: [{ port: 5432 }]
    route: [{ destination: { host: postgres.data.mesh } }]
  - match: [{ port: 6432 }]
    route:
    - { destination: { host: postgres.data.mesh, port: { number: 5432 } }, weight: 90 }
    - { destination: { host: postgres.data.mesh, port: { number: 5432 }, subset: v2 }, weight: 10 }
`;
    const { c } = generated(snapshotOf({ "data.yaml": yaml }), INGRESS("data"));

    it("a TCP server proxies to the first bound tcp route for its port", () => {
      const l = c.listeners["0.0.0.0_5432"];
      expect(l.listener_filters).to.equal(undefined);
      expect(l.filter_chains).to.have.length(1);
      expect(l.filter_chains[0].transport_socket).to.equal(undefined);
      expect(filterOf(l.filter_chains[0], "envoy.filters.network.tcp_proxy").cluster).to.equal("outbound|5432||postgres.data.mesh");
    });

    it("a TLS server with SIMPLE terminates TLS (SDS credential, no ALPN) and splits by weight", () => {
      const chain = c.listeners["0.0.0.0_6432"].filter_chains[0];
      expect(chain.filter_chain_match).to.deep.equal({ server_names: ["pg.data.example"] });
      const tls = tlsContext(chain);
      expect(tls.common_tls_context.tls_certificate_sds_secret_configs[0].name).to.equal("pg-cert");
      expect(tls.common_tls_context.alpn_protocols).to.equal(undefined);
      expect(filterOf(chain, "envoy.filters.network.tcp_proxy").weighted_clusters.clusters).to.deep.equal([
        { name: "outbound|5432||postgres.data.mesh", weight: 90 },
        { name: "outbound|5432|v2|postgres.data.mesh", weight: 10 },
      ]);
    });
  });

  describe("listener planning", () => {
    const yaml = `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: { name: a, namespace: bookinfo }
spec:
  selector: { istio: ingressgateway }
  servers:
  - { port: { number: 8080, name: http-local, protocol: HTTP }, bind: 10.0.0.9, hosts: [bookinfo.com] }
  - { port: { number: 443, name: https, protocol: HTTPS }, hosts: [bookinfo.com], tls: { mode: SIMPLE, credentialName: bookinfo-cert } }
  - { port: { number: 15443, name: tls-auto, protocol: TLS }, hosts: ["*.local"], tls: { mode: AUTO_PASSTHROUGH } }
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: { name: b, namespace: bookinfo }
spec:
  selector: { istio: ingressgateway }
  servers:
  - { port: { number: 443, name: http-on-443, protocol: HTTP }, hosts: [bookinfo.com] }
  - { port: { number: 443, name: https-same-host, protocol: HTTPS }, hosts: [bookinfo.com], tls: { mode: SIMPLE, credentialName: other-cert } }
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: bookinfo, namespace: bookinfo }
spec:
  hosts: [bookinfo.com]
  gateways: [a, b]
  http: [{ route: [{ destination: { host: productpage.bookinfo.svc.cluster.local } }] }]
`;
    const { c } = generated(snapshotOf({ ...fixtureFiles("services.yaml"), "gw.yaml": yaml }), INGRESS("bookinfo"));

    it("binds a server's address, skips AUTO_PASSTHROUGH, conflicting protocols and an SNI already claimed on the port", () => {
      expect(Object.keys(c.listeners).sort()).to.deep.equal(["0.0.0.0_443", "10.0.0.9_8080"]);
      expect(c.listeners["10.0.0.9_8080"].address.socket_address).to.deep.equal({ address: "10.0.0.9", port_value: 8080 });
      const chains = c.listeners["0.0.0.0_443"].filter_chains as Json[];
      expect(chains).to.have.length(1);
      expect(tlsContext(chains[0]!).common_tls_context.tls_certificate_sds_secret_configs[0].name).to.equal("bookinfo-cert");
      // No route config for the server that lost its SNI.
      expect(Object.keys(c.routes).sort()).to.deep.equal(["http.8080", "https.443.https.a.bookinfo"]);
    });
  });

  describe("served through the ResourceCache", () => {
    it("a Gateway edit reaches the gateway's listeners and routes incrementally, exactly as generate() has them", () => {
      const files = fixtureFiles("services.yaml", "ingress-simple.yaml");
      const first = snapshotOf(files);
      const cache = new ResourceCache();
      cache.update(first);
      const view = INGRESS("bookinfo");
      expect([...cache.resources(view, TypeUrl.Listener).keys()].sort()).to.deep.equal(["0.0.0.0_443", "0.0.0.0_80"]);
      const edited = { ...files, "ingress-simple.yaml": files["ingress-simple.yaml"]!.replace("number: 443, name: https", "number: 8443, name: https") };
      const second = snapshotOf(edited, {}, first);
      expect(second.changes.full).to.equal(false);
      cache.update(second);
      expect([...cache.resources(view, TypeUrl.Listener).keys()].sort()).to.deep.equal(["0.0.0.0_80", "0.0.0.0_8443"]);
      expect([...cache.resources(view, TypeUrl.RouteConfiguration).keys()].sort()).to.deep.equal([...generate(second, view).routes.keys()].sort());
      expect(cache.resources(view, TypeUrl.RouteConfiguration).has("https.8443.https.bookinfo-gateway.bookinfo")).to.equal(true);
    });
  });
});
