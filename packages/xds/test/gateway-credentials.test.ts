// Gateway credentials on VMs: a gateway whose agent announced CREDENTIAL_SDS_DIR gets its credentialName secrets
// (`NAME`, `NAME-cacert`) from the agent's files (path_config_source), not over ADS where nothing serves them.
// Resources are encoded and decoded with the real Envoy protos (canonicalResources).
import { expect } from "chai";
import { ResourceCache } from "../src/cache.js";
import { generate } from "../src/generators/index.js";
import { decodeToJson } from "../src/protojson.js";
import { TypeUrl, typeNameOfUrl } from "../src/protos.js";
import { proxyViewFromNode, type ProxyView } from "../src/proxy-view.js";
import { canonicalResources, fixtureFiles } from "./fixtures/gateway/golden.js";
import { snapshotOf } from "./fixtures/snapshots.js";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const LABELS = { istio: "ingressgateway" };

function gateway(metadata: Record<string, unknown> = {}, id = "router~10.0.0.9~ingress-1.bookinfo~bookinfo.svc.cluster.local"): ProxyView {
  return proxyViewFromNode({ id, metadata: { LABELS, ...metadata } });
}

function sdsChain(listener: Json): Json {
  const chain = (listener.filter_chains as Json[]).find((c) => c.filter_chain_match?.server_names?.includes("api.bookinfo.com"));
  expect(chain, "the credentialName server's chain").to.exist;
  return chain!.transport_socket.typed_config.common_tls_context;
}

describe("gateway credentials served by the agent's file-based SDS (CREDENTIAL_SDS_DIR)", () => {
  const snapshot = snapshotOf(fixtureFiles("services.yaml", "ingress-mutual.yaml"));

  it("parses CREDENTIAL_SDS_DIR for gateways only", () => {
    expect(gateway({ CREDENTIAL_SDS_DIR: "/var/lib/vmpilot/agent/credentials" }).credentialSdsDir).to.equal("/var/lib/vmpilot/agent/credentials");
    expect(gateway().credentialSdsDir).to.equal(undefined);
    const sidecar = proxyViewFromNode({ id: "sidecar~10.0.0.5~vm.bookinfo~bookinfo.svc.cluster.local", metadata: { CREDENTIAL_SDS_DIR: "/x" } });
    expect(sidecar.credentialSdsDir).to.equal(undefined);
  });

  it("references DIR/NAME.sds.yaml and DIR/NAME-cacert.sds.yaml for a credentialName server", () => {
    const view = gateway({ CREDENTIAL_SDS_DIR: "/var/lib/vmpilot/agent/credentials/" });
    const c = canonicalResources(generate(snapshot, view));
    const tls = sdsChain(c.listeners["0.0.0.0_443"]);
    expect(tls.tls_certificate_sds_secret_configs).to.deep.equal([
      { name: "partner-cred", sds_config: { path_config_source: { path: "/var/lib/vmpilot/agent/credentials/partner-cred.sds.yaml" }, resource_api_version: "V3" } },
    ]);
    expect(tls.combined_validation_context.validation_context_sds_secret_config).to.deep.equal({
      name: "partner-cred-cacert",
      sds_config: { path_config_source: { path: "/var/lib/vmpilot/agent/credentials/partner-cred-cacert.sds.yaml" }, resource_api_version: "V3" },
    });
    // Files and ISTIO_MUTUAL servers are untouched by the credentials directory.
    const files = (c.listeners["0.0.0.0_443"].filter_chains as Json[]).find((ch) => ch.filter_chain_match?.server_names?.includes("partner.bookinfo.com"))!;
    expect(files.transport_socket.typed_config.common_tls_context.tls_certificates[0].certificate_chain).to.deep.equal({ filename: "/etc/vmpilot/gateway/partner.crt" });
    const mesh = c.listeners["0.0.0.0_15443"].filter_chains[0].transport_socket.typed_config.common_tls_context;
    expect(mesh.tls_certificate_sds_secret_configs[0].sds_config).to.deep.equal({ ads: {}, resource_api_version: "V3" });
  });

  it("keeps ADS for gateways that did not announce a directory (an operator's own SDS server)", () => {
    const tls = sdsChain(canonicalResources(generate(snapshot, gateway())).listeners["0.0.0.0_443"]);
    expect(tls.tls_certificate_sds_secret_configs[0].sds_config).to.deep.equal({ ads: {}, resource_api_version: "V3" });
  });

  it("keeps ADS for a credentialName that cannot be a file name", () => {
    const odd = snapshotOf({
      ...fixtureFiles("services.yaml", "ingress-mutual.yaml"),
      "ingress-mutual.yaml": fixtureFiles("ingress-mutual.yaml")["ingress-mutual.yaml"]!.replace("credentialName: partner-cred", 'credentialName: "kubernetes://partner-cred"'),
    });
    const tls = sdsChain(canonicalResources(generate(odd, gateway({ CREDENTIAL_SDS_DIR: "/creds" }))).listeners["0.0.0.0_443"]);
    expect(tls.tls_certificate_sds_secret_configs).to.deep.equal([{ name: "kubernetes://partner-cred", sds_config: { ads: {}, resource_api_version: "V3" } }]);
  });

  it("gives gateways with different directories their own listeners from the ResourceCache", () => {
    const cache = new ResourceCache();
    cache.update(snapshot);
    const pathOf = (view: ProxyView): string => {
      const bytes = cache.resources(view, TypeUrl.Listener).get("0.0.0.0_443")!.bytes;
      const l = decodeToJson(typeNameOfUrl(TypeUrl.Listener), bytes) as Json;
      return sdsChain(l).tls_certificate_sds_secret_configs[0].sds_config.path_config_source?.path ?? "ads";
    };
    expect(pathOf(gateway({ CREDENTIAL_SDS_DIR: "/a" }))).to.equal("/a/partner-cred.sds.yaml");
    expect(pathOf(gateway({ CREDENTIAL_SDS_DIR: "/b" }, "router~10.0.0.10~ingress-2.bookinfo~bookinfo.svc.cluster.local"))).to.equal("/b/partner-cred.sds.yaml");
    expect(pathOf(gateway({}, "router~10.0.0.11~ingress-3.bookinfo~bookinfo.svc.cluster.local"))).to.equal("ads");
  });
});
