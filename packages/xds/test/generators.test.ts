// Behaviour of the generators on small, hand-written configs parsed by the real registry parser.
import { expect } from "chai";
import { generate, type GeneratedResources } from "../src/generators/index.js";
import { grpcValidators, validateWithGrpcJsXds } from "./fixtures/grpc-validate.js";
import { grpcView, sidecarView, snapshotOf } from "./fixtures/snapshots.js";

type J = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const SE = (name: string, ns: string, body: string): string => `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: ${name}, namespace: ${ns} }
spec:
${body}`;

const RESOLUTIONS = [
  SE("static", "app", `  hosts: [static.app.mesh]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 8080, name: http, protocol: HTTP }]
  endpoints:
  - { address: 10.0.1.1, labels: { version: v1 }, locality: eu/z1, weight: 3, serviceAccount: orders }
  - { address: 10.0.1.2, labels: { version: v2 }, locality: eu/z2 }
  - { address: 10.0.1.3, labels: { version: v1 }, locality: eu/z1, serviceAccount: orders-canary }
  subjectAltNames: [spiffe://legacy.example/orders]`),
  SE("dns", "app", `  hosts: [dns.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{ number: 443, name: tls, protocol: TLS }]
  endpoints: [{ address: a.dns.example.com }, { address: b.dns.example.com }]`),
  SE("dnsbare", "app", `  hosts: [bare.example.com, bare2.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{ number: 80, name: http, protocol: HTTP }]`),
  SE("dnsrr", "app", `  hosts: [rr.example.com]
  location: MESH_EXTERNAL
  resolution: DNS_ROUND_ROBIN
  ports: [{ number: 80, name: http, protocol: HTTP }]`),
  SE("none", "app", `  hosts: [db.app.mesh]
  addresses: [10.50.0.0/16]
  location: MESH_INTERNAL
  resolution: NONE
  ports: [{ number: 5432, name: tcp, protocol: TCP }]`),
  SE("empty", "app", `  hosts: [empty.app.mesh]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 8080, name: http, protocol: HTTP }]`),
].join("\n---\n");

function byName(m: Map<string, object>, name: string): J {
  const v = m.get(name);
  expect(v, `${name} in [${[...m.keys()].join(", ")}]`).to.exist;
  return v as J;
}

