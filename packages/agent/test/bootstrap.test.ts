import { createRequire } from "node:module";
import { expect } from "chai";
import { parse as parseYaml, stringify as toYaml } from "yaml";
import { decodeToJson, encodeJson } from "@vmpilot/xds/protojson";
import { proxyViewFromNode } from "@vmpilot/xds/proxy-view";
import { buildSnapshot, DEFAULT_MESH, parseDocuments } from "@vmpilot/registry";
import { generate } from "@vmpilot/xds/generators/index";
import { credentialSdsSocket, envoyArgs, envoyBootstrap, sdsRootCa, sdsTlsCertificate } from "../src/bootstrap/envoy.js";
import { grpcBootstrap } from "../src/bootstrap/grpc.js";
import { config } from "./fixtures.js";

const BOOTSTRAP = "envoy.config.bootstrap.v3.Bootstrap";
const require = createRequire(import.meta.url);

type J = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** Strict encode (unknown fields, bad enums, wrong shapes throw) then decode back to canonical JSON. */
function strictBootstrap(json: unknown): J {
  return decodeToJson(BOOTSTRAP, encodeJson(BOOTSTRAP, json)) as J;
}

describe("Envoy bootstrap", () => {
  const combos: { name: string; extra: string; kind?: "gateway" }[] = [];
  for (const transport of ["GRPC", "DELTA_GRPC"]) {
    for (const mode of ["REDIRECT", "NONE"]) {
      for (const group of [undefined, "reviews"]) {
        combos.push({
          name: `sidecar, ${transport}, ${mode}${group ? ", auto-register" : ""}`,
          extra: `proxy:\n  xdsTransport: ${transport}\ninterception:\n  mode: ${mode}\n${group ? `autoRegisterGroup: ${group}\n` : ""}`,
        });
      }
    }
    combos.push({ name: `gateway, ${transport}`, extra: `proxy:\n  kind: gateway\n  xdsTransport: ${transport}\n`, kind: "gateway" });
  }

  for (const combo of combos) {
    it(`decodes strictly as envoy.config.bootstrap.v3.Bootstrap: ${combo.name}`, () => {
      const cfg = config(combo.extra);
      const json = envoyBootstrap(cfg);
      const back = strictBootstrap(json);
      // Nothing was dropped or reshaped on the way through the real protos.
      expect(back.node.id).to.equal(`${combo.kind === "gateway" ? "router" : "sidecar"}~10.0.0.5~reviews-vm-1.shop~shop.svc.cluster.local`);
      expect(back.dynamic_resources.ads_config).to.deep.equal({
        api_type: cfg.proxy.xdsTransport,
        transport_api_version: "V3",
        grpc_services: [{ envoy_grpc: { cluster_name: "xds-grpc" } }],
        set_node_on_first_message_only: true,
      });
      expect(back.dynamic_resources.lds_config).to.deep.equal({ ads: {}, resource_api_version: "V3" });
      expect(back.dynamic_resources.cds_config).to.deep.equal({ ads: {}, resource_api_version: "V3" });
      const md = back.node.metadata;
      expect(md).to.deep.include({ NAMESPACE: "shop", SERVICE_ACCOUNT: "reviews", WORKLOAD_NAME: "reviews-vm-1", INSTANCE_IPS: "10.0.0.5" });
      expect(md.LABELS).to.deep.equal({ app: "reviews", version: "v1" });
      expect(md.PROXY_KIND).to.equal(combo.kind ?? "sidecar");
      expect(md.INTERCEPTION_MODE).to.equal(combo.kind === "gateway" ? "NONE" : cfg.interception.mode);
      if (cfg.autoRegisterGroup) expect(md.AUTO_REGISTER_GROUP).to.equal("reviews");
      else expect(md).not.to.have.property("AUTO_REGISTER_GROUP");
      expect(md.SDS_PATHS).to.deep.equal({ default: "/var/lib/vmpilot/agent/default.sds.yaml", ROOTCA: "/var/lib/vmpilot/agent/ROOTCA.sds.yaml" });

      // The control plane's own parser reads what we wrote.
      const view = proxyViewFromNode(back.node);
      expect(view).to.deep.include({ kind: combo.kind ?? "sidecar", namespace: "shop", serviceAccount: "reviews", workloadName: "reviews-vm-1" });
      expect(view.ips).to.deep.equal(["10.0.0.5"]);
      expect(view.interceptionMode).to.equal(md.INTERCEPTION_MODE);
      expect(view.autoRegisterGroup).to.equal(cfg.autoRegisterGroup);
      // The control plane points clusters at the agent's SDS files, so it must read where they are.
      expect(view.sdsPaths).to.deep.equal(md.SDS_PATHS);
      // A gateway's credentialName secrets come from the agent's SDS socket through sds-grpc; a sidecar has neither.
      const sdsGrpc = back.static_resources.clusters.filter((c: J) => c.name === "sds-grpc");
      if (combo.kind === "gateway") {
        expect(md.CREDENTIAL_SDS_CLUSTER).to.equal("sds-grpc");
        expect(view.credentialSdsCluster).to.equal("sds-grpc");
        expect(sdsGrpc).to.have.length(1);
      } else {
        expect(md).not.to.have.property("CREDENTIAL_SDS_CLUSTER");
        expect(sdsGrpc).to.deep.equal([]);
      }
    });
  }

  it("connects to the control plane over HTTP/2 + mTLS, verifying its SAN, with file-based SDS secrets", () => {
    const back = strictBootstrap(envoyBootstrap(config()));
    const xds = back.static_resources.clusters.find((c: J) => c.name === "xds-grpc");
    expect(xds.type).to.equal("STRICT_DNS");
    expect(xds.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address).to.deep.equal({ address: "cp.mesh.internal", port_value: 15012 });
    expect(xds.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].explicit_http_config).to.have.property("http2_protocol_options");
    const tls = xds.transport_socket.typed_config;
    expect(tls["@type"]).to.equal("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext");
    expect(tls.sni).to.equal("cp.mesh.internal");
    const ctx = tls.common_tls_context;
    expect(ctx.tls_certificate_sds_secret_configs).to.deep.equal([
      { name: "default", sds_config: { path_config_source: { path: "/var/lib/vmpilot/agent/default.sds.yaml" }, resource_api_version: "V3" } },
    ]);
    expect(ctx.combined_validation_context.default_validation_context.match_typed_subject_alt_names).to.deep.equal([
      { san_type: "URI", matcher: { exact: "spiffe://cluster.local/ns/vmpilot-system/sa/vmpilot" } },
    ]);
    expect(ctx.combined_validation_context.validation_context_sds_secret_config).to.deep.equal({
      name: "ROOTCA",
      sds_config: { path_config_source: { path: "/var/lib/vmpilot/agent/ROOTCA.sds.yaml" }, resource_api_version: "V3" },
    });
  });

  it("a gateway reaches the agent's SDS server as Istio's sds-grpc: HTTP/2 to a unix socket in the agent's private credentials directory", () => {
    const cfg = config("proxy:\n  kind: gateway\n");
    const back = strictBootstrap(envoyBootstrap(cfg));
    const sds = back.static_resources.clusters.find((c: J) => c.name === "sds-grpc");
    expect(credentialSdsSocket(cfg)).to.equal("/var/lib/vmpilot/agent/credentials/sds.sock");
    expect(sds).to.deep.include({ name: "sds-grpc", type: "STATIC", connect_timeout: "1s" });
    expect(sds.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address).to.deep.equal({ pipe: { path: "/var/lib/vmpilot/agent/credentials/sds.sock" } });
    expect(sds.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].explicit_http_config).to.deep.equal({ http2_protocol_options: {} });
  });

  it("agrees with the control plane: the gateway listeners generated for this node name only clusters the bootstrap has", () => {
    const gatewayYaml = `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: { name: gw, namespace: shop }
spec:
  selector: { app: reviews }
  servers:
  - port: { number: 443, name: https, protocol: HTTPS }
    hosts: [shop.example.com]
    tls: { mode: MUTUAL, credentialName: shop-cert }
  - port: { number: 15443, name: mesh, protocol: HTTPS }
    hosts: ["*"]
    tls: { mode: ISTIO_MUTUAL }
`;
    const parsed = parseDocuments("gw.yaml", gatewayYaml);
    expect(parsed.problems.filter((p) => p.severity === "error")).to.deep.equal([]);
    const snapshot = buildSnapshot(undefined, [{ objects: parsed.objects, problems: [], status: { name: "test", synced: true, stale: false } }], DEFAULT_MESH);
    const cfg = config("proxy:\n  kind: gateway\n");
    const back = strictBootstrap(envoyBootstrap(cfg));
    const listeners = generate(snapshot, proxyViewFromNode(back.node)).listeners;
    const sources = new Map<string, J>();
    const walk = (v: unknown): void => {
      if (Array.isArray(v)) v.forEach(walk);
      else if (v && typeof v === "object") {
        const o = v as J;
        if (typeof o.name === "string" && o.sds_config) sources.set(o.name, o.sds_config);
        Object.values(o).forEach(walk);
      }
    };
    for (const l of listeners.values()) walk(decodeToJson("envoy.config.listener.v3.Listener", encodeJson("envoy.config.listener.v3.Listener", l)));
    expect([...sources.keys()].sort()).to.deep.equal(["ROOTCA", "default", "shop-cert", "shop-cert-cacert"]);
    const clusterNames = new Set(back.static_resources.clusters.map((c: J) => c.name));
    for (const name of ["shop-cert", "shop-cert-cacert"]) {
      const grpcServices = sources.get(name)!.api_config_source.grpc_services as J[];
      expect(clusterNames.has(grpcServices[0]!.envoy_grpc.cluster_name), `${name} names a bootstrap cluster`).to.equal(true);
    }
    // The mesh identity stays on the agent's files (always present before Envoy starts).
    expect(sources.get("default")).to.deep.equal({ path_config_source: { path: cfg.output.sdsDefaultFile }, resource_api_version: "V3" });
  });

  it("uses a STATIC xds-grpc cluster (no SNI) for an IP control plane and honours a custom SAN", () => {
    const back = strictBootstrap(envoyBootstrap(config("", { VMPILOT_AGENT_CONTROL_PLANE_ADDRESS: "192.0.2.10:15012", VMPILOT_AGENT_CONTROL_PLANE_SAN: "spiffe://corp/cp" })));
    const xds = back.static_resources.clusters.find((c: J) => c.name === "xds-grpc");
    expect(xds.type).to.equal("STATIC");
    expect(xds.transport_socket.typed_config).not.to.have.property("sni");
    expect(xds.transport_socket.typed_config.common_tls_context.combined_validation_context.default_validation_context.match_typed_subject_alt_names[0].matcher.exact).to.equal("spiffe://corp/cp");
  });

  it("serves admin on 127.0.0.1:15000, Prometheus on 15090 and readiness on 15021 (routed to the agent)", () => {
    const back = strictBootstrap(envoyBootstrap(config("status:\n  address: 127.0.0.9:25020\n")));
    expect(back.admin.address.socket_address).to.deep.equal({ address: "127.0.0.1", port_value: 15000 });
    const byPort = new Map(back.static_resources.listeners.map((l: J) => [l.address.socket_address.port_value, l]));
    const route = (port: number) => (byPort.get(port) as J).filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].routes[0];
    expect(route(15090)).to.deep.equal({ match: { prefix: "/stats/prometheus" }, route: { cluster: "prometheus_stats" } });
    expect(route(15021)).to.deep.equal({ match: { prefix: "/healthz/ready" }, route: { cluster: "agent" } });
    const agent = back.static_resources.clusters.find((c: J) => c.name === "agent");
    expect(agent.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address).to.deep.equal({ address: "127.0.0.9", port_value: 25020 });
    expect(back.layered_runtime.layers.map((l: J) => l.name)).to.deep.equal(["global_config", "admin"]);
    expect(back.stats_config.stats_tags).to.deep.equal([
      { tag_name: "vmpilot_namespace", fixed_value: "shop" },
      { tag_name: "vmpilot_workload", fixed_value: "reviews-vm-1" },
    ]);
  });

  it("starts Envoy with the bootstrap, drain and shutdown times", () => {
    const args = envoyArgs(config("proxy:\n  drainDuration: 5s\n  parentShutdownDuration: 10s\n  concurrency: 2\n"), "/x/envoy.json");
    expect(args.slice(0, 6)).to.deep.equal(["-c", "/x/envoy.json", "--drain-time-s", "5", "--parent-shutdown-time-s", "10"]);
    expect(args).to.include.members(["--concurrency", "2", "--disable-hot-restart"]);
  });

  it("writes file-based SDS resources that decode as DiscoveryResponse with one Secret each", () => {
    for (const [doc, name, field] of [
      [sdsTlsCertificate("-----KEY-----\n", "-----CHAIN-----\n"), "default", "tls_certificate"],
      [sdsRootCa("-----ROOT-----\n"), "ROOTCA", "validation_context"],
    ] as const) {
      // Round-trip through YAML as the agent writes it and Envoy reads it.
      const json = parseYaml(toYaml(doc));
      const back = decodeToJson("envoy.service.discovery.v3.DiscoveryResponse", encodeJson("envoy.service.discovery.v3.DiscoveryResponse", json)) as J;
      expect(back.resources).to.have.length(1);
      expect(back.resources[0]["@type"]).to.equal("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret");
      expect(back.resources[0].name).to.equal(name);
      expect(back.resources[0]).to.have.property(field);
    }
    const back = decodeToJson("envoy.service.discovery.v3.DiscoveryResponse", encodeJson("envoy.service.discovery.v3.DiscoveryResponse", sdsTlsCertificate("K", "C"))) as J;
    expect(back.resources[0].tls_certificate).to.deep.equal({ certificate_chain: { inline_string: "C" }, private_key: { inline_string: "K" } });
  });
});

