// Gateway credentials on VMs: a gateway whose agent announced CREDENTIAL_SDS_CLUSTER gets its credentialName
// secrets (`NAME`, `NAME-cacert`) from the agent's SDS server over gRPC (api_config_source through that bootstrap
// cluster), never from file-based SDS: Envoy rejects a whole LDS update when a path_config_source file is missing,
// while a gRPC SDS name nobody serves only keeps its own listener warming. Resources are encoded and decoded with
// the real Envoy protos (canonicalResources).
import { expect } from "chai";
import { ResourceCache } from "../src/cache.js";
import { generate } from "../src/generators/index.js";
import { decodeToJson } from "../src/protojson.js";
import { TypeUrl, typeNameOfUrl } from "../src/protos.js";
import { proxyViewFromNode, type ProxyView } from "../src/proxy-view.js";
import { canonicalResources, fixtureFiles } from "./fixtures/gateway/golden.js";
import { examplesSnapshot, snapshotOf } from "./fixtures/snapshots.js";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const LABELS = { istio: "ingressgateway" };
const AGENT_SDS = {
  api_config_source: { api_type: "GRPC", transport_api_version: "V3", grpc_services: [{ envoy_grpc: { cluster_name: "sds-grpc" } }], set_node_on_first_message_only: true },
  resource_api_version: "V3",
};
const ADS = { ads: {}, resource_api_version: "V3" };

function gateway(metadata: Record<string, unknown> = {}, id = "router~10.0.0.9~ingress-1.bookinfo~bookinfo.svc.cluster.local"): ProxyView {
  return proxyViewFromNode({ id, metadata: { LABELS, ...metadata } });
}

function chainFor(listener: Json, host: string): Json {
  const chain = (listener.filter_chains as Json[]).find((c) => c.filter_chain_match?.server_names?.includes(host));
  expect(chain, `the chain of ${host}`).to.exist;
  return chain!.transport_socket.typed_config.common_tls_context;
}

const sdsChain = (listener: Json): Json => chainFor(listener, "api.bookinfo.com");

/** Every config source of an SDS secret reference in a resource, with the secret name. */
function sdsReferences(resource: unknown, out: { name: string; source: Json }[] = []): { name: string; source: Json }[] {
  if (Array.isArray(resource)) for (const r of resource) sdsReferences(r, out);
  else if (resource && typeof resource === "object") {
    const o = resource as Json;
    if (typeof o.name === "string" && o.sds_config) out.push({ name: o.name, source: o.sds_config });
    for (const v of Object.values(o)) sdsReferences(v, out);
  }
  return out;
}