describe("generators: clusters by resolution", () => {
  const snap = snapshotOf({ "app.yaml": RESOLUTIONS });
  const g = generate(snap, sidecarView("app"));

  it("names clusters outbound|PORT|SUBSET|HOST and adds PassthroughCluster and BlackHoleCluster", () => {
    expect([...g.clusters.keys()].sort()).to.deep.equal(
      [
        "BlackHoleCluster",
        "PassthroughCluster",
        "outbound|443||dns.example.com",
        "outbound|5432||db.app.mesh",
        "outbound|80||bare.example.com",
        "outbound|80||bare2.example.com",
        "outbound|80||rr.example.com",
        "outbound|8080||empty.app.mesh",
        "outbound|8080||static.app.mesh",
      ].sort(),
    );
    expect(byName(g.clusters, "PassthroughCluster")).to.include({ type: "ORIGINAL_DST", lb_policy: "CLUSTER_PROVIDED" });
    expect(byName(g.clusters, "BlackHoleCluster")).to.include({ type: "STATIC" });
  });

  it("STATIC -> EDS over ADS with the cluster name as service_name", () => {
    const c = byName(g.clusters, "outbound|8080||static.app.mesh");
    expect(c.type).to.equal("EDS");
    expect(c.eds_cluster_config).to.deep.equal({ eds_config: { ads: {}, resource_api_version: "V3" }, service_name: "outbound|8080||static.app.mesh" });
  });

  it("DNS -> STRICT_DNS with the endpoints' hostnames, or the service's own host without endpoints", () => {
    const c = byName(g.clusters, "outbound|443||dns.example.com");
    expect(c.type).to.equal("STRICT_DNS");
    const addrs = c.load_assignment.endpoints.flatMap((l: J) => l.lb_endpoints.map((e: J) => e.endpoint.address.socket_address));
    expect(addrs).to.deep.equal([
      { address: "a.dns.example.com", port_value: 443 },
      { address: "b.dns.example.com", port_value: 443 },
    ]);
    const bare = byName(g.clusters, "outbound|80||bare2.example.com");
    expect(bare.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address).to.deep.equal({ address: "bare2.example.com", port_value: 80 });
  });

  it("DNS_ROUND_ROBIN -> LOGICAL_DNS; NONE -> ORIGINAL_DST with CLUSTER_PROVIDED", () => {
    expect(byName(g.clusters, "outbound|80||rr.example.com").type).to.equal("LOGICAL_DNS");
    expect(byName(g.clusters, "outbound|5432||db.app.mesh")).to.include({ type: "ORIGINAL_DST", lb_policy: "CLUSTER_PROVIDED" });
  });

  it("EDS: localities always carry locality and load_balancing_weight; endpoint weights and health", () => {
    const cla = byName(g.endpoints, "outbound|8080||static.app.mesh");
    expect(cla.cluster_name).to.equal("outbound|8080||static.app.mesh");
    expect(cla.endpoints.map((l: J) => [l.locality, l.load_balancing_weight])).to.deep.equal([
      [{ region: "eu", zone: "z1" }, 4],
      [{ region: "eu", zone: "z2" }, 1],
    ]);
    const first = cla.endpoints[0].lb_endpoints[0];
    expect(first).to.deep.include({ health_status: "HEALTHY", load_balancing_weight: 3 });
    expect(first.endpoint.address.socket_address).to.deep.equal({ address: "10.0.1.1", port_value: 8080 });
  });

  it("serves an empty ClusterLoadAssignment for an EDS cluster without endpoints", () => {
    expect(byName(g.endpoints, "outbound|8080||empty.app.mesh")).to.deep.equal({ cluster_name: "outbound|8080||empty.app.mesh" });
  });

  it("only EDS clusters have ClusterLoadAssignments", () => {
    expect([...g.endpoints.keys()].sort()).to.deep.equal(["outbound|8080||empty.app.mesh", "outbound|8080||static.app.mesh"]);
  });

  it("gRPC: EDS and single-endpoint LOGICAL_DNS only, ROUND_ROBIN, no NONE-resolution cluster", () => {
    const gg = generate(snap, grpcView("app"));
    expect(gg.clusters.has("outbound|5432||db.app.mesh")).to.equal(false);
    expect(gg.clusters.has("PassthroughCluster")).to.equal(false);
    for (const c of gg.clusters.values() as Iterable<J>) {
      expect(["EDS", "LOGICAL_DNS"]).to.include(c.type);
      expect(c.lb_policy).to.equal("ROUND_ROBIN");
    }
    const dns = byName(gg.clusters, "outbound|443||dns.example.com");
    expect(dns.type).to.equal("LOGICAL_DNS");
    expect(dns.load_assignment.endpoints).to.have.length(1);
    expect(dns.load_assignment.endpoints[0].lb_endpoints).to.have.length(1);
  });
});

