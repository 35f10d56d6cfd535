// The per-proxy DNS name table: built from a real snapshot (real YAML through the real parser and
// buildSnapshot, plus a Consul-shaped source state), encoded and decoded with our own proto.
import { expect } from "chai";
import {
  allocateVips,
  buildSnapshot,
  DEFAULT_MESH,
  parseDocuments,
  type AnyConfig,
  type Endpoint,
  type RegistrySnapshot,
  type Service,
  type SourceState,
} from "@vmpilot/registry";
import { proxyViewFromNode, type ProxyView } from "../src/proxy-view.js";
import { decodeNameTable, encodeNameTable, nameTable, nameTableMessageType, NAME_TABLE_RESOURCE_NAME, NAME_TABLE_TYPE_URL } from "../src/generators/nametable.js";
import { NameTableCache, withNameTables } from "../src/dns/nametable-cache.js";

function fileState(text: string): SourceState {
  const r = parseDocuments("mesh.yaml", text);
  const errors = r.problems.filter((p) => p.severity === "error");
  if (errors.length > 0) throw new Error(`fixture invalid: ${JSON.stringify(errors)}`);
  return { objects: r.objects as AnyConfig[], problems: [], status: { name: "files", synced: true, stale: false } };
}

function consulState(): SourceState {
  const origin = { type: "consul" as const, datacenter: "DC1", service: "billing", index: 7 };
  const service: Service = {
    key: "default/billing.service.consul",
    hostname: "billing.service.consul",
    namespace: "default",
    addresses: [],
    ports: [{ number: 8080, name: "http", protocol: "HTTP" }],
    resolution: "STATIC",
    location: "MESH_INTERNAL",
    exportTo: ["*"],
    subjectAltNames: [],
    configKey: "consul/DC1/billing",
    origin,
  };
  const endpoint: Endpoint = { address: "10.9.0.1", ports: { http: 8080 }, labels: {}, health: "HEALTHY", namespace: "default", origin };
  // A passthrough service with one endpoint failing its checks: DNS must not hand that address out.
  const direct: Service = { ...service, key: "default/direct.service.consul", hostname: "direct.service.consul", resolution: "NONE", configKey: "consul/DC1/direct" };
  const healthy: Endpoint = { ...endpoint, address: "10.9.1.1" };
  const failing: Endpoint = { ...endpoint, address: "10.9.1.2", health: "UNHEALTHY" };
  return {
    objects: [],
    services: [service, direct],
    endpoints: new Map([
      [service.key, [endpoint]],
      [direct.key, [healthy, failing]],
    ]),
    problems: [],
    status: { name: "consul", synced: true, stale: false },
  };
}

function se(name: string, ns: string, body: string): string {
  return `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: ${name}, namespace: ${ns} }
spec:
${body}
---
`;
}

function we(name: string, ns: string, address: string, app: string): string {
  return `apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: ${name}, namespace: ${ns} }
spec: { address: ${address}, labels: { app: ${app} } }
---
`;
}

const PORTS = "  ports: [{ number: 5432, name: tcp, protocol: TCP }]";
const MESH_YAML = [
  se("declared", "apps", `  hosts: [declared.internal]\n  addresses: [192.0.2.10, 10.20.0.0/16, "2001:db8::10"]\n${PORTS}\n  resolution: DNS`),
  se("cidr-only", "apps", `  hosts: [cidr.internal]\n  addresses: [10.30.0.0/16]\n${PORTS}\n  resolution: NONE`),
  se("auto", "apps", `  hosts: [db.internal, Cache.Internal]\n${PORTS}\n  resolution: DNS`),
  se("passthrough", "apps", `  hosts: [legacy.internal]\n${PORTS}\n  resolution: NONE\n  location: MESH_INTERNAL\n  workloadSelector: { labels: { app: legacy } }`),
  we("legacy-b", "apps", "10.1.0.2", "legacy"),
  we("legacy-a", "apps", "10.1.0.1", "legacy"),
  se("wild-declared", "apps", `  hosts: ["*.corp.example"]\n  addresses: [192.0.2.50]\n${PORTS}\n  resolution: NONE`),
  se("wild-bare", "apps", `  hosts: ["*.cdn.example"]\n${PORTS}\n  resolution: NONE`),
  se("private", "other", `  hosts: [private.other]\n  exportTo: ["."]\n${PORTS}\n  resolution: DNS`),
  se("shared-apps", "apps", `  hosts: [shared.internal]\n  addresses: [192.0.2.1]\n${PORTS}\n  resolution: DNS`),
  se("shared-other", "other", `  hosts: [shared.internal]\n  addresses: [192.0.2.2]\n${PORTS}\n  resolution: DNS`),
].join("");

