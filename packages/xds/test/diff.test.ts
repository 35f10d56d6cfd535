// The diff engine: field paths, resource changes, proxy views and grouping. Snapshots go through the registry's
// real parser and snapshot builder; the grouping cases use tiny hand-made generated maps so that each
// expectation is visible in the test itself, and one case runs the real generators.
import { expect } from "chai";
import fs from "node:fs";
import path from "node:path";
import type { RegistrySnapshot } from "@vmpilot/registry";
import { compareConfigs, GenerateError, type Generate } from "../src/diff/compare.js";
import { diffFields, formatFieldChange, type Json } from "../src/diff/fields.js";
import { formatText, jsonReport } from "../src/diff/report.js";
import { diffResources, type GeneratedResources } from "../src/diff/resources.js";
import { defaultViews, mergeViews, parseProxySpec, ProxySpecError, type DiffView } from "../src/diff/views.js";
import { generate } from "../src/generators/index.js";
import type { ProxyView } from "../src/proxy-view.js";
import { EXAMPLES_DIR, snapshotOf } from "./fixtures/snapshots.js";

function resources(parts: Partial<Record<keyof GeneratedResources, Record<string, unknown>>>): GeneratedResources {
  const m = (r: Record<string, unknown> | undefined) => new Map(Object.entries(r ?? {}));
  return { listeners: m(parts.listeners), routes: m(parts.routes), clusters: m(parts.clusters), endpoints: m(parts.endpoints) };
}

const lines = (j: unknown, k: unknown) => diffFields(j as Json, k as Json).map((c) => formatFieldChange(c));

describe("diff: fields", () => {
  it("reports a changed leaf with its full path", () => {
    const route = (w1: number, w2: number) => ({
      virtual_hosts: [
        {
          name: "catalog:8080",
          routes: [
            { name: "canary", route: { cluster: "outbound|8080|v2|catalog" } },
            { name: "split", route: { weighted_clusters: { clusters: [{ name: "outbound|8080|v1|catalog", weight: w1 }, { name: "outbound|8080|v2|catalog", weight: w2 }] } } },
          ],
        },
      ],
    });
    expect(lines(route(90, 10), route(70, 30))).to.deep.equal([
      "virtual_hosts[0].routes[1].route.weighted_clusters.clusters[0].weight: 90 -> 70",
      "virtual_hosts[0].routes[1].route.weighted_clusters.clusters[1].weight: 10 -> 30",
    ]);
  });

  it("matches named list elements by name: one inserted route is one addition, not every later route changed", () => {
    const a = { routes: [{ name: "a", timeout: "1s" }, { name: "c", timeout: "3s" }] };
    const b = { routes: [{ name: "a", timeout: "1s" }, { name: "b", timeout: "2s" }, { name: "c", timeout: "4s" }] };
    expect(lines(a, b)).to.deep.equal(["routes[1]: added b", "routes[2].timeout: 3s -> 4s"]);
  });

  it("reports a reordering of named elements (routes are first-match, so order is behaviour)", () => {
    const a = { routes: [{ name: "x" }, { name: "y" }] };
    const b = { routes: [{ name: "y" }, { name: "x" }] };
    expect(lines(a, b)).to.deep.equal(['routes(order): ["x","y"] -> ["y","x"]']);
  });

  it("matches endpoints by address and port", () => {
    const ep = (ip: string, port = 80) => ({ endpoint: { address: { socket_address: { address: ip, port_value: port } } }, health_status: "HEALTHY" });
    const a = { endpoints: [{ locality: { zone: "a" }, lb_endpoints: [ep("10.0.0.1"), ep("10.0.0.2")] }] };
    const b = { endpoints: [{ locality: { zone: "a" }, lb_endpoints: [ep("10.0.0.2"), ep("10.0.0.3")] }] };
    expect(lines(a, b)).to.deep.equal(["endpoints[0].lb_endpoints[0]: removed 10.0.0.1:80", "endpoints[0].lb_endpoints[1]: added 10.0.0.3:80"]);
  });

  it("compares lists without identities by position, and objects regardless of key order", () => {
    expect(lines({ a: [1, 2, 3] }, { a: [1, 5] })).to.deep.equal(["a[1]: 2 -> 5", "a[2]: 3 -> (none)"]);
    expect(diffFields({ x: 1, y: { p: 1, q: 2 } }, { y: { q: 2, p: 1 }, x: 1 })).to.deep.equal([]);
  });

  it("reports added and removed fields, and quotes keys a dotted path could not show", () => {
    expect(lines({ a: 1 }, { b: { c: true } })).to.deep.equal(["a: 1 -> (none)", 'b: (none) -> {"c":true}']);
    expect(lines({ typed_config: { "@type": "x" } }, { typed_config: { "@type": "y" } })).to.deep.equal(['typed_config["@type"]: x -> y']);
  });

  it("falls back to positions when names repeat", () => {
    expect(lines({ l: [{ name: "a", v: 1 }, { name: "a", v: 2 }] }, { l: [{ name: "a", v: 1 }, { name: "a", v: 3 }] })).to.deep.equal(["l[1].v: 2 -> 3"]);
  });

  it("shortens long values on one line", () => {
    const long = "x".repeat(300);
    const [line] = lines({ v: "short" }, { v: long });
    expect(line!.length).to.be.lessThan(130);
    expect(line).to.match(/^v: short -> x+…$/);
  });
});