describe("generators: mTLS", () => {
  const snap = snapshotOf({ "app.yaml": RESOLUTIONS });

  it("MESH_INTERNAL with identities: automatic ISTIO_MUTUAL, SANs = subjectAltNames + workload SPIFFE ids", () => {
    const c = byName(generate(snap, sidecarView("app")).clusters, "outbound|8080||static.app.mesh");
    expect(c.transport_socket_matches.map((m: J) => m.name)).to.deep.equal(["tlsMode-istio", "tlsMode-disabled"]);
    const tls = c.transport_socket_matches[0].transport_socket.typed_config;
    expect(tls.sni).to.equal("outbound_.8080_._.static.app.mesh");
    const ctx = tls.common_tls_context;
    expect(ctx.tls_certificate_sds_secret_configs[0].name).to.equal("default");
    expect(ctx.combined_validation_context.validation_context_sds_secret_config.name).to.equal("ROOTCA");
    expect(ctx.combined_validation_context.default_validation_context.match_typed_subject_alt_names).to.deep.equal([
      { san_type: "URI", matcher: { exact: "spiffe://cluster.local/ns/app/sa/orders" } },
      { san_type: "URI", matcher: { exact: "spiffe://cluster.local/ns/app/sa/orders-canary" } },
      { san_type: "URI", matcher: { exact: "spiffe://legacy.example/orders" } },
    ]);
    // Only identity-bearing endpoints are tagged for the mTLS transport socket.
    const cla = byName(generate(snap, sidecarView("app")).endpoints, "outbound|8080||static.app.mesh");
    const tagged = cla.endpoints.flatMap((l: J) => l.lb_endpoints).map((e: J) => [e.endpoint.address.socket_address.address, !!e.metadata]);
    expect(tagged).to.deep.equal([["10.0.1.1", true], ["10.0.1.3", true], ["10.0.1.2", false]]);
  });

  it("references the agent's file-based SDS secrets when the proxy announces SDS_PATHS", () => {
    const view = { ...sidecarView("app"), sdsPaths: { default: "/var/lib/vmpilot/default.sds.yaml", ROOTCA: "/var/lib/vmpilot/ROOTCA.sds.yaml" } };
    const c = byName(generate(snap, view).clusters, "outbound|8080||static.app.mesh");
    const ctx = c.transport_socket_matches[0].transport_socket.typed_config.common_tls_context;
    expect(ctx.tls_certificate_sds_secret_configs[0].sds_config).to.deep.equal({ path_config_source: { path: "/var/lib/vmpilot/default.sds.yaml" }, resource_api_version: "V3" });
    expect(ctx.combined_validation_context.validation_context_sds_secret_config.sds_config.path_config_source.path).to.equal("/var/lib/vmpilot/ROOTCA.sds.yaml");
  });

  it("MESH_EXTERNAL never gets automatic mTLS, even with identities", () => {
    const ext = snapshotOf({
      "x.yaml": SE("ext", "app", `  hosts: [ext.example.com]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{ number: 443, name: tls, protocol: TLS }]
  endpoints: [{ address: 192.0.2.10, serviceAccount: ext }]`),
    });
    const c = byName(generate(ext, sidecarView("app")).clusters, "outbound|443||ext.example.com");
    expect(c.transport_socket).to.equal(undefined);
    expect(c.transport_socket_matches).to.equal(undefined);
  });

  it("a DestinationRule's TLS mode overrides: DISABLE, MUTUAL with files; gRPC gets certificate-provider mTLS", () => {
    const s = snapshotOf({
      "app.yaml": RESOLUTIONS,
      "dr.yaml": `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: static, namespace: app }
spec:
  host: static.app.mesh
  trafficPolicy: { tls: { mode: DISABLE } }
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: dns, namespace: app }
spec:
  host: dns.example.com
  trafficPolicy:
    tls: { mode: MUTUAL, clientCertificate: /etc/certs/c.pem, privateKey: /etc/certs/k.pem, caCertificates: /etc/certs/ca.pem }
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: empty, namespace: app }
spec:
  host: empty.app.mesh
  trafficPolicy: { tls: { mode: ISTIO_MUTUAL, subjectAltNames: [spiffe://cluster.local/ns/app/sa/empty] } }`,
    });
    const g = generate(s, sidecarView("app"));
    const st = byName(g.clusters, "outbound|8080||static.app.mesh");
    expect(st.transport_socket).to.equal(undefined);
    expect(st.transport_socket_matches).to.equal(undefined);
    const m = byName(g.clusters, "outbound|443||dns.example.com").transport_socket.typed_config;
    expect(m.sni).to.equal("dns.example.com");
    expect(m.common_tls_context.tls_certificates[0]).to.deep.equal({ certificate_chain: { filename: "/etc/certs/c.pem" }, private_key: { filename: "/etc/certs/k.pem" } });
    expect(m.common_tls_context.validation_context.trusted_ca.filename).to.equal("/etc/certs/ca.pem");
    const gg = generate(s, grpcView("app"));
    const grpcTls = byName(gg.clusters, "outbound|8080||empty.app.mesh").transport_socket.typed_config.common_tls_context;
    expect(grpcTls.tls_certificate_provider_instance.instance_name).to.equal("default");
    expect(grpcTls.validation_context.ca_certificate_provider_instance.instance_name).to.equal("default");
    expect(grpcTls.validation_context.match_subject_alt_names).to.deep.equal([{ exact: "spiffe://cluster.local/ns/app/sa/empty" }]);
    // File-based MUTUAL cannot be expressed to a gRPC client: the cluster is left out rather than sent in plaintext.
    expect(gg.clusters.has("outbound|443||dns.example.com")).to.equal(false);
    // gRPC does no automatic mTLS: static's endpoints have identities but no rule asks for it.
    const auto = generate(snapshotOf({ "app.yaml": RESOLUTIONS }), grpcView("app"));
    expect(byName(auto.clusters, "outbound|8080||static.app.mesh").transport_socket).to.equal(undefined);
  });
});