function snapshotOf(yaml: string, prev?: RegistrySnapshot): RegistrySnapshot {
  return buildSnapshot(prev, [fileState(yaml), consulState()], DEFAULT_MESH);
}

function view(namespace: string, ips = ["10.0.0.5"]): ProxyView {
  return proxyViewFromNode({ id: `sidecar~${ips[0]}~vm-1.${namespace}~${namespace}.svc.cluster.local`, metadata: { NAMESPACE: namespace, INSTANCE_IPS: ips.join(",") } });
}

describe("nameTable", () => {
  const snapshot = snapshotOf(MESH_YAML);
  const vips = allocateVips(snapshot.services.values());

  it("answers declared IPs, else the auto VIP, else a passthrough service's endpoint IPs", () => {
    const { table } = nameTable(snapshot, view("apps"), vips);
    expect(table["declared.internal"]!.ips).to.deep.equal(["192.0.2.10", "2001:db8::10"]);
    expect(table["db.internal"]!.ips).to.deep.equal([vips.get("apps/db.internal")![0]]);
    expect(table["db.internal"]!.ips[0]).to.match(/^240\.240\./);
    // Hosts are case-insensitive: stored lower case.
    expect(table["cache.internal"]!.ips).to.deep.equal([vips.get("apps/Cache.Internal")![0]]);
    expect(table["legacy.internal"]!.ips).to.deep.equal(["10.1.0.1", "10.1.0.2"]);
    expect(table["direct.service.consul"]!.ips).to.deep.equal(["10.9.1.1"]);
    expect(table["declared.internal"]!.registry).to.equal("ServiceEntry");
  });

  it("leaves out what has no answer: CIDR-only addresses, wildcards without addresses", () => {
    const { table } = nameTable(snapshot, view("apps"), vips);
    expect(table).to.not.have.property("cidr.internal");
    expect(table).to.not.have.property("*.cdn.example");
    expect(table["*.corp.example"]!.ips).to.deep.equal(["192.0.2.50"]);
  });

  it("respects exportTo: a host exported only to its own namespace is absent elsewhere", () => {
    expect(nameTable(snapshot, view("apps"), vips).table).to.not.have.property("private.other");
    expect(nameTable(snapshot, view("other"), vips).table["private.other"]!.ips).to.have.length(1);
  });

  it("picks the proxy's own namespace when two namespaces declare the same host", () => {
    expect(nameTable(snapshot, view("apps"), vips).table["shared.internal"]!.ips).to.deep.equal(["192.0.2.1"]);
    expect(nameTable(snapshot, view("other"), vips).table["shared.internal"]!.ips).to.deep.equal(["192.0.2.2"]);
    // Neither namespace: the first in lexical order.
    expect(nameTable(snapshot, view("zzz"), vips).table["shared.internal"]!.ips).to.deep.equal(["192.0.2.1"]);
  });

  it("gives the IPv6 twin of an auto VIP only to a proxy with an IPv6 address", () => {
    const v4 = nameTable(snapshot, view("apps", ["10.0.0.5"]), vips).table["db.internal"]!.ips;
    const dual = nameTable(snapshot, view("apps", ["10.0.0.5", "fd00::5"]), vips).table["db.internal"]!.ips;
    expect(v4).to.have.length(1);
    expect(dual).to.deep.equal(vips.get("apps/db.internal"));
    expect(dual[1]).to.match(/^2001:2::f0f0:/);
  });

  it("includes Consul services under their host and Consul's datacenter-qualified name", () => {
    const info = nameTable(snapshot, view("apps"), vips).table["billing.service.consul"]!;
    expect(info.registry).to.equal("Consul");
    expect(info.ips).to.deep.equal([vips.get("default/billing.service.consul")![0]]);
    expect(info.alt_hosts).to.deep.equal(["billing.service.dc1.consul"]);
  });

  it("changes when a ServiceEntry is edited, and the encoding changes with it", () => {
    const before = nameTable(snapshot, view("apps"), vips);
    const edited = snapshotOf(MESH_YAML.replace("addresses: [192.0.2.10,", "addresses: [192.0.2.99,"), snapshot);
    const after = nameTable(edited, view("apps"), allocateVips(edited.services.values()));
    expect(after.table["declared.internal"]!.ips).to.deep.equal(["192.0.2.99", "2001:db8::10"]);
    expect(Buffer.from(encodeNameTable(after)).equals(Buffer.from(encodeNameTable(before)))).to.equal(false);
    // Everything else is untouched, VIPs included.
    const { ["declared.internal"]: _a, ...restBefore } = before.table;
    const { ["declared.internal"]: _b, ...restAfter } = after.table;
    expect(restAfter).to.deep.equal(restBefore);
  });

  it("round-trips through vmpilot.dns.v1.NameTable and encodes deterministically", () => {
    const t = nameTable(snapshot, view("apps"), vips);
    const bytes = encodeNameTable(t);
    expect(decodeNameTable(bytes)).to.deep.equal(t);
    const reversed = { table: Object.fromEntries(Object.entries(t.table).reverse()) };
    expect(Buffer.from(encodeNameTable(reversed)).equals(Buffer.from(bytes))).to.equal(true);
    expect(nameTableMessageType().fullName).to.equal(".vmpilot.dns.v1.NameTable");
  });
});

