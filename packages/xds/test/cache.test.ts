// ResourceCache: same resources as generate(), shared between equal views, re-encoding only what a change
// touches, with content-hash versions that do not depend on the cache instance.
import { expect } from "chai";
import type { RegistrySnapshot } from "@vmpilot/registry";
import { ResourceCache, viewKey, type EncodedResource } from "../src/cache.js";
import { generate, type GeneratedResources } from "../src/generators/index.js";
import { contentVersion } from "../src/hash.js";
import { decodeToJson, encodeJson } from "../src/protojson.js";
import { TypeUrl, typeNameOfUrl } from "../src/protos.js";
import type { ProxyView } from "../src/proxy-view.js";
import { examplesSnapshot, grpcView, largeMeshYaml, sidecarView, snapshotOf } from "./fixtures/snapshots.js";

const KINDS: [keyof GeneratedResources, string][] = [
  ["clusters", TypeUrl.Cluster],
  ["endpoints", TypeUrl.ClusterLoadAssignment],
  ["listeners", TypeUrl.Listener],
  ["routes", TypeUrl.RouteConfiguration],
];

function counting(): { cache: ResourceCache; encodes: { typeUrl: string; name: string }[] } {
  const encodes: { typeUrl: string; name: string }[] = [];
  return { cache: new ResourceCache({ onEncode: (typeUrl, name) => encodes.push({ typeUrl, name }) }), encodes };
}

function fetchAll(cache: ResourceCache, views: readonly ProxyView[]): void {
  for (const v of views) for (const [, t] of KINDS) cache.resources(v, t);
}

/** The ids of the proxies differ; everything that matters is equal. */
function twins(v: ProxyView): [ProxyView, ProxyView] {
  return [
    { ...v, id: `${v.id}-a` },
    { ...v, id: `${v.id}-b` },
  ];
}

