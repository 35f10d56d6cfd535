// Generators on Consul services (converted by the registry's own Consul conversion): a Consul instance serves only
// the port it was registered with, so a service whose instances use different ports must not send an instance at
// another instance's port. WorkloadEntries keep Istio's rule (an unmapped port name means the service port).
import { expect } from "chai";
import { buildSnapshot, DEFAULT_MESH, type SourceState } from "@vmpilot/registry";
import { convertConsulService, type ConsulHealthEntry } from "@vmpilot/registry/consul/convert";
import { generate } from "../src/generators/index.js";
import { parseAll, sidecarView, state } from "./fixtures/snapshots.js";

type J = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

function entry(node: string, address: string, port: number): ConsulHealthEntry {
  return {
    Node: { Node: node, Address: address, Datacenter: "dc1" },
    Service: { ID: `web-${node}`, Service: "web", Address: address, Port: port, Meta: { protocol: "http" }, ModifyIndex: 7 },
    Checks: [{ CheckID: "serfHealth", Status: "passing" }],
  };
}

function consulState(entries: ConsulHealthEntry[]): SourceState {
  const c = convertConsulService("web", entries, { domain: "consul", namespace: "default", trustDomain: "cluster.local", datacenter: "dc1", index: 9, problemFile: "http://127.0.0.1:8500" })!;
  return { objects: [], services: [c.service], endpoints: new Map([[c.service.key, c.endpoints]]), problems: [], status: { name: "consul", synced: true, stale: false } };
}

function addresses(cla: J | undefined): string[] {
  return (cla?.endpoints ?? []).flatMap((l: J) => l.lb_endpoints.map((e: J) => `${e.endpoint.address.socket_address.address}:${e.endpoint.address.socket_address.port_value}`));
}

describe("generators: Consul instances on different ports", () => {
  const snap = buildSnapshot(undefined, [consulState([entry("a", "10.1.0.1", 8080), entry("b", "10.1.0.2", 9090), entry("c", "10.1.0.3", 8080)])], DEFAULT_MESH);
  const g = generate(snap, sidecarView("default"));

  it("lists each instance only in the cluster of its own port", () => {
    expect(addresses(g.endpoints.get("outbound|8080||web.service.consul"))).to.deep.equal(["10.1.0.1:8080", "10.1.0.3:8080"]);
    expect(addresses(g.endpoints.get("outbound|9090||web.service.consul"))).to.deep.equal(["10.1.0.2:9090"]);
  });

  it("gives a sidecar on an instance's address inbound only for that instance's port", () => {
    const own = generate(snap, sidecarView("default", { ips: ["10.1.0.2"] }));
    const inbound = [...own.clusters.keys()].filter((n) => n.startsWith("inbound|")).sort();
    expect(inbound).to.deep.equal(["inbound|9090||"]);
  });

  it("keeps Istio's rule for WorkloadEntries: an unmapped port name means the service port", () => {
    const files = parseAll({
      "se.yaml": `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: two, namespace: default }
spec:
  hosts: [two.example.mesh]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 8080, name: http, protocol: HTTP }, { number: 9090, name: admin, protocol: HTTP }]
  endpoints:
  - { address: 10.2.0.1, ports: { http: 18080 } }
`,
    });
    const s = buildSnapshot(undefined, [state(files)], DEFAULT_MESH);
    const out = generate(s, sidecarView("default"));
    expect(addresses(out.endpoints.get("outbound|8080||two.example.mesh"))).to.deep.equal(["10.2.0.1:18080"]);
    expect(addresses(out.endpoints.get("outbound|9090||two.example.mesh"))).to.deep.equal(["10.2.0.1:9090"]);
  });
});
