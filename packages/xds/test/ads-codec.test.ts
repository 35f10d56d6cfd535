// The ADS wire codec: what a proxy puts in its node must reach the proxy view intact.
import { expect } from "chai";
import { decodeSotwRequest, encodeSotwRequest, sotwRequestDecoder } from "../src/server/ads.js";
import { proxyViewFromNode } from "../src/proxy-view.js";
import { TypeUrl } from "../src/protos.js";

describe("ADS request codec", () => {
  it("decodes node metadata of every Struct value kind (objects, lists, numbers, booleans), not just strings", () => {
    const metadata = {
      NAMESPACE: "shop",
      LABELS: { app: "gw", version: "v1" },
      SDS_PATHS: { default: "/var/lib/vmpilot/agent/default.sds.yaml", ROOTCA: "/var/lib/vmpilot/agent/ROOTCA.sds.yaml" },
      INSTANCE_IPS: ["10.0.0.5", "fd00::5"],
      WEIGHT: 3,
      CANARY: true,
      NOTHING: null,
    };
    const req = decodeSotwRequest(encodeSotwRequest({ type_url: TypeUrl.Cluster, node: { id: "router~10.0.0.5~gw-1.shop~shop.svc.cluster.local", metadata } }));
    expect(req.node?.metadata).to.deep.equal(metadata);
    const view = proxyViewFromNode(req.node);
    expect(view.labels).to.deep.equal({ app: "gw", version: "v1" });
    expect(view.sdsPaths).to.deep.equal(metadata.SDS_PATHS);
    expect(view.ips).to.deep.equal(["10.0.0.5", "fd00::5"]);
  });

  it("a stream's decoder returns the previous names array for a byte-identical restatement, and decodes anything else in full", () => {
    const decode = sotwRequestDecoder();
    const names = Array.from({ length: 500 }, (_, i) => `outbound|8080||svc-${i}.ns.mesh.internal`);
    const a = decode(encodeSotwRequest({ type_url: TypeUrl.ClusterLoadAssignment, resource_names: names, version_info: "v1", response_nonce: "n1" }));
    expect(a).to.deep.equal({ version_info: "v1", resource_names: names, type_url: TypeUrl.ClusterLoadAssignment, response_nonce: "n1" });
    const b = decode(encodeSotwRequest({ type_url: TypeUrl.ClusterLoadAssignment, resource_names: names, version_info: "v2", response_nonce: "n2" }));
    expect(b.resource_names).to.equal(a.resource_names);
    expect([b.version_info, b.response_nonce]).to.deep.equal(["v2", "n2"]);
    // Another type keeps its own list; a changed list is decoded afresh.
    const lds = decode(encodeSotwRequest({ type_url: TypeUrl.Listener, resource_names: [], response_nonce: "n3" }));
    expect(lds.resource_names).to.deep.equal([]);
    const changed = [...names.slice(0, 499), "outbound|8080||other.ns.mesh.internal"];
    const c = decode(encodeSotwRequest({ type_url: TypeUrl.ClusterLoadAssignment, resource_names: changed, response_nonce: "n4" }));
    expect(c.resource_names).to.deep.equal(changed).and.not.equal(a.resource_names);
    // The previous list plus one more name: not the same list.
    const longer = [...changed, "outbound|8080||one-more.ns.mesh.internal"];
    const d = decode(encodeSotwRequest({ type_url: TypeUrl.ClusterLoadAssignment, resource_names: longer, response_nonce: "n4b" }));
    expect(d.resource_names).to.deep.equal(longer);
    const e = decode(encodeSotwRequest({ type_url: TypeUrl.ClusterLoadAssignment, resource_names: changed, response_nonce: "n4c" }));
    expect(e.resource_names).to.deep.equal(changed);
    // A NACK (error_detail) and a first request (node) go through the full decoder.
    const nack = decode(encodeSotwRequest({ type_url: TypeUrl.ClusterLoadAssignment, resource_names: changed, response_nonce: "n5", error_detail: { code: 3, message: "bad" } }));
    expect(nack.error_detail).to.deep.equal({ code: 3, message: "bad" });
    expect(nack.resource_names).to.deep.equal(changed);
    const first = decode(encodeSotwRequest({ type_url: TypeUrl.Cluster, node: { id: "envoy-1" } }));
    expect(first.node?.id).to.equal("envoy-1");
    expect(decodeSotwRequest(encodeSotwRequest({ type_url: TypeUrl.ClusterLoadAssignment, resource_names: names }))).to.deep.include({ resource_names: names });
  });
});