describe("ResourceCache", function () {
  this.timeout(60_000);

  it("serves exactly what generate() produces, for sidecar, gRPC and gateway views", () => {
    const snap = examplesSnapshot();
    const cache = new ResourceCache();
    cache.update(snap);
    const wl = [...snap.endpoints.values()].flat().find((e) => e.workload && /^\d/.test(e.address))!;
    const views = [
      sidecarView("shop"),
      sidecarView(wl.namespace, { ips: [wl.address], labels: wl.labels }),
      grpcView("shop"),
      grpcView("payments"),
      { ...sidecarView("egress"), kind: "gateway" as const },
    ];
    for (const view of views) {
      const g = generate(snap, view);
      for (const [k, typeUrl] of KINDS) {
        const got = cache.resources(view, typeUrl);
        expect([...got.keys()].sort(), `${view.kind} ${k}`).to.deep.equal([...g[k].keys()].sort());
        for (const [name, r] of got) {
          expect(r).to.include({ name, typeUrl });
          expect(decodeToJson(typeNameOfUrl(typeUrl), r.bytes)).to.deep.equal(JSON.parse(JSON.stringify(g[k].get(name))));
          expect(r.version).to.equal(contentVersion(r.bytes));
        }
      }
    }
  });

  it("shares resources between equal views, and shares service resources across namespaces", () => {
    const snap = snapshotOf(largeMeshYaml(50, 5));
    const { cache, encodes } = counting();
    cache.update(snap);
    const [a, b] = twins(sidecarView("ns1", { labels: { app: "web" } }));
    expect(viewKey(a)).to.equal(viewKey(b));
    for (const [, t] of KINDS) expect(cache.resources(a, t)).to.equal(cache.resources(b, t));

    // Sidecars on different VMs (different IPs: different inbound sides) still share every outbound resource.
    const vmA = sidecarView("ns1", { labels: { app: "web" }, ips: ["10.200.0.1"] });
    const vmB = sidecarView("ns1", { labels: { app: "web" }, ips: ["10.200.0.2"] });
    expect(viewKey(vmA)).to.not.equal(viewKey(vmB));
    const ca = cache.resources(vmA, TypeUrl.Cluster);
    const cb = cache.resources(vmB, TypeUrl.Cluster);
    for (const [name, r] of ca) if (name.startsWith("outbound|")) expect(cb.get(name)).to.equal(r);

    // A service's CLAs are encoded once however many namespaces see it.
    encodes.length = 0;
    fetchAll(cache, [0, 2, 3, 4].map((i) => sidecarView(`ns${i}`)));
    const claEncodes = encodes.filter((e) => e.typeUrl === TypeUrl.ClusterLoadAssignment);
    expect(claEncodes).to.deep.equal([]);
    expect(cache.resources(sidecarView("ns4"), TypeUrl.ClusterLoadAssignment).get("outbound|8080||svc7.ns2.mesh")).to.equal(
      cache.resources(a, TypeUrl.ClusterLoadAssignment).get("outbound|8080||svc7.ns2.mesh"),
    );
  });

  it("an endpoint change to one service re-encodes only that service's ClusterLoadAssignments", () => {
    const files = largeMeshYaml(200, 10);
    const s1 = snapshotOf(files);
    const { cache, encodes } = counting();
    cache.update(s1);
    const views = [...Array.from({ length: 10 }, (_, i) => sidecarView(`ns${i}`)), grpcView("ns0"), grpcView("ns5")];
    fetchAll(cache, views);
    const before = new Map(views.map((v) => [v, cache.resources(v, TypeUrl.ClusterLoadAssignment)]));

    // svc42's second endpoint moves.
    const s2 = snapshotOf({ "large.yaml": files["large.yaml"]!.replace("10.0.42.2,", "10.0.42.99,") }, {}, s1);
    expect([...s2.changes.endpoints]).to.deep.equal(["ns2/svc42.ns2.mesh"]);
    expect(s2.changes.services.size).to.equal(0);
    encodes.length = 0;
    cache.update(s2);
    fetchAll(cache, views);
    // Two ports, one Envoy and one gRPC encoding each: all of svc42, nothing else, once for all twelve proxies.
    expect(encodes.map((e) => `${e.typeUrl.split(".").pop()} ${e.name}`).sort()).to.deep.equal(
      [
        "ClusterLoadAssignment outbound|8080||svc42.ns2.mesh",
        "ClusterLoadAssignment outbound|8080||svc42.ns2.mesh",
        "ClusterLoadAssignment outbound|9090||svc42.ns2.mesh",
        "ClusterLoadAssignment outbound|9090||svc42.ns2.mesh",
      ].sort(),
    );
    for (const v of views) {
      const after = cache.resources(v, TypeUrl.ClusterLoadAssignment);
      const old = before.get(v)!;
      for (const [name, r] of after) {
        if (name.includes("svc42.")) expect(r.version).to.not.equal(old.get(name)!.version);
        else expect(r).to.equal(old.get(name));
      }
    }
    const addresses = JSON.stringify(decodeToJson("envoy.config.endpoint.v3.ClusterLoadAssignment", cache.resources(views[0]!, TypeUrl.ClusterLoadAssignment).get("outbound|8080||svc42.ns2.mesh")!.bytes));
    expect(addresses).to.include("10.0.42.99");
  });

  it("a VirtualService change re-encodes only the route configs whose content changed", () => {
    const files = largeMeshYaml(60, 3);
    const s1 = snapshotOf(files);
    const { cache, encodes } = counting();
    cache.update(s1);
    const views = [sidecarView("ns0"), sidecarView("ns1"), sidecarView("ns2"), grpcView("ns1")];
    fetchAll(cache, views);
    const s2 = snapshotOf({ "large.yaml": files["large.yaml"]!.replace("timeout: 2s", "timeout: 7s") }, {}, s1);
    expect(s2.changes.routing.size).to.be.greaterThan(0);
    encodes.length = 0;
    cache.update(s2);
    fetchAll(cache, views);
    // svc0's timeout: the sidecars' per-port route configs (identical in every namespace: encoded once each)
    // and the gRPC client's svc0 route configs. No cluster, CLA or listener.
    expect(encodes.map((e) => `${e.typeUrl.split(".").pop()} ${e.name}`).sort()).to.deep.equal([
      "RouteConfiguration 8080",
      "RouteConfiguration 9090",
      "RouteConfiguration svc0.ns0.mesh:8080",
      "RouteConfiguration svc0.ns0.mesh:9090",
    ]);
  });

  it("follows additions and removals of services and of the proxy's own workload", () => {
    const base = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: api, namespace: app }
spec:
  hosts: [api.app.mesh]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 8080, name: http, protocol: HTTP }]
  workloadSelector: { labels: { app: api } }`;
    const we = `apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: api-1, namespace: app }
