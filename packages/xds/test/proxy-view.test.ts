// The node contract both sides share: what nodeMetadataOf writes (the agent's bootstraps) proxyViewFromNode reads.
import { expect } from "chai";
import { formatNodeId, nodeMetadataOf, proxyViewFromNode, type NodeAnnouncement } from "../src/proxy-view.js";

const sidecar: NodeAnnouncement = {
  kind: "sidecar",
  namespace: "shop",
  serviceAccount: "reviews",
  labels: { app: "reviews", version: "v1" },
  workloadName: "reviews-vm-1",
  ips: ["10.0.0.5", "fd00::5"],
  interceptionMode: "REDIRECT",
  autoRegisterGroup: "reviews",
  sdsPaths: { default: "/var/lib/vmpilot/agent/default.sds.yaml", ROOTCA: "/var/lib/vmpilot/agent/ROOTCA.sds.yaml" },
};

describe("proxy view: the node contract", () => {
  for (const a of [
    sidecar,
    { ...sidecar, kind: "gateway", interceptionMode: "NONE", credentialSdsCluster: "sds-grpc" },
    { kind: "grpc", namespace: "shop", labels: {}, ips: ["10.0.0.6"], interceptionMode: "NONE" },
  ] satisfies NodeAnnouncement[]) {
    it(`reads back what a ${a.kind} announces`, () => {
      const id = formatNodeId(a.kind, a.ips[0]!, "vm-1", a.namespace);
      const view = proxyViewFromNode({ id, cluster: "vm-1.shop", metadata: nodeMetadataOf(a) });
      expect(view).to.deep.equal({ ...a, id, cluster: "vm-1.shop", workloadName: a.workloadName ?? "vm-1" });
    });
  }

  it("keeps what only some kinds use to those kinds: no SDS for gRPC, credentials only for gateways", () => {
    const md = nodeMetadataOf({ ...sidecar, kind: "grpc", credentialSdsCluster: "sds-grpc" });
    expect(md).to.not.have.any.keys("SDS_PATHS", "CREDENTIAL_SDS_CLUSTER");
    expect(nodeMetadataOf({ ...sidecar, credentialSdsCluster: "sds-grpc" })).to.not.have.property("CREDENTIAL_SDS_CLUSTER");
  });

  it("takes kind, namespace, name and IP from Istio's id form when the metadata is silent", () => {
    expect(formatNodeId("gateway", "10.0.3.5", "ingress-1", "edge")).to.equal("router~10.0.3.5~ingress-1.edge~edge.svc.cluster.local");
    for (const [kind, id] of [
      ["sidecar", "sidecar~10.0.0.7~vm-7.shop~shop.svc.cluster.local"],
      ["gateway", "router~10.0.0.7~vm-7.shop~shop.svc.cluster.local"],
      ["grpc", "grpc~10.0.0.7~vm-7.shop~shop.svc.cluster.local"],
    ] as const) {
      expect(proxyViewFromNode({ id })).to.deep.include({ kind, namespace: "shop", workloadName: "vm-7", ips: ["10.0.0.7"] });
    }
    expect(proxyViewFromNode({ id: "my-grpc-client" })).to.deep.include({ kind: "grpc", namespace: "default", ips: [] });
  });
});