const TRAFFIC = `${SE("reviews", "shop", `  hosts: [reviews.shop.mesh]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 9080, name: http, protocol: HTTP }]
  endpoints:
  - { address: 10.1.0.1, labels: { version: v1 } }
  - { address: 10.1.0.2, labels: { version: v2 } }
  - { address: 10.1.0.3, labels: { version: v3 } }`)}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: reviews, namespace: shop }
spec:
  host: reviews.shop.mesh
  trafficPolicy:
    loadBalancer: { consistentHash: { httpHeaderName: x-user } }
    connectionPool: { tcp: { maxConnections: 10, connectTimeout: 250ms }, http: { http2MaxRequests: 20, maxRequestsPerConnection: 5 } }
    outlierDetection: { consecutive5xxErrors: 3, interval: 5s, baseEjectionTime: 1m }
  subsets:
  - { name: v1, labels: { version: v1 } }
  - { name: v2, labels: { version: v2 }, trafficPolicy: { loadBalancer: { simple: RANDOM } } }
  - { name: v3, labels: { version: v3 } }
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: reviews, namespace: shop }
spec:
  hosts: [reviews.shop.mesh]
  http:
  - name: jason
    match: [{ headers: { end-user: { exact: jason } }, uri: { prefix: /api } }]
    fault: { abort: { httpStatus: 503, percentage: { value: 12.5 } }, delay: { fixedDelay: 1.5s } }
    route: [{ destination: { host: reviews.shop.mesh, subset: v2 } }]
  - name: only-for-testers
    match: [{ sourceLabels: { role: tester } }]
    route: [{ destination: { host: reviews.shop.mesh, subset: v3 } }]
  - name: moved
    match: [{ uri: { exact: /old } }]
    redirect: { uri: /new, redirectCode: 308 }
  - name: split
    timeout: 3s
    retries: { attempts: 4, perTryTimeout: 1s, retryOn: "5xx,unavailable,503" }
    route:
    - { destination: { host: reviews.shop.mesh, subset: v1 }, weight: 75 }
    - { destination: { host: reviews.shop.mesh, subset: v3 }, weight: 25 }
`;