spec: { address: 10.3.0.1, labels: { app: api } }`;
    const extra = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: extra, namespace: app }
spec:
  hosts: [extra.app.mesh]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 7000, name: tcp, protocol: TCP }]`;
    const vm = sidecarView("app", { ips: ["10.3.0.1"] });
    const cache = new ResourceCache();
    let snap: RegistrySnapshot = snapshotOf({ "a.yaml": base });
    cache.update(snap);
    expect(cache.resources(vm, TypeUrl.Cluster).has("inbound|8080||")).to.equal(false);
    expect(cache.resources(vm, TypeUrl.Listener).has("0.0.0.0_7000")).to.equal(false);

    snap = snapshotOf({ "a.yaml": base, "we.yaml": we, "x.yaml": extra }, {}, snap);
    cache.update(snap);
    expect(cache.resources(vm, TypeUrl.Cluster).has("inbound|8080||")).to.equal(true);
    expect(cache.resources(vm, TypeUrl.Cluster).has("outbound|7000||extra.app.mesh")).to.equal(true);
    expect(cache.resources(vm, TypeUrl.Listener).has("0.0.0.0_7000")).to.equal(true);
    const cla = decodeToJson("envoy.config.endpoint.v3.ClusterLoadAssignment", cache.resources(vm, TypeUrl.ClusterLoadAssignment).get("outbound|8080||api.app.mesh")!.bytes);
    expect(JSON.stringify(cla)).to.include("10.3.0.1");

    snap = snapshotOf({ "a.yaml": base }, {}, snap);
    cache.update(snap);
    expect(cache.resources(vm, TypeUrl.Cluster).has("inbound|8080||")).to.equal(false);
    expect(cache.resources(vm, TypeUrl.Cluster).has("outbound|7000||extra.app.mesh")).to.equal(false);
    expect(cache.resources(vm, TypeUrl.ClusterLoadAssignment).get("outbound|8080||api.app.mesh")!.bytes).to.deep.equal(
      encodeJson("envoy.config.endpoint.v3.ClusterLoadAssignment", { cluster_name: "outbound|8080||api.app.mesh" }),
    );
  });

  it("versions are content hashes: equal across cache instances and independent of request order", () => {
    const snap = examplesSnapshot();
    const c1 = new ResourceCache();
    const c2 = new ResourceCache();
    c1.update(snap);
    c2.update(snap);
    const views = [grpcView("shop"), sidecarView("shop"), sidecarView("payments")];
    const dump = (c: ResourceCache, order: ProxyView[]): Record<string, string> => {
      const out: Record<string, string> = {};
      for (const v of order) for (const [, t] of KINDS) for (const [n, r] of c.resources(v, t)) out[`${v.kind}/${v.namespace}/${t}/${n}`] = r.version;
      return out;
    };
    expect(dump(c1, views)).to.deep.equal(dump(c2, [...views].reverse()));
  });

  it("answers with an empty map for types it does not generate, and refuses before the first snapshot", () => {
    const cache = new ResourceCache();
    expect(() => cache.resources(sidecarView("a"), TypeUrl.Cluster)).to.throw(/before the first update/);
    cache.update(examplesSnapshot());
    expect(cache.resources(sidecarView("a"), TypeUrl.Secret).size).to.equal(0);
  });

  it("equal views resolve to equal EncodedResource objects (no per-proxy copies)", () => {
    const snap = snapshotOf(largeMeshYaml(300, 10));
    const { cache, encodes } = counting();
    cache.update(snap);
    const views = Array.from({ length: 100 }, (_, i) => sidecarView(`ns${i % 10}`, { ips: [`10.250.0.${i}`], id: `p${i}` }));
    fetchAll(cache, views);
    const byName = new Map<string, EncodedResource>();
    for (const v of views) {
      for (const [n, r] of cache.resources(v, TypeUrl.ClusterLoadAssignment)) {
        const seen = byName.get(n);
        if (seen) expect(r).to.equal(seen);
        else byName.set(n, r);
      }
    }
    // Every CLA of the mesh encoded once for 100 proxies in 10 namespaces.
    expect(encodes.filter((e) => e.typeUrl === TypeUrl.ClusterLoadAssignment).length).to.equal(byName.size);
  });

  it("stays equal to generate() through a sequence of changes of every kind", () => {
    const base = largeMeshYaml(40, 4)["large.yaml"]!;
    const wl = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: own, namespace: ns1 }
spec:
  hosts: [own.ns1.mesh]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 7000, name: http, protocol: HTTP }]
  workloadSelector: { labels: { app: own } }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: own-1, namespace: ns1 }
