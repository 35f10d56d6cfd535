// DYNAMIC_DNS resolution (Envoy's dynamic forward proxy): cluster shape, filter order in the listeners that lead
// to it, one shared DNS cache, and no such resources for proxyless gRPC clients (grpc-js-xds would NACK them).
// Every resource is encoded and decoded with the real Envoy protos (canonicalResources) and compared with a
// golden file (UPDATE_GOLDEN=1 regenerates it).
import { expect } from "chai";
import { generate } from "../src/generators/index.js";
import { DFP_DNS_CACHE_NAME } from "../src/generators/dynamic-dns.js";
import { canonicalResources, expectGolden, fixtureFiles } from "./fixtures/gateway/golden.js";
import { grpcView, sidecarView, snapshotOf } from "./fixtures/snapshots.js";

type Json = Record<string, any>;

const CACHE = { name: DFP_DNS_CACHE_NAME, dns_lookup_family: "V4_ONLY" };

describe("DYNAMIC_DNS services", function () {
  this.timeout(60_000);
  const snapshot = snapshotOf(fixtureFiles("dynamic-dns.yaml"));
  const g = generate(snapshot, sidecarView("apps"));
  const c = canonicalResources(g);

  it("get a dynamic forward proxy cluster per HTTP/TLS port, none for the TCP port", () => {
    for (const port of [80, 443]) {
      const cl = c.clusters[`outbound|${port}||*.example.com`];
      expect(cl, `port ${port}`).to.exist;
      expect(cl.type).to.equal(undefined);
      expect(cl.lb_policy).to.equal("CLUSTER_PROVIDED");
      expect(cl.cluster_type).to.deep.equal({
        name: "envoy.clusters.dynamic_forward_proxy",
        typed_config: { "@type": "type.googleapis.com/envoy.extensions.clusters.dynamic_forward_proxy.v3.ClusterConfig", dns_cache_config: CACHE },
      });
      expect(cl.load_assignment).to.equal(undefined);
    }
    expect(c.clusters).to.not.have.property("outbound|9000||*.example.com");
    expect(c.endpoints).to.not.have.property("outbound|80||*.example.com");
  });

  it("HTTP: the HTTP filter sits between fault and router, with the same cache, and the wildcard vhost routes to the DFP cluster", () => {
    const hcm = (c.listeners["0.0.0.0_80"].filter_chains as Json[])[0]!.filters[0].typed_config;
    expect(hcm.http_filters.map((f: Json) => f.name)).to.deep.equal([
      "envoy.filters.http.fault",
      "envoy.filters.http.dynamic_forward_proxy",
      "envoy.filters.http.router",
    ]);
    expect(hcm.http_filters[1].typed_config.dns_cache_config).to.deep.equal(CACHE);
    const vh = (c.routes["80"].virtual_hosts as Json[]).find((v) => v.name === "*.example.com:80")!;
    expect(vh.domains).to.deep.equal(["*.example.com", "*.example.com:80"]);
    expect(vh.routes[0].route.cluster).to.equal("outbound|80||*.example.com");
    // The ordinary service on the same port keeps its own EDS cluster.
    const catalog = (c.routes["80"].virtual_hosts as Json[]).find((v) => v.name === "catalog.apps.mesh:80")!;
    expect(catalog.routes[0].route.cluster).to.equal("outbound|80||catalog.apps.mesh");
  });

  it("TLS: tls_inspector, then an SNI chain with the SNI resolver before tcp_proxy to the DFP cluster on the service port", () => {
    const l = c.listeners["0.0.0.0_443"];
    expect(l.listener_filters.map((f: Json) => f.name)).to.deep.equal(["envoy.filters.listener.tls_inspector"]);
    const chain = (l.filter_chains as Json[]).find((ch) => ch.filter_chain_match?.server_names?.includes("*.example.com"))!;
    expect(chain.filters.map((f: Json) => f.name)).to.deep.equal(["envoy.filters.network.sni_dynamic_forward_proxy", "envoy.filters.network.tcp_proxy"]);
    expect(chain.filters[0].typed_config).to.deep.equal({
      "@type": "type.googleapis.com/envoy.extensions.filters.network.sni_dynamic_forward_proxy.v3.FilterConfig",
      dns_cache_config: CACHE,
      port_value: 443,
    });
    expect(chain.filters[1].typed_config.cluster).to.equal("outbound|443||*.example.com");
  });

  it("TCP: no chain leads to the service (nothing to resolve); the port falls through to the egress policy", () => {
    const l = c.listeners["0.0.0.0_9000"];
    expect(l.filter_chains).to.equal(undefined);
    expect(l.default_filter_chain.filters[0].typed_config.cluster).to.equal("PassthroughCluster");
  });

  it("every dynamic forward proxy config names one identical cache (Envoy requires it)", () => {
    const caches = JSON.stringify(c).match(/"dns_cache_config":\{[^}]*\}/g) ?? [];
    expect(caches.length).to.equal(2 + 1 + 1);
    expect(new Set(caches).size).to.equal(1);
  });

  it("proxyless gRPC clients get none of it", () => {
    const grpc = generate(snapshot, grpcView("apps"));
    const names = [...grpc.clusters.keys(), ...grpc.listeners.keys(), ...grpc.routes.keys()];
    expect(names.filter((n) => n.includes("example.com"))).to.deep.equal([]);
    expect(JSON.stringify([...grpc.clusters.values()])).to.not.include("dynamic_forward_proxy");
    expect(names).to.include("catalog.apps.mesh:80");
  });

  it("gateways route to it with the HTTP filter in their connection managers", () => {
    const files = {
      ...fixtureFiles("dynamic-dns.yaml"),
      "gw.yaml": `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: { name: egress, namespace: apps }
spec:
  selector: { istio: egressgateway }
  servers: [{ port: { number: 80, name: http, protocol: HTTP }, hosts: ["*.example.com"] }]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: wildcard, namespace: apps }
spec:
  hosts: ["*.example.com"]
  gateways: [egress]
  http: [{ route: [{ destination: { host: "*.example.com", port: { number: 80 } } }] }]
`,
    };
    const gw = generate(snapshotOf(files), { id: "router~10.0.0.30~egw.apps~apps.svc.cluster.local", kind: "gateway", namespace: "apps", labels: { istio: "egressgateway" }, ips: [], interceptionMode: "NONE" });
    const gc = canonicalResources(gw);
    const hcm = gc.listeners["0.0.0.0_80"].filter_chains[0].filters[0].typed_config;
    expect(hcm.http_filters.map((f: Json) => f.name)).to.deep.equal(["envoy.filters.http.fault", "envoy.filters.http.dynamic_forward_proxy", "envoy.filters.http.router"]);
    expect(gc.routes["http.80"].virtual_hosts[0].routes[0].route.cluster).to.equal("outbound|80||*.example.com");
    expect(gc.clusters["outbound|80||*.example.com"].cluster_type.name).to.equal("envoy.clusters.dynamic_forward_proxy");
  });

  it("matches the golden file", () => expectGolden("dynamic-dns-sidecar", { listeners: { "0.0.0.0_80": c.listeners["0.0.0.0_80"], "0.0.0.0_443": c.listeners["0.0.0.0_443"] }, routes: c.routes, clusters: c.clusters }));
});
