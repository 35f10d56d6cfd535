// Every generated resource, for the example config and for a 1,000-service mesh, encodes with the real Envoy
// protos and decodes back to exactly the JSON the generator wrote (so no field was dropped or reshaped); and
// the gRPC view's resources pass @grpc/grpc-js-xds's own resource validation, the code that decides ACK/NACK.
import { expect } from "chai";
import type { RegistrySnapshot } from "@vmpilot/registry";
import { generate, type GeneratedResources } from "../src/generators/index.js";
import { decodeToJson, encodeJson } from "../src/protojson.js";
import { TypeUrl, typeNameOfUrl } from "../src/protos.js";
import type { ProxyView } from "../src/proxy-view.js";
import { deprecatedFieldsIn } from "./fixtures/deprecated.js";
import { grpcValidators, validateWithGrpcJsXds, type XdsResourceTypeLike } from "./fixtures/grpc-validate.js";
import { examplesSnapshot, grpcView, largeMeshYaml, sidecarView, snapshotOf } from "./fixtures/snapshots.js";

const TYPES: Record<keyof GeneratedResources, string> = {
  listeners: TypeUrl.Listener,
  routes: TypeUrl.RouteConfiguration,
  clusters: TypeUrl.Cluster,
  endpoints: TypeUrl.ClusterLoadAssignment,
};

/** JSON.parse(JSON.stringify()) drops undefined members the way the proto3 JSON would. */
function plain(o: object): unknown {
  return JSON.parse(JSON.stringify(o));
}

/** Deprecated in Envoy but the only SAN field @grpc/grpc-js-xds reads: allowed in gRPC views only. */
const GRPC_REQUIRED_DEPRECATED = [".match_subject_alt_names"];

function roundTripAll(g: GeneratedResources, allowDeprecated: readonly string[] = []): number {
  let n = 0;
  for (const [k, typeUrl] of Object.entries(TYPES) as [keyof GeneratedResources, string][]) {
    for (const [name, json] of g[k]) {
      const typeName = typeNameOfUrl(typeUrl);
      const deprecated = deprecatedFieldsIn(typeName, json).filter((p) => !allowDeprecated.some((a) => p.endsWith(a)));
      expect(deprecated, `${k} ${name}: deprecated fields`).to.deep.equal([]);
      const bytes = encodeJson(typeName, json);
      expect(decodeToJson(typeName, bytes), `${k} ${name}`).to.deep.equal(plain(json));
      n++;
    }
  }
  return n;
}

function viewsOf(snapshot: RegistrySnapshot): ProxyView[] {
  const namespaces = [...new Set([...snapshot.services.values()].map((s) => s.namespace))].sort();
  const views: ProxyView[] = [];
  for (const ns of namespaces) {
    views.push(sidecarView(ns));
    views.push(grpcView(ns));
    views.push({ ...sidecarView(ns), kind: "gateway", id: `router~10.0.0.9~gw.${ns}~${ns}.svc.cluster.local` });
  }
  // A sidecar on one of the example workloads: it gets inbound clusters and virtualInbound filter chains.
  for (const eps of snapshot.endpoints.values()) {
    const ep = eps.find((e) => e.workload && /^\d+\.\d+\.\d+\.\d+$/.test(e.address));
    if (ep) {
      views.push(sidecarView(ep.namespace, { ips: [ep.address], labels: ep.labels, serviceAccount: ep.serviceAccount ?? "default" }));
      break;
    }
  }
  return views;
}

describe("generated resources encode and decode losslessly with the Envoy protos", function () {
  this.timeout(120_000);

  it("for every view of the example config (config/examples)", () => {
    const snapshot = examplesSnapshot();
    expect(snapshot.services.size).to.be.greaterThan(2);
    let total = 0;
    for (const view of viewsOf(snapshot)) total += roundTripAll(generate(snapshot, view), view.kind === "grpc" ? GRPC_REQUIRED_DEPRECATED : []);
    expect(total).to.be.greaterThan(50);
  });

  it("for a generated mesh of 1,000 services (sidecar and gRPC views)", () => {
    const snapshot = snapshotOf(largeMeshYaml(1000));
    expect(snapshot.services.size).to.equal(1000);
    const sidecar = generate(snapshot, sidecarView("ns3"));
    const grpc = generate(snapshot, grpcView("ns3"));
    // 1,000 services x 2 ports, 100 of them with 2 subsets each, plus Passthrough and BlackHole.
    expect(sidecar.clusters.size).to.equal(2000 + 100 * 2 * 2 + 2);
    expect(grpc.clusters.size).to.equal(2000 + 100 * 2 * 2);
    expect(roundTripAll(sidecar) + roundTripAll(grpc, GRPC_REQUIRED_DEPRECATED)).to.be.greaterThan(10_000);
  });
});

describe("gRPC-view resources pass @grpc/grpc-js-xds's own validation", function () {
  this.timeout(120_000);
  let validators: Record<string, XdsResourceTypeLike> | undefined;
  before(function () {
    validators = grpcValidators();
    if (!validators) this.skip();
  });

  it("for the example config, in every namespace", () => {
    const snapshot = examplesSnapshot();
    let checked = 0;
    for (const view of viewsOf(snapshot).filter((v) => v.kind === "grpc")) {
      const g = generate(snapshot, view);
      expect(validateWithGrpcJsXds(validators!, g)).to.deep.equal([]);
      checked += g.listeners.size + g.clusters.size;
    }
    expect(checked).to.be.greaterThan(5);
  });

  it("for the 1,000-service mesh (weighted subsets, retries, timeouts, circuit breakers)", () => {
    const snapshot = snapshotOf(largeMeshYaml(1000));
    expect(validateWithGrpcJsXds(validators!, generate(snapshot, grpcView("ns0")))).to.deep.equal([]);
  });

  it("would NACK what the sidecar view is allowed to have (the check is real)", () => {
    const snapshot = examplesSnapshot();
    const g = generate(snapshot, sidecarView("shop"));
    const errors = validateWithGrpcJsXds(validators!, g);
    // virtualOutbound uses use_original_dst and ORIGINAL_DST/STATIC clusters: gRPC rejects both.
    expect(errors.some((e) => e.startsWith("listeners virtualOutbound"))).to.equal(true);
    expect(errors.some((e) => e.startsWith("clusters PassthroughCluster"))).to.equal(true);
  });
});
