// The ADS wire codec: what a proxy puts in its node must reach the proxy view intact.
import { expect } from "chai";
import { decodeSotwRequest, encodeSotwRequest } from "../src/server/ads.js";
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
});