spec: { address: 10.9.0.1, labels: { app: own }, serviceAccount: own }`;
    const steps: { what: string; files: Record<string, string>; mesh?: { outboundTrafficPolicy: "REGISTRY_ONLY" } }[] = [
      { what: "initial", files: { "m.yaml": base } },
      { what: "endpoint moved", files: { "m.yaml": base.replace("10.0.3.1,", "10.0.3.77,") } },
      { what: "workload joins", files: { "m.yaml": base.replace("10.0.3.1,", "10.0.3.77,"), "w.yaml": wl } },
      { what: "identity change", files: { "m.yaml": base.replace("10.0.3.1,", "10.0.3.77,").replace("serviceAccount: sa5,", "serviceAccount: other,"), "w.yaml": wl } },
      {
        what: "new DestinationRule in the proxy namespace",
        files: {
          "m.yaml": base,
          "w.yaml": wl,
          "dr.yaml": `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: local, namespace: ns1 }
spec: { host: "*.ns2.mesh", trafficPolicy: { tls: { mode: DISABLE }, loadBalancer: { consistentHash: { httpHeaderName: x-k } } } }`,
        },
      },
      { what: "exportTo narrowed", files: { "m.yaml": base.replace("hosts: [svc6.ns2.mesh]", "hosts: [svc6.ns2.mesh]\n  exportTo: [\".\"]"), "w.yaml": wl } },
      {
        what: "Sidecar scope",
        files: {
          "m.yaml": base,
          "w.yaml": wl,
          "sc.yaml": `apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: { name: default, namespace: ns1 }
spec: { egress: [{ hosts: ["./*", "ns3/*"] }] }`,
        },
      },
      { what: "service removed", files: { "m.yaml": base.split("---").filter((d) => !d.includes("svc7.ns3.mesh")).join("---"), "w.yaml": wl } },
      { what: "mesh policy", files: { "m.yaml": base, "w.yaml": wl }, mesh: { outboundTrafficPolicy: "REGISTRY_ONLY" } },
    ];
    const views = [sidecarView("ns1", { ips: ["10.9.0.1"] }), sidecarView("ns2"), grpcView("ns1"), grpcView("ns3"), { ...sidecarView("ns0"), kind: "gateway" as const }];
    const cache = new ResourceCache();
    let snap: RegistrySnapshot | undefined;
    for (const step of steps) {
      snap = snapshotOf(step.files, step.mesh ?? {}, snap);
      cache.update(snap);
      for (const view of views) {
        const g = generate(snap, view);
        for (const [k, typeUrl] of KINDS) {
          const want: Record<string, string> = {};
          for (const [n, j] of g[k]) want[n] = contentVersion(encodeJson(typeNameOfUrl(typeUrl), j));
          const got: Record<string, string> = {};
          for (const [n, r] of cache.resources(view, typeUrl)) got[n] = r.version;
          expect(got, `${step.what}: ${view.kind}/${view.namespace} ${k}`).to.deep.equal(want);
        }
      }
    }
  });

  describe("scopes: labels count only where a selector looks at them", () => {
    const NS = 5;
    const LABEL_SETS = 10;
    /** Every namespace x every label set, as the benchmark's fleet: `app` and `pod` differ per proxy. */
    const fleet = (): ProxyView[] =>
      Array.from({ length: NS * LABEL_SETS }, (_, i) =>
        sidecarView(`ns${i % NS}`, { id: `sidecar~10.9.0.${i}~p${i}.ns${i % NS}~ns${i % NS}.svc.cluster.local`, labels: { app: `app-${Math.floor(i / NS)}`, pod: `p${i}` } }),
      );

    /** Every type from the cache equals generate() with the proxy's full labels. */
    function expectGenerated(cache: ResourceCache, snap: RegistrySnapshot, view: ProxyView): void {
      const g = generate(snap, view);
      for (const [k, typeUrl] of KINDS) {
        const got = cache.resources(view, typeUrl);
        expect([...got.keys()].sort(), `${view.id} ${k}`).to.deep.equal([...g[k].keys()].sort());
        for (const [name, r] of got) expect(decodeToJson(typeNameOfUrl(typeUrl), r.bytes), `${view.id} ${name}`).to.deep.equal(JSON.parse(JSON.stringify(g[k].get(name))));
      }
    }

    it("proxies that no selector tells apart share one scope per namespace, whatever their labels", () => {
      const snap = snapshotOf(largeMeshYaml(40, NS));
      const { cache, encodes } = counting();
      cache.update(snap);
      const views = fleet();
      fetchAll(cache, views);
      expect(cache.size.scopes).to.equal(NS);
      // One route config per namespace built and (by content) encoded once in all: not once per label set.
      expect(encodes.filter((e) => e.typeUrl === TypeUrl.RouteConfiguration).length).to.be.at.most(2);
      for (const v of views.slice(NS)) {
        const twin = views[Number(v.namespace.slice(2))]!;
        for (const t of [TypeUrl.ClusterLoadAssignment, TypeUrl.RouteConfiguration]) expect(cache.resources(v, t)).to.equal(cache.resources(twin, t));
      }
      for (const v of views.slice(0, 2)) expectGenerated(cache, snap, v);
    });

    it("a Sidecar, DestinationRule or VirtualService that selects workloads gives exactly the selected proxies their own config", () => {
      const files = largeMeshYaml(40, NS);
      const selecting = [
        // app-1 in ns1 sees only its own namespace.
        `apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: { name: narrow, namespace: ns1 }