describe("NameTableCache / withNameTables (the name table as an xDS type)", () => {
  const SIDECAR = `apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: { name: narrow, namespace: apps }
spec:
  workloadSelector: { labels: { app: narrow } }
  egress:
  - hosts: ["./declared.internal", "*/billing.service.consul"]
---
`;
  const snapshot = snapshotOf(MESH_YAML + SIDECAR);

  function served(cache: NameTableCache, v: ProxyView): { version: string; table: ReturnType<typeof decodeNameTable>; bytes: Uint8Array } {
    const map = cache.resources(v);
    expect([...map.keys()]).to.deep.equal([NAME_TABLE_RESOURCE_NAME]);
    const r = map.get(NAME_TABLE_RESOURCE_NAME)!;
    expect(r.typeUrl).to.equal(NAME_TABLE_TYPE_URL);
    return { version: r.version, table: decodeNameTable(r.bytes), bytes: r.bytes };
  }

  function labelled(namespace: string, labels: Record<string, string>, ip = "10.0.0.5"): ProxyView {
    return proxyViewFromNode({ id: `sidecar~${ip}~vm.${namespace}~${namespace}.svc.cluster.local`, metadata: { NAMESPACE: namespace, LABELS: labels } });
  }

  it("serves the same table the generator builds, once per scope, shared by proxies with equal views", () => {
    const cache = new NameTableCache();
    cache.update(snapshot);
    const a = served(cache, labelled("apps", { app: "web" }, "10.0.0.5"));
    const b = served(cache, labelled("apps", { app: "web" }, "10.0.0.6"));
    expect(a.table).to.deep.equal(nameTable(snapshot, view("apps"), allocateVips(snapshot.services.values())));
    expect(b.bytes).to.equal(a.bytes); // the same encoded object, not a re-encoding
  });

  it("limits the table to a Sidecar's egress hosts, as the Envoy config is limited", () => {
    const cache = new NameTableCache();
    cache.update(snapshot);
    const narrow = served(cache, labelled("apps", { app: "narrow" }));
    expect(Object.keys(narrow.table.table).sort()).to.deep.equal(["billing.service.consul", "declared.internal"]);
    expect(Object.keys(served(cache, labelled("apps", { app: "web" })).table.table)).to.include("db.internal");
  });

  it("changes version only when the table's content changes", () => {
    const cache = new NameTableCache();
    cache.update(snapshot);
    const before = served(cache, view("apps")).version;
    // A change elsewhere (a service the proxy cannot see) keeps the version: no push for this proxy.
    const unrelated = snapshotOf(MESH_YAML.replace("addresses: [192.0.2.99]", "addresses: [192.0.2.98]") + SIDECAR, snapshot);
    cache.update(unrelated);
    expect(served(cache, view("apps")).version).to.equal(before);
    const edited = snapshotOf(MESH_YAML.replace("addresses: [192.0.2.10,", "addresses: [192.0.2.99,") + SIDECAR, unrelated);
    cache.update(edited);
    expect(served(cache, view("apps")).version).to.not.equal(before);
  });

  it("passes every other type through to the wrapped cache", () => {
    const calls: string[] = [];
    const marker = new Map([["x", { name: "x", typeUrl: "t", version: "1", bytes: new Uint8Array() }]]);
    const wrapped = withNameTables({
      update: () => calls.push("update"),
      resources: (_v, typeUrl) => (calls.push(typeUrl), marker),
    });
    wrapped.update(snapshot);
    expect(wrapped.resources(view("apps"), "type.googleapis.com/envoy.config.cluster.v3.Cluster")).to.equal(marker);
    expect(wrapped.resources(view("apps"), NAME_TABLE_TYPE_URL).get(NAME_TABLE_RESOURCE_NAME)).to.not.equal(undefined);
    expect(calls).to.deep.equal(["update", "type.googleapis.com/envoy.config.cluster.v3.Cluster"]);
  });
});