describe("diff: resources", () => {
  it("lists added, removed and changed resources per type in CDS, EDS, LDS, RDS order", () => {
    const a = resources({ clusters: { c1: { name: "c1", lb_policy: "ROUND_ROBIN" }, gone: { name: "gone" } }, routes: { "80": { name: "80" } } });
    const b = resources({ clusters: { c1: { name: "c1", lb_policy: "LEAST_REQUEST" }, fresh: { name: "fresh" } }, listeners: { l: { name: "l" } }, routes: { "80": { name: "80" } } });
    expect(diffResources(a, b)).to.deep.equal([
      { type: "cluster", name: "c1", action: "changed", fields: [{ path: "lb_policy", old: "ROUND_ROBIN", new: "LEAST_REQUEST" }] },
      { type: "cluster", name: "fresh", action: "added" },
      { type: "cluster", name: "gone", action: "removed" },
      { type: "listener", name: "l", action: "added" },
    ]);
  });
});

const SE = (ns: string, host: string, extra = "") => `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: ${host.split(".")[0]}
  namespace: ${ns}
spec:
  hosts: [${host}]
  ports:
  - {number: 8080, name: http, protocol: HTTP}
  resolution: STATIC
  location: MESH_INTERNAL
${extra}`;

const WE = (ns: string, name: string, ip: string, labels: string, sa = "app") => `apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ${name}, namespace: ${ns}}
spec:
  address: ${ip}
  serviceAccount: ${sa}
  labels: {${labels}}
`;

describe("diff: proxy views", () => {
  it("takes a sidecar and a gRPC client per namespace and one sidecar per WorkloadEntry label set, with its address", () => {
    const before = snapshotOf({
      "a.yaml": SE("shop", "catalog.shop.internal", "  workloadSelector: {labels: {app: catalog}}\n  exportTo: ['.', web]\n"),
      "w.yaml": [WE("shop", "catalog-1", "10.0.0.1", "app: catalog, version: v1", "catalog"), WE("shop", "catalog-2", "10.0.0.2", "app: catalog, version: v1", "catalog")].join("---\n"),
    });
    const after = snapshotOf({
      "a.yaml": SE("shop", "catalog.shop.internal", "  workloadSelector: {labels: {app: catalog}}\n  exportTo: ['.', web]\n"),
      "w.yaml": [WE("shop", "catalog-2", "10.0.0.2", "app: catalog, version: v1", "catalog"), WE("shop", "catalog-3", "10.0.0.3", "app: catalog, version: v2", "catalog")].join("---\n"),
      "b.yaml": SE("billing", "ledger.billing.internal"),
    });
    const views = defaultViews(before, after);
    expect(views.map((v) => v.label)).to.deep.equal([
      "sidecar in billing",
      "gRPC client in billing",
      "sidecar in shop",
      "gRPC client in shop",
      "sidecar in web", // only named in exportTo: a proxy there still sees catalog
      "gRPC client in web",
      "sidecar in shop {app=catalog,version=v1}",
      "sidecar in shop {app=catalog,version=v2}",
    ]);
    const v1 = views[6]!;
    // catalog-1 is gone in the new config; catalog-2 exists in both and stands for the label set.
    expect(v1.view.ips).to.deep.equal(["10.0.0.2"]);
    expect(v1.view.workloadName).to.equal("catalog-2");
    expect(v1.view.serviceAccount).to.equal("catalog");
    expect(v1.represents).to.deep.equal(["WorkloadEntry shop/catalog-1", "WorkloadEntry shop/catalog-2"]);
    expect(views[7]!.view.ips).to.deep.equal(["10.0.0.3"]);
    expect(views[0]!.view).to.include({ kind: "sidecar", namespace: "billing", interceptionMode: "REDIRECT" });
    expect(views[1]!.view).to.include({ kind: "grpc", namespace: "billing", interceptionMode: "NONE" });
  });

  it("adds a view per WorkloadGroup no WorkloadEntry stands for, and per Gateway selector", () => {
    const wg = (name: string, labels: string) => `apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: ${name}, namespace: shop}
spec:
  metadata: {labels: {${labels}}}
  template: {serviceAccount: app}
`;
    const gw = `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: shop}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
`;
    const snap = snapshotOf({ "w.yaml": WE("shop", "web-1", "10.0.0.1", "app: web"), "g.yaml": [wg("web", "app: web"), wg("batch", "app: batch")].join("---\n"), "gw.yaml": gw });
    const views = defaultViews(snap, snap);
    const byLabel = Object.fromEntries(views.map((v) => [v.label, v]));
    expect(byLabel["sidecar in shop {app=web}"]!.represents).to.deep.equal(["WorkloadEntry shop/web-1", "WorkloadGroup shop/web"]);
    expect(byLabel["sidecar in shop {app=batch}"]!.represents).to.deep.equal(["WorkloadGroup shop/batch"]);
    expect(byLabel["sidecar in shop {app=batch}"]!.view.ips).to.deep.equal([]);
    expect(byLabel["gateway in shop {istio=ingressgateway}"]!.view.kind).to.equal("gateway");
  });

  it("names the service account when it alone tells two label sets apart", () => {
    const snap = snapshotOf({ "w.yaml": [WE("shop", "a", "10.0.0.1", "app: web", "web"), WE("shop", "b", "10.0.0.2", "app: web", "web-admin"), WE("shop", "c", "10.0.0.3", "app: db", "db")].join("---\n") });
    expect(defaultViews(snap, snap).slice(2).map((v) => v.label)).to.deep.equal(["sidecar in shop {app=web} as web", "sidecar in shop {app=web} as web-admin", "sidecar in shop {app=db}"]);
  });

  it("parses --proxy and merges it with an equal default view", () => {
    expect(parseProxySpec("shop").view).to.include({ kind: "sidecar", namespace: "shop" });
    expect(parseProxySpec("grpc:shop").view.kind).to.equal("grpc");
    expect(parseProxySpec("shop/app=web, version=v2").view.labels).to.deep.equal({ app: "web", version: "v2" });
    for (const bad of ["", "shop/app", "shop/=x", "Shop!", "tcp:shop"]) expect(() => parseProxySpec(bad), bad).to.throw(ProxySpecError);
    const snap = snapshotOf({ "a.yaml": SE("shop", "catalog.shop.internal") });
    const merged = mergeViews([...defaultViews(snap, snap), parseProxySpec("shop"), parseProxySpec("shop/app=web")]);
    expect(merged.map((v) => `${v.label} ${v.represents.join(",")}`)).to.deep.equal([
      "sidecar in shop --proxy",
      "gRPC client in shop ",
      "sidecar in shop {app=web} --proxy",
    ]);
  });
});