describe("generators: DestinationRule policy and VirtualService routes", () => {
  const snap = snapshotOf({ "shop.yaml": TRAFFIC });
  const g = generate(snap, sidecarView("shop"));

  it("subset clusters with label-filtered endpoints and the subset's policy override", () => {
    const v2 = byName(g.clusters, "outbound|9080|v2|reviews.shop.mesh");
    expect(v2.lb_policy).to.equal("RANDOM");
    const base = byName(g.clusters, "outbound|9080||reviews.shop.mesh");
    expect(base.lb_policy).to.equal("RING_HASH");
    expect(base.connect_timeout).to.equal("0.250s");
    expect(base.circuit_breakers.thresholds[0]).to.include({ max_connections: 10, max_requests: 20 });
    expect(base.outlier_detection).to.deep.include({ consecutive_5xx: 3, interval: "5s", base_ejection_time: "60s", enforcing_success_rate: 0 });
    expect(base.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].common_http_protocol_options).to.deep.equal({ max_requests_per_connection: 5 });
    const cla = byName(g.endpoints, "outbound|9080|v2|reviews.shop.mesh");
    expect(cla.endpoints.flatMap((l: J) => l.lb_endpoints.map((e: J) => e.endpoint.address.socket_address.address))).to.deep.equal(["10.1.0.2"]);
  });

  it("route config `PORT` with virtual host `HOST:PORT` and the VirtualService's routes", () => {
    const rc = byName(g.routes, "9080");
    const vh = rc.virtual_hosts.find((v: J) => v.name === "reviews.shop.mesh:9080");
    expect(vh.domains).to.deep.equal(["reviews.shop.mesh", "reviews.shop.mesh:9080"]);
    // The sourceLabels route does not apply to a proxy without role=tester.
    expect(vh.routes.map((r: J) => r.name)).to.deep.equal(["jason", "moved", "split"]);
    const [jason, moved, split] = vh.routes;
    expect(jason.match).to.deep.equal({ prefix: "/api", headers: [{ name: "end-user", string_match: { exact: "jason" } }] });
    expect(jason.route.cluster).to.equal("outbound|9080|v2|reviews.shop.mesh");
    const fault = jason.typed_per_filter_config["envoy.filters.http.fault"];
    expect(fault.abort).to.deep.equal({ percentage: { numerator: 125000, denominator: "MILLION" }, http_status: 503 });
    expect(fault.delay.fixed_delay).to.equal("1.500s");
    expect(moved.redirect).to.deep.equal({ path_redirect: "/new", response_code: "PERMANENT_REDIRECT" });
    expect(split.route.weighted_clusters).to.deep.equal({
      clusters: [
        { name: "outbound|9080|v1|reviews.shop.mesh", weight: 75 },
        { name: "outbound|9080|v3|reviews.shop.mesh", weight: 25 },
      ],
    });
    expect(split.route.timeout).to.equal("3s");
    expect(split.route.retry_policy).to.deep.include({ retry_on: "5xx,unavailable,retriable-status-codes", num_retries: 4, per_try_timeout: "1s", retriable_status_codes: [503] });
  });

  it("applies sourceLabels against the proxy's labels", () => {
    const tester = generate(snap, sidecarView("shop", { labels: { role: "tester" } }));
    const vh = byName(tester.routes, "9080").virtual_hosts.find((v: J) => v.name === "reviews.shop.mesh:9080");
    expect(vh.routes.map((r: J) => r.name)).to.include("only-for-testers");
  });

  it("consistent hash: RING_HASH cluster and a header hash_policy on single-destination routes", () => {
    const vh = byName(g.routes, "9080").virtual_hosts[0];
    // jason routes to subset v2 whose own policy is RANDOM: no hash policy there.
    expect(vh.routes[0].route.hash_policy).to.equal(undefined);
    const noVs = generate(snapshotOf({ "shop.yaml": TRAFFIC.split("---\napiVersion: networking.istio.io/v1\nkind: VirtualService")[0]! }), sidecarView("shop"));
    const def = byName(noVs.routes, "9080").virtual_hosts[0].routes[0];
    expect(def.route.cluster).to.equal("outbound|9080||reviews.shop.mesh");
    expect(def.route.hash_policy).to.deep.equal([{ header: { header_name: "x-user" } }]);
    expect(def.route.retry_policy.num_retries).to.equal(2);
  });

  it("gRPC: listener HOST:PORT with fault filter then router, route config with HOST:PORT and HOST domains, route actions only", () => {
    const gg = generate(snap, grpcView("shop"));
    const l = byName(gg.listeners, "reviews.shop.mesh:9080");
    const hcm = l.api_listener.api_listener;
    expect(hcm.rds.route_config_name).to.equal("reviews.shop.mesh:9080");
    expect(hcm.http_filters.map((f: J) => f.name)).to.deep.equal(["envoy.filters.http.fault", "envoy.filters.http.router"]);
    const vh = byName(gg.routes, "reviews.shop.mesh:9080").virtual_hosts[0];
    expect(vh.domains).to.deep.equal(["reviews.shop.mesh:9080", "reviews.shop.mesh"]);
    expect(vh.routes.map((r: J) => r.name)).to.deep.equal(["jason", "split"]);
    const split = vh.routes[1].route;
    expect(split.max_stream_duration).to.deep.equal({ max_stream_duration: "3s", grpc_timeout_header_max: "3s" });
    expect(split.retry_policy).to.deep.equal({ retry_on: "unavailable", num_retries: 4 });
  });

  it("gRPC: no fault filter when no route injects faults", () => {
    const gg = generate(snapshotOf({ "app.yaml": RESOLUTIONS }), grpcView("app"));
    const hcm = byName(gg.listeners, "static.app.mesh:8080").api_listener.api_listener;
    expect(hcm.http_filters.map((f: J) => f.name)).to.deep.equal(["envoy.filters.http.router"]);
  });
});