describe("gateway credentials served by the agent's SDS server (CREDENTIAL_SDS_CLUSTER)", () => {
  const snapshot = snapshotOf(fixtureFiles("services.yaml", "ingress-mutual.yaml"));

  it("parses CREDENTIAL_SDS_CLUSTER for gateways only", () => {
    expect(gateway({ CREDENTIAL_SDS_CLUSTER: "sds-grpc" }).credentialSdsCluster).to.equal("sds-grpc");
    expect(gateway().credentialSdsCluster).to.equal(undefined);
    const sidecar = proxyViewFromNode({ id: "sidecar~10.0.0.5~vm.bookinfo~bookinfo.svc.cluster.local", metadata: { CREDENTIAL_SDS_CLUSTER: "sds-grpc" } });
    expect(sidecar.credentialSdsCluster).to.equal(undefined);
  });

  it("references NAME and NAME-cacert through the announced cluster over gRPC; mesh and file credentials are unchanged", () => {
    const view = gateway({ CREDENTIAL_SDS_CLUSTER: "sds-grpc", SDS_PATHS: { default: "/var/lib/vmpilot/agent/default.sds.yaml", ROOTCA: "/var/lib/vmpilot/agent/ROOTCA.sds.yaml" } });
    const c = canonicalResources(generate(snapshot, view));
    const tls = sdsChain(c.listeners["0.0.0.0_443"]);
    expect(tls.tls_certificate_sds_secret_configs).to.deep.equal([{ name: "partner-cred", sds_config: AGENT_SDS }]);
    expect(tls.combined_validation_context.validation_context_sds_secret_config).to.deep.equal({ name: "partner-cred-cacert", sds_config: AGENT_SDS });
    // Files and ISTIO_MUTUAL servers are untouched: the mesh identity stays on the agent's always-present files.
    const files = chainFor(c.listeners["0.0.0.0_443"], "partner.bookinfo.com");
    expect(files.tls_certificates[0].certificate_chain).to.deep.equal({ filename: "/etc/vmpilot/gateway/partner.crt" });
    const mesh = c.listeners["0.0.0.0_15443"].filter_chains[0].transport_socket.typed_config.common_tls_context;
    expect(mesh.tls_certificate_sds_secret_configs[0]).to.deep.equal({ name: "default", sds_config: { path_config_source: { path: "/var/lib/vmpilot/agent/default.sds.yaml" }, resource_api_version: "V3" } });
  });

  it("never points a credentialName at a file, whatever the name (a missing file would make Envoy reject every listener)", () => {
    const odd = snapshotOf({
      ...fixtureFiles("services.yaml", "ingress-mutual.yaml"),
      "ingress-mutual.yaml": fixtureFiles("ingress-mutual.yaml")["ingress-mutual.yaml"]!.replace("credentialName: partner-cred", 'credentialName: "kubernetes://partner-cred"'),
    });
    const c = canonicalResources(generate(odd, gateway({ CREDENTIAL_SDS_CLUSTER: "sds-grpc" })));
    const refs = sdsReferences(c.listeners).filter((r) => r.name !== "default" && r.name !== "ROOTCA");
    expect(refs.map((r) => r.name).sort()).to.deep.equal(["kubernetes://partner-cred", "kubernetes://partner-cred-cacert"]);
    for (const r of refs) expect(r.source).to.deep.equal(AGENT_SDS);
  });

  it("keeps ADS for gateways that did not announce the cluster (an operator's own SDS server)", () => {
    const tls = sdsChain(canonicalResources(generate(snapshot, gateway())).listeners["0.0.0.0_443"]);
    expect(tls.tls_certificate_sds_secret_configs[0].sds_config).to.deep.equal(ADS);
    expect(tls.combined_validation_context.validation_context_sds_secret_config.sds_config).to.deep.equal(ADS);
  });

  it("ignores the CREDENTIAL_SDS_DIR of older agents (their file paths are what this replaces)", () => {
    const tls = sdsChain(canonicalResources(generate(snapshot, gateway({ CREDENTIAL_SDS_DIR: "/var/lib/vmpilot/agent/credentials" }))).listeners["0.0.0.0_443"]);
    expect(tls.tls_certificate_sds_secret_configs[0].sds_config).to.deep.equal(ADS);
  });

  it("serves the example storefront gateway (config/examples/shop): TLS for www.shop.example from the agent's SDS, HTTP redirected", () => {
    const view = proxyViewFromNode({ id: "router~10.0.3.5~storefront-gw-1.shop~shop.svc.cluster.local", metadata: { LABELS: { istio: "ingressgateway" }, CREDENTIAL_SDS_CLUSTER: "sds-grpc" } });
    const c = canonicalResources(generate(examplesSnapshot(), view));
    expect(Object.keys(c.listeners).sort()).to.deep.equal(["0.0.0.0_443", "0.0.0.0_80"]);
    const tls = chainFor(c.listeners["0.0.0.0_443"], "www.shop.example");
    expect(tls.tls_certificate_sds_secret_configs).to.deep.equal([{ name: "storefront-tls", sds_config: AGENT_SDS }]);
    // The 80 listener does not depend on the credential at all.
    expect(sdsReferences(c.listeners["0.0.0.0_80"])).to.deep.equal([]);
    const https = c.routes["https.443.https.storefront.shop"].virtual_hosts[0];
    expect(https.domains).to.include("www.shop.example");
    expect(https.routes[0].match.prefix).to.equal("/api/catalog/");
    expect(https.routes[0].route).to.deep.include({ cluster: "outbound|8080||catalog.shop.mesh.internal", prefix_rewrite: "/" });
    expect(c.routes["http.80"].virtual_hosts[0].require_tls).to.equal("ALL");
  });

  it("shares listeners from the ResourceCache between gateways on the agent's SDS, apart from those without it", () => {
    const cache = new ResourceCache();
    cache.update(snapshot);
    const sourceOf = (view: ProxyView): Json => {
      const bytes = cache.resources(view, TypeUrl.Listener).get("0.0.0.0_443")!.bytes;
      const l = decodeToJson(typeNameOfUrl(TypeUrl.Listener), bytes) as Json;
      return sdsChain(l).tls_certificate_sds_secret_configs[0].sds_config;
    };
    const a = gateway({ CREDENTIAL_SDS_CLUSTER: "sds-grpc" });
    const b = gateway({ CREDENTIAL_SDS_CLUSTER: "sds-grpc" }, "router~10.0.0.10~ingress-2.bookinfo~bookinfo.svc.cluster.local");
    expect(sourceOf(a)).to.deep.equal(AGENT_SDS);
    expect(cache.resources(b, TypeUrl.Listener).get("0.0.0.0_443")).to.equal(cache.resources(a, TypeUrl.Listener).get("0.0.0.0_443"));
    expect(sourceOf(gateway({}, "router~10.0.0.11~ingress-3.bookinfo~bookinfo.svc.cluster.local"))).to.deep.equal(ADS);
  });
});