describe("gRPC xDS bootstrap", () => {
  it("is accepted by @grpc/grpc-js-xds's own bootstrap validator", () => {
    const { validateBootstrapConfig } = require("@grpc/grpc-js-xds/build/src/xds-bootstrap.js");
    const cfg = config("proxy:\n  kind: both\nautoRegisterGroup: reviews\n");
    const json = grpcBootstrap(cfg);
    const info = validateBootstrapConfig(JSON.parse(JSON.stringify(json)));
    expect(info.xdsServers).to.deep.equal([{ server_uri: "unix:///var/lib/vmpilot/agent/xds.sock", channel_creds: [{ type: "insecure", config: undefined }], server_features: ["xds_v3"] }]);
    expect(info.node.id).to.equal("grpc~10.0.0.5~reviews-vm-1.shop~shop.svc.cluster.local");
    expect(info.serverListenerResourceNameTemplate).to.equal("grpc/server?xds.resource.listening_address=%s");
    expect(info.certificateProviders.default).to.deep.equal({
      pluginName: "file_watcher",
      config: {
        certificateFile: "/var/lib/vmpilot/agent/cert-chain.pem",
        privateKeyFile: "/var/lib/vmpilot/agent/key.pem",
        caCertificateFile: "/var/lib/vmpilot/agent/root-cert.pem",
        refreshIntervalMs: 60000,
      },
    });
    const view = proxyViewFromNode(json.node as never);
    expect(view).to.deep.include({ kind: "grpc", namespace: "shop", serviceAccount: "reviews", workloadName: "reviews-vm-1", interceptionMode: "NONE", autoRegisterGroup: "reviews" });
    expect(view.labels).to.deep.equal({ app: "reviews", version: "v1" });
  });

  it("carries a configured xDS server and credentials through", () => {
    const { validateBootstrapConfig } = require("@grpc/grpc-js-xds/build/src/xds-bootstrap.js");
    const json = grpcBootstrap(config("grpc:\n  xdsServerUri: 127.0.0.1:15010\n  certRefreshInterval: 500ms\n"));
    const info = validateBootstrapConfig(JSON.parse(JSON.stringify(json)));
    expect(info.xdsServers[0].server_uri).to.equal("127.0.0.1:15010");
    expect(config("grpc:\n  xdsServerUri: 127.0.0.1:15010\n").grpc.xdsProxy).to.equal(false);
    expect(info.certificateProviders.default.config.refreshIntervalMs).to.equal(500);
  });
});