describe("generators: listeners and outbound traffic policy", () => {
  it("ALLOW_ANY: virtualOutbound defaults to PassthroughCluster and HTTP falls through to allow_any", () => {
    const g = generate(snapshotOf({ "app.yaml": RESOLUTIONS }), sidecarView("app"));
    const vo = byName(g.listeners, "virtualOutbound");
    expect(vo.use_original_dst).to.equal(true);
    expect(vo.address.socket_address).to.deep.equal({ address: "0.0.0.0", port_value: 15001 });
    expect(vo.default_filter_chain.filters[0].typed_config.cluster).to.equal("PassthroughCluster");
    const rc = byName(g.routes, "8080");
    expect(rc.virtual_hosts.at(-1)).to.deep.include({ name: "allow_any", domains: ["*"] });
  });

  it("REGISTRY_ONLY (mesh-wide): BlackHoleCluster for TCP and a 502 block_all virtual host for HTTP", () => {
    const g = generate(snapshotOf({ "app.yaml": RESOLUTIONS }, { outboundTrafficPolicy: "REGISTRY_ONLY" }), sidecarView("app"));
    expect(byName(g.listeners, "virtualOutbound").default_filter_chain.filters[0].typed_config.cluster).to.equal("BlackHoleCluster");
    const block = byName(g.routes, "8080").virtual_hosts.at(-1);
    expect(block.name).to.equal("block_all");
    expect(block.routes[0].direct_response).to.deep.equal({ status: 502 });
  });

  it("per-port listeners: HTTP via RDS `PORT`, TLS by SNI, TCP by destination address", () => {
    const g = generate(snapshotOf({ "app.yaml": RESOLUTIONS }), sidecarView("app"));
    const http = byName(g.listeners, "0.0.0.0_8080");
    expect(http.bind_to_port).to.equal(false);
    expect(http.filter_chains[0].filters[0].typed_config.rds.route_config_name).to.equal("8080");
    const tls = byName(g.listeners, "0.0.0.0_443");
    expect(tls.listener_filters[0].name).to.equal("envoy.filters.listener.tls_inspector");
    expect(tls.filter_chains[0].filter_chain_match.server_names).to.deep.equal(["dns.example.com"]);
    expect(tls.filter_chains[0].filters[0].typed_config.cluster).to.equal("outbound|443||dns.example.com");
    const tcp = byName(g.listeners, "0.0.0.0_5432");
    expect(tcp.filter_chains[0].filter_chain_match.prefix_ranges).to.deep.equal([{ address_prefix: "10.50.0.0", prefix_len: 16 }]);
  });

  it("interception TPROXY: transparent capture listeners", () => {
    const g = generate(snapshotOf({ "app.yaml": RESOLUTIONS }), sidecarView("app", { interceptionMode: "TPROXY", ips: ["10.0.1.1"] }));
    expect(byName(g.listeners, "virtualOutbound").transparent).to.equal(true);
    expect(byName(g.listeners, "virtualInbound").transparent).to.equal(true);
    expect(byName(generate(snapshotOf({ "app.yaml": RESOLUTIONS }), sidecarView("app")).listeners, "virtualOutbound").transparent).to.equal(undefined);
  });

  it("interception NONE: no capture listeners", () => {
    const g = generate(snapshotOf({ "app.yaml": RESOLUTIONS }), sidecarView("app", { interceptionMode: "NONE" }));
    expect(g.listeners.size).to.equal(0);
    expect(g.clusters.size).to.be.greaterThan(0);
  });

  it("inbound: clusters and virtualInbound chains for the proxy's own workload ports", () => {
    const snap = snapshotOf({
      "app.yaml": `${SE("api", "app", `  hosts: [api.app.mesh]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 80, name: http, protocol: HTTP, targetPort: 8080 }, { number: 9000, name: admin, protocol: TCP }]
  workloadSelector: { labels: { app: api } }`)}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: api-1, namespace: app }
spec: { address: 10.2.0.7, labels: { app: api }, ports: { admin: 9001 }, serviceAccount: api }`,
    });
    const g = generate(snap, sidecarView("app", { ips: ["10.2.0.7"], labels: { app: "api" } }));
    expect(byName(g.clusters, "inbound|8080||").load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address).to.deep.equal({ address: "127.0.0.1", port_value: 8080 });
    expect(g.clusters.has("inbound|9001||")).to.equal(true);
    const vi = byName(g.listeners, "virtualInbound");
    expect(vi.address.socket_address.port_value).to.equal(15006);
    expect(vi.filter_chains.map((c: J) => c.filter_chain_match.destination_port)).to.deep.equal([8080, 9001]);
    // The same proxy identified by workload name instead of IP.
    const byWl = generate(snap, sidecarView("app", { workloadName: "api-1" }));
    expect(byWl.clusters.has("inbound|8080||")).to.equal(true);
    // Another proxy has no inbound clusters.
    expect([...generate(snap, sidecarView("app", { ips: ["10.9.9.9"] })).clusters.keys()].some((k) => k.startsWith("inbound|"))).to.equal(false);
  });
});
describe("generators: visibility", () => {
  const files = {
    "vis.yaml": [
      SE("private", "team-a", `  hosts: [private.team-a.mesh]
  location: MESH_INTERNAL
  resolution: STATIC
  exportTo: ["."]
  ports: [{ number: 8080, name: http, protocol: HTTP }]`),
      SE("shared", "team-a", `  hosts: [shared.team-a.mesh]
  location: MESH_INTERNAL
  resolution: STATIC
  exportTo: ["team-b"]
  ports: [{ number: 8080, name: http, protocol: HTTP }]`),
      SE("public", "team-c", `  hosts: [public.team-c.mesh]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 7070, name: http, protocol: HTTP }]`),
    ].join("\n---\n"),
  };

  const hosts = (g: GeneratedResources): string[] =>
    [...g.clusters.keys()].filter((k) => k.startsWith("outbound|")).map((k) => k.split("|")[3]!).sort();

  it("exportTo hides services from other namespaces", () => {
    const snap = snapshotOf(files);
    expect(hosts(generate(snap, sidecarView("team-a")))).to.deep.equal(["private.team-a.mesh", "public.team-c.mesh"]);
    expect(hosts(generate(snap, sidecarView("team-b")))).to.deep.equal(["public.team-c.mesh", "shared.team-a.mesh"]);
    expect(hosts(generate(snap, grpcView("team-z")))).to.deep.equal(["public.team-c.mesh"]);
  });

  it("a Sidecar's egress hosts shrink what its proxies see; its outboundTrafficPolicy overrides the mesh's", () => {
    const snap = snapshotOf({
      ...files,
      "sidecar.yaml": `apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: { name: default, namespace: team-b }
spec:
  egress: [{ hosts: ["./*", "team-c/public.team-c.mesh"] }]
  outboundTrafficPolicy: { mode: REGISTRY_ONLY }
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: { name: frontend, namespace: team-b }
spec:
  workloadSelector: { labels: { app: frontend } }
  egress: [{ hosts: ["team-a/*"] }]`,
    });
    const plain = generate(snap, sidecarView("team-b"));
    expect(hosts(plain)).to.deep.equal(["public.team-c.mesh"]);
    expect(byName(plain.listeners, "virtualOutbound").default_filter_chain.filters[0].typed_config.cluster).to.equal("BlackHoleCluster");
    const frontend = generate(snap, sidecarView("team-b", { labels: { app: "frontend" } }));
    expect(hosts(frontend)).to.deep.equal(["shared.team-a.mesh"]);
    expect(byName(frontend.listeners, "virtualOutbound").default_filter_chain.filters[0].typed_config.cluster).to.equal("PassthroughCluster");
    expect(plain.listeners.has("0.0.0.0_8080")).to.equal(false);
  });

  it("DestinationRule precedence: the proxy's namespace, then the service's", () => {
    const snap = snapshotOf({
      ...files,
      "dr.yaml": `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: svc-ns, namespace: team-c }
spec: { host: public.team-c.mesh, trafficPolicy: { loadBalancer: { simple: RANDOM } } }
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: client-ns, namespace: team-b }
spec: { host: "*.team-c.mesh", trafficPolicy: { loadBalancer: { simple: ROUND_ROBIN } } }`,
    });
    expect(byName(generate(snap, sidecarView("team-b")).clusters, "outbound|7070||public.team-c.mesh").lb_policy).to.equal("ROUND_ROBIN");
    expect(byName(generate(snap, sidecarView("team-a")).clusters, "outbound|7070||public.team-c.mesh").lb_policy).to.equal("RANDOM");
  });
});

describe("generators: the gRPC views of these configs pass grpc-js-xds's validation", () => {
  const validators = grpcValidators();
  for (const [what, files, ns] of [
    ["resolutions", { "app.yaml": RESOLUTIONS }, "app"],
    ["traffic management", { "shop.yaml": TRAFFIC }, "shop"],
  ] as const) {
    it(what, function () {
      if (!validators) {
        console.log("      grpc-js-xds validators unavailable: skipped");
        return this.skip();
      }
      const g = generate(snapshotOf(files), grpcView(ns));
      expect(validateWithGrpcJsXds(validators, g)).to.deep.equal([]);
    });
  }
});