spec:
  workloadSelector: { labels: { app: app-1 } }
  egress: [{ hosts: ["./*"] }]`,
        // app-2 in ns2 talks to svc0 with its own traffic policy.
        `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: canary, namespace: ns2 }
spec:
  host: svc0.ns0.mesh
  workloadSelector: { labels: { app: app-2 } }
  trafficPolicy: { loadBalancer: { simple: LEAST_REQUEST } }`,
        // app-3 anywhere is sent to svc1 when it calls svc5.
        `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: by-source, namespace: ns0 }
spec:
  hosts: [svc5.ns0.mesh]
  http:
  - match: [{ sourceLabels: { app: app-3 } }]
    route: [{ destination: { host: svc1.ns1.mesh } }]
  - route: [{ destination: { host: svc5.ns0.mesh } }]`,
      ];
      const snap = snapshotOf({ ...files, "selecting.yaml": selecting.join("\n---\n") });
      const cache = new ResourceCache();
      cache.update(snap);
      const views = fleet();
      fetchAll(cache, views);
      // Per namespace one scope, plus: app-1 in ns1 (Sidecar), app-2 in ns2 (DestinationRule), app-3 in every namespace (sourceLabels).
      expect(cache.size.scopes).to.equal(NS + 1 + 1 + NS);
      const pick = (ns: number, app: number, nth = 0): ProxyView => views.filter((v) => v.namespace === `ns${ns}` && v.labels.app === `app-${app}`)[nth] ?? views.find((v) => v.namespace === `ns${ns}` && v.labels.app === `app-${app}`)!;
      const narrow = pick(1, 1);
      const wide = pick(1, 0);
      const clusters = (v: ProxyView): string[] => [...cache.resources(v, TypeUrl.Cluster).keys()].filter((n) => n.startsWith("outbound|"));
      expect(clusters(narrow).every((n) => n.endsWith(".ns1.mesh"))).to.equal(true);
      expect(clusters(wide).some((n) => n.endsWith(".ns0.mesh"))).to.equal(true);
      const svc0 = "outbound|8080||svc0.ns0.mesh";
      expect(cache.resources(pick(2, 2), TypeUrl.Cluster).get(svc0)!.version).to.not.equal(cache.resources(pick(2, 0), TypeUrl.Cluster).get(svc0)!.version);
      // The DestinationRule selects only in its own namespace: app-2 elsewhere shares its namespace's scope.
      expect(cache.resources(pick(3, 2), TypeUrl.Cluster)).to.equal(cache.resources(pick(3, 0), TypeUrl.Cluster));
      expect(cache.resources(pick(4, 3), TypeUrl.RouteConfiguration)).to.not.equal(cache.resources(pick(4, 0), TypeUrl.RouteConfiguration));
      for (const v of [narrow, wide, pick(2, 2), pick(2, 0), pick(3, 2), pick(4, 3), pick(4, 0)]) expectGenerated(cache, snap, v);

      // Removing the Sidecar merges app-1 back into its namespace's scope (and its config follows).
      const s2 = snapshotOf({ ...files, "selecting.yaml": selecting.slice(1).join("\n---\n") }, {}, snap);
      cache.update(s2);
      expect(cache.resources(narrow, TypeUrl.Cluster)).to.equal(cache.resources(wide, TypeUrl.Cluster));
      expectGenerated(cache, s2, narrow);
    });
  });
});