function dv(namespace: string, kind: ProxyView["kind"] = "sidecar"): DiffView {
  return parseProxySpec(`${kind}:${namespace}`);
}

describe("diff: grouping by outcome", () => {
  // Two fake "configs": the generator's answer depends only on the snapshot version and the view's namespace.
  const snapA = { version: 1 } as RegistrySnapshot;
  const snapB = { version: 2 } as RegistrySnapshot;
  const gen: Generate = (snap, view) => {
    const weight = snap.version === 1 ? 90 : view.namespace === "web" ? 90 : 70;
    const clusters: Record<string, unknown> = { "outbound|80||x": { name: "outbound|80||x", connect_timeout: "1s" } };
    if (snap.version === 2 && view.namespace === "shop") clusters["outbound|80|v2|x"] = { name: "outbound|80|v2|x" };
    return resources({ clusters, routes: { "80": { name: "80", virtual_hosts: [{ name: "x:80", routes: [{ route: { weighted_clusters: { clusters: [{ name: "a", weight }] } } }] }] } } });
  };

  it("groups views with identical changes, widest blast radius first, and keeps the unchanged apart", () => {
    const views = [dv("shop"), dv("billing"), dv("web"), dv("admin"), dv("shop", "grpc"), dv("ops")];
    const diff = compareConfigs(snapA, snapB, views, gen);
    expect(diff.groups.map((g) => g.views.map((v) => v.label))).to.deep.equal([
      ["sidecar in billing", "sidecar in admin", "sidecar in ops"],
      ["sidecar in shop", "gRPC client in shop"],
    ]);
    expect(diff.unchanged.map((v) => v.label)).to.deep.equal(["sidecar in web"]);
    expect(diff.groups[1]!.changes.map((c) => `${c.action} ${c.type} ${c.name}`)).to.deep.equal(["added cluster outbound|80|v2|x", "changed route 80"]);

    const text = formatText(diff, { dir: "old", revision: "a".repeat(40) }, { dir: "new" });
    expect(text).to.equal(
      [
        "--- old (git aaaaaaaaaaaa)",
        "+++ new",
        "5 of 6 proxy views change, in namespaces admin, billing, ops, shop",
        "",
        "3 proxy views in namespaces admin, billing, ops: 1 changed resource",
        "    sidecar in billing [--proxy]",
        "    sidecar in admin [--proxy]",
        "    sidecar in ops [--proxy]",
        "  ~ route 80",
        "      virtual_hosts[0].routes[0].route.weighted_clusters.clusters[0].weight: 90 -> 70",
        "",
        "2 proxy views in namespace shop: 1 changed, 1 added resources",
        "    sidecar in shop [--proxy]",
        "    gRPC client in shop [--proxy]",
        "  + cluster outbound|80|v2|x added",
        "  ~ route 80",
        "      virtual_hosts[0].routes[0].route.weighted_clusters.clusters[0].weight: 90 -> 70",
        "",
        "unchanged: 1 proxy view (namespaces web)",
        "",
      ].join("\n"),
    );
    const json = jsonReport(diff, { dir: "old" }, { dir: "new" }) as { changed: boolean; groups: { proxies: { namespace: string }[]; changes: unknown[] }[] };
    expect(json.changed).to.equal(true);
    expect(json.groups[0]!.proxies.map((p) => p.namespace)).to.deep.equal(["billing", "admin", "ops"]);
  });

  it("says so when nothing changes", () => {
    const diff = compareConfigs(snapA, snapA, [dv("shop")], gen);
    expect(diff.groups).to.deep.equal([]);
    expect(formatText(diff, { dir: "a" }, { dir: "b" })).to.contain("no change for any of 1 proxy view (namespaces shop)");
  });

  it("caps the field lines of one resource in text", () => {
    const many: Generate = (snap) => resources({ clusters: { c: Object.fromEntries(Array.from({ length: 30 }, (_, i) => [`f${i}`, snap.version])) } });
    const text = formatText(compareConfigs(snapA, snapB, [dv("shop")], many), { dir: "a" }, { dir: "b" }, { maxFields: 5 });
    expect(text.split("\n").filter((l) => / f\d+: 1 -> 2$/.test(l))).to.have.length(5);
    expect(text).to.contain("... 25 more fields (--output json shows all)");
  });

  it("names the view and the side when generation fails", () => {
    const failing: Generate = (snap) => {
      if (snap.version === 2) throw new Error("no such subset");
      return resources({});
    };
    expect(() => compareConfigs(snapA, snapB, [dv("shop")], failing))
      .to.throw(GenerateError)
      .with.property("message", "generating the new config for sidecar in shop failed: no such subset");
  });

  it("with the real generators: a weight change reaches every proxy that routes to the host, and only its routes", () => {
    const files = examplesFiles();
    const traffic = Object.keys(files).find((f) => f.endsWith("catalog-traffic.yaml"))!;
    const before = snapshotOf(files);
    const after = snapshotOf({ ...files, [traffic]: files[traffic]!.replace("weight: 80", "weight: 70").replace("weight: 20", "weight: 30") });
    const diff = compareConfigs(before, after, defaultViews(before, after), generate);
    // catalog is exported everywhere: every sidecar and gRPC client routes to it. The storefront gateway routes to
    // it too, but by its own VirtualService (no canary split), so it is untouched.
    expect(diff.unchanged.map((v) => v.label)).to.deep.equal(["gateway in shop {istio=ingressgateway}"]);
    const changes = diff.groups.flatMap((g) => g.changes);
    expect(new Set(changes.map((c) => `${c.action} ${c.type}`))).to.deep.equal(new Set(["changed route"]));
    const sidecars = diff.groups.find((g) => g.views.some((v) => v.label === "sidecar in shop"))!;
    expect(sidecars.views.map((v) => v.label)).to.include.members(["sidecar in payments", "sidecar in egress", "sidecar in shop {app=catalog,version=v1}"]);
    expect(sidecars.changes.map((c) => c.name)).to.deep.equal(["8080", "9090"]);
    expect(sidecars.changes[0]!.fields!.map((f) => formatFieldChange(f))).to.deep.equal([
      "virtual_hosts[0].routes[1].route.weighted_clusters.clusters[0].weight: 80 -> 70",
      "virtual_hosts[0].routes[1].route.weighted_clusters.clusters[1].weight: 20 -> 30",
    ]);
    const grpc = diff.groups.find((g) => g.views.some((v) => v.label === "gRPC client in shop"))!;
    expect(grpc.changes.map((c) => c.name)).to.deep.equal(["catalog.shop.mesh.internal:8080", "catalog.shop.mesh.internal:9090"]);
  });
});

function examplesFiles(): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (dir: string): void => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (/\.ya?ml$/.test(e.name)) out[path.relative(EXAMPLES_DIR, p)] = fs.readFileSync(p, "utf8");
    }
  };
  walk(EXAMPLES_DIR);
  return out;
}
