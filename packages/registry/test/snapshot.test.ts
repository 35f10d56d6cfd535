// buildSnapshot: the pure merge of source states into a snapshot and its change set. Inputs are real YAML
// through the real parser (parseDocuments); Consul-provided services are built in the shape ConsulSource hands
// over, since decoration is about how the registry treats *any* source that provides services directly.
import { expect } from "chai";
import { parseDocuments } from "../src/parse/index.js";
import { DEFAULT_MESH, type AnyConfig, type Endpoint, type MeshConfig, type RegistrySnapshot, type Service, type SourceState } from "../src/model.js";
import { buildSnapshot, selectedWorkloadIdentities } from "../src/snapshot.js";
import { allocateVips } from "../src/vips.js";

const MESH: MeshConfig = { ...DEFAULT_MESH, trustDomain: "example.org" };

/** One file source's state from file name -> YAML text; the YAML must be valid. */
function fileState(files: Record<string, string>, name = "files"): SourceState {
  const objects: AnyConfig[] = [];
  for (const [file, text] of Object.entries(files)) {
    const r = parseDocuments(file, text);
    const errors = r.problems.filter((p) => p.severity === "error");
    if (errors.length > 0) throw new Error(`test fixture ${file} is invalid: ${JSON.stringify(errors)}`);
    objects.push(...r.objects);
  }
  return { objects, problems: [], status: { name, synced: true, stale: false } };
}

function serviceEntry(o: {
  name: string;
  namespace?: string;
  hosts: string[];
  selector?: Record<string, string>;
  endpoints?: string[];
  exportTo?: string[];
  ports?: { number: number; name: string; protocol: string }[];
  location?: string;
  sans?: string[];
}): string {
  const ports = o.ports ?? [{ number: 80, name: "http", protocol: "HTTP" }];
  let y = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: ${o.name}
  namespace: ${o.namespace ?? "default"}
spec:
  hosts: ${JSON.stringify(o.hosts)}
  location: ${o.location ?? "MESH_INTERNAL"}
  resolution: STATIC
  ports:
${ports.map((p) => `  - {number: ${p.number}, name: ${p.name}, protocol: ${p.protocol}}`).join("\n")}
`;
  if (o.selector) y += `  workloadSelector:\n    labels: ${JSON.stringify(o.selector)}\n`;
  if (o.endpoints) y += `  endpoints:\n${o.endpoints.map((a) => `  - address: ${a}`).join("\n")}\n`;
  if (o.exportTo) y += `  exportTo: ${JSON.stringify(o.exportTo)}\n`;
  if (o.sans) y += `  subjectAltNames: ${JSON.stringify(o.sans)}\n`;
  return y;
}

function workloadEntry(o: { name: string; namespace?: string; address: string; labels: Record<string, string>; sa?: string }): string {
  return `apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: ${o.name}
  namespace: ${o.namespace ?? "default"}
spec:
  address: ${o.address}
  labels: ${JSON.stringify(o.labels)}
${o.sa ? `  serviceAccount: ${o.sa}\n` : ""}`;
}

function virtualService(name: string, host: string, timeout: string): string {
  return `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: ${name}
spec:
  hosts: [${host}]
  http:
  - timeout: ${timeout}
    route:
    - destination:
        host: ${host}
`;
}

function addresses(s: RegistrySnapshot, key: string): string[] {
  return (s.endpoints.get(key) ?? []).map((e) => e.address).sort();
}

function sorted(set: ReadonlySet<string>): string[] {
  return [...set].sort();
}

describe("buildSnapshot", () => {
  it("resolves a workloadSelector to WorkloadEntries of the ServiceEntry's namespace only", () => {
    const s = buildSnapshot(undefined, [fileState({
      "se.yaml": serviceEntry({ name: "api", namespace: "shop", hosts: ["api.shop.internal"], selector: { app: "api" } }),
      "we.yaml": [
        workloadEntry({ name: "vm-1", namespace: "shop", address: "10.0.0.1", labels: { app: "api", version: "v1" } }),
        workloadEntry({ name: "vm-2", namespace: "shop", address: "10.0.0.2", labels: { app: "web" } }),
        workloadEntry({ name: "vm-3", namespace: "other", address: "10.0.0.3", labels: { app: "api" } }),
      ].join("---\n"),
    })], MESH);
    expect(addresses(s, "shop/api.shop.internal")).to.deep.equal(["10.0.0.1"]);
    const [ep] = s.endpoints.get("shop/api.shop.internal")!;
    expect(ep).to.deep.include({ workload: "WorkloadEntry/shop/vm-1", namespace: "shop", health: "HEALTHY" });
    expect(ep!.labels).to.deep.equal({ app: "api", version: "v1" });
    expect(s.services.get("shop/api.shop.internal")!.workloadSelector).to.deep.equal({ app: "api" });
  });

  it("makes one service per host, with exportTo normalised against the owner's namespace", () => {
    const s = buildSnapshot(undefined, [fileState({
      "a.yaml": serviceEntry({ name: "own", namespace: "egress", hosts: ["a.example.com", "b.example.com"], endpoints: ["192.0.2.1"], exportTo: ["team-x", "."] }),
      "b.yaml": serviceEntry({ name: "all", namespace: "egress", hosts: ["c.example.com"], endpoints: ["192.0.2.2"] }),
    })], MESH);
    expect([...s.services.keys()]).to.deep.equal(["egress/a.example.com", "egress/b.example.com", "egress/c.example.com"]);
    expect(s.services.get("egress/a.example.com")!.exportTo).to.deep.equal(["egress", "team-x"]);
    expect(s.services.get("egress/b.example.com")!.exportTo).to.deep.equal(["egress", "team-x"]);
    expect(s.services.get("egress/c.example.com")!.exportTo).to.deep.equal(["*"]);
    // Inline endpoints belong to the ServiceEntry's namespace, have no workload, and are shared by its hosts.
    expect(s.endpoints.get("egress/b.example.com")).to.deep.equal(s.endpoints.get("egress/a.example.com"));
    const [inline] = s.endpoints.get("egress/a.example.com")!;
    expect(inline).to.deep.include({ address: "192.0.2.1", namespace: "egress", health: "HEALTHY" });
    expect(inline).to.not.have.property("workload");
  });

  it("derives SPIFFE ids from the mesh trust domain, namespace and service account", () => {
    const s = buildSnapshot(undefined, [fileState({
      "x.yaml": [
        serviceEntry({ name: "db", namespace: "data", hosts: ["db.internal"], selector: { app: "db" } }),
        workloadEntry({ name: "db-1", namespace: "data", address: "10.1.0.1", labels: { app: "db" }, sa: "postgres" }),
        workloadEntry({ name: "db-2", namespace: "data", address: "10.1.0.2", labels: { app: "db" }, sa: "postgres" }),
        workloadEntry({ name: "db-3", namespace: "data", address: "10.1.0.3", labels: { app: "db" }, sa: "backup" }),
        workloadEntry({ name: "db-4", namespace: "data", address: "10.1.0.4", labels: { app: "db" } }),
      ].join("---\n"),
    })], MESH);
    const eps = s.endpoints.get("data/db.internal")!;
    expect(eps.map((e) => e.spiffeId)).to.deep.equal([
      "spiffe://example.org/ns/data/sa/postgres",
      "spiffe://example.org/ns/data/sa/postgres",
      "spiffe://example.org/ns/data/sa/backup",
      undefined,
    ]);
    expect(selectedWorkloadIdentities(s, "data/db.internal")).to.deep.equal([
      "spiffe://example.org/ns/data/sa/backup",
      "spiffe://example.org/ns/data/sa/postgres",
    ]);
    expect(selectedWorkloadIdentities(s, "data/nope")).to.deep.equal([]);
  });

  it("takes endpoint health from a WorkloadEntry's status (auto-registration probes), HEALTHY otherwise", () => {
    const state = fileState({
      "x.yaml": [
        serviceEntry({ name: "svc", hosts: ["svc.internal"], selector: { app: "svc" } }),
        workloadEntry({ name: "a", address: "10.0.0.1", labels: { app: "svc" } }),
        workloadEntry({ name: "b", address: "10.0.0.2", labels: { app: "svc" } }),
      ].join("---\n"),
    });
    const objects = state.objects.map((o) => (o.metadata.name === "b" ? { ...o, status: { health: "UNHEALTHY" as const } } : o));
    const s = buildSnapshot(undefined, [{ ...state, objects }], MESH);
    expect(s.endpoints.get("default/svc.internal")!.map((e) => [e.address, e.health])).to.deep.equal([
      ["10.0.0.1", "HEALTHY"],
      ["10.0.0.2", "UNHEALTHY"],
    ]);
  });

  describe("change sets", () => {
    const base = {
      "services.yaml": [
        serviceEntry({ name: "a", hosts: ["a.internal"], selector: { app: "a" } }),
        serviceEntry({ name: "b", hosts: ["b.internal"], selector: { app: "b" } }),
        serviceEntry({ name: "c", hosts: ["c.internal"], endpoints: ["10.9.0.1"] }),
      ].join("---\n"),
      "vm-1.yaml": workloadEntry({ name: "vm-1", address: "10.0.0.1", labels: { app: "a" } }),
      "vm-2.yaml": workloadEntry({ name: "vm-2", address: "10.0.0.2", labels: { app: "b" } }),
      "vs.yaml": virtualService("a-routes", "a.internal", "5s"),
    };

    it("marks everything on the first snapshot, as full, at version 1", () => {
      const s = buildSnapshot(undefined, [fileState(base)], MESH);
      expect(s.version).to.equal(1);
      expect(s.changes.full).to.equal(true);
      expect(sorted(s.changes.services)).to.deep.equal(["default/a.internal", "default/b.internal", "default/c.internal"]);
      expect(sorted(s.changes.routing)).to.deep.equal(["VirtualService/default/a-routes"]);
    });

    it("returns the previous snapshot itself when nothing changed, even if objects were re-parsed", () => {
      const s1 = buildSnapshot(undefined, [fileState(base)], MESH);
      const s2 = buildSnapshot(s1, [fileState(base)], MESH);
      expect(s2).to.equal(s1);
      // A trailing comment: new text, same objects at the same positions.
      const s3 = buildSnapshot(s1, [fileState({ ...base, "vs.yaml": base["vs.yaml"] + "# reviewed\n" })], MESH);
      expect(s3).to.equal(s1);
    });

    it("marks only the services selecting an edited WorkloadEntry, old selection and new", () => {
      const s1 = buildSnapshot(undefined, [fileState(base)], MESH);
      const s2 = buildSnapshot(s1, [fileState({ ...base, "vm-1.yaml": workloadEntry({ name: "vm-1", address: "10.0.0.11", labels: { app: "a" } }) })], MESH);
      expect(s2.version).to.equal(2);
      expect(s2.changes.full).to.equal(false);
      expect(sorted(s2.changes.endpoints)).to.deep.equal(["default/a.internal"]);
      expect(sorted(s2.changes.services)).to.deep.equal([]);
      expect(sorted(s2.changes.routing)).to.deep.equal([]);
      expect(addresses(s2, "default/a.internal")).to.deep.equal(["10.0.0.11"]);
      // Untouched services and endpoint lists are the very objects of the previous snapshot.
      expect(s2.services.get("default/b.internal")).to.equal(s1.services.get("default/b.internal"));
      expect(s2.endpoints.get("default/b.internal")).to.equal(s1.endpoints.get("default/b.internal"));
      expect(s2.services.get("default/b.internal")!.autoAddresses).to.have.length(2);

      // vm-1 moves from service a to service b: both change, c does not.
      const s3 = buildSnapshot(s2, [fileState({ ...base, "vm-1.yaml": workloadEntry({ name: "vm-1", address: "10.0.0.11", labels: { app: "b" } }) })], MESH);
      expect(s3.version).to.equal(3);
      expect(sorted(s3.changes.endpoints)).to.deep.equal(["default/a.internal", "default/b.internal"]);
      expect(addresses(s3, "default/a.internal")).to.deep.equal([]);
      expect(addresses(s3, "default/b.internal")).to.deep.equal(["10.0.0.11", "10.0.0.2"]);
    });

    it("marks a health change reported in a WorkloadEntry's status as an endpoint change", () => {
      const state = fileState(base);
      const s1 = buildSnapshot(undefined, [state], MESH);
      const withHealth = (h: "HEALTHY" | "UNHEALTHY"): SourceState => ({
        ...state,
        objects: state.objects.map((o) => (o.metadata.name === "vm-2" ? { ...o, status: { health: h } } : o)),
      });
      const s2 = buildSnapshot(s1, [withHealth("UNHEALTHY")], MESH);
      expect(sorted(s2.changes.endpoints)).to.deep.equal(["default/b.internal"]);
      expect(s2.endpoints.get("default/b.internal")![0]!.health).to.equal("UNHEALTHY");
      // Reported HEALTHY is what an absent status means: back to the first snapshot's endpoints.
      const s3 = buildSnapshot(s2, [withHealth("HEALTHY")], MESH);
      expect(sorted(s3.changes.endpoints)).to.deep.equal(["default/b.internal"]);
      expect(s3.endpoints.get("default/b.internal")).to.deep.equal(s1.endpoints.get("default/b.internal"));
    });

    it("reports a VirtualService edit as a routing change only", () => {
      const s1 = buildSnapshot(undefined, [fileState(base)], MESH);
      const s2 = buildSnapshot(s1, [fileState({ ...base, "vs.yaml": virtualService("a-routes", "a.internal", "9s") })], MESH);
      expect(sorted(s2.changes.routing)).to.deep.equal(["VirtualService/default/a-routes"]);
      expect(s2.changes.services.size + s2.changes.endpoints.size).to.equal(0);
      const { "vs.yaml": _removed, ...rest } = base;
      const s3 = buildSnapshot(s2, [fileState(rest)], MESH);
      expect(sorted(s3.changes.routing)).to.deep.equal(["VirtualService/default/a-routes"]);
      expect(s3.configs.has("VirtualService/default/a-routes")).to.equal(false);
    });

    it("publishes a moved object (new line) with an empty change set: /debug/configz must show where it is now", () => {
      const s1 = buildSnapshot(undefined, [fileState(base)], MESH);
      const s2 = buildSnapshot(s1, [fileState({ ...base, "vs.yaml": "# header comment\n" + base["vs.yaml"] })], MESH);
      expect(s2.version).to.equal(2);
      expect(s2.configs.get("VirtualService/default/a-routes")!.origin).to.deep.include({ line: 2 });
      expect(s2.changes.routing.size + s2.changes.services.size + s2.changes.endpoints.size).to.equal(0);
    });

    it("marks a removed service in services and endpoints", () => {
      const s1 = buildSnapshot(undefined, [fileState(base)], MESH);
      const s2 = buildSnapshot(s1, [fileState({ ...base, "services.yaml": base["services.yaml"].split("---\n").slice(0, 2).join("---\n") })], MESH);
      expect(sorted(s2.changes.services)).to.deep.equal(["default/c.internal"]);
      expect(sorted(s2.changes.endpoints)).to.deep.equal(["default/c.internal"]);
      expect(s2.services.has("default/c.internal")).to.equal(false);
      expect(s2.endpoints.has("default/c.internal")).to.equal(false);
    });

    it("marks a mesh change as full, and re-derives SPIFFE ids from the new trust domain", () => {
      const files = { ...base, "vm-1.yaml": workloadEntry({ name: "vm-1", address: "10.0.0.1", labels: { app: "a" }, sa: "api" }) };
      const s1 = buildSnapshot(undefined, [fileState(files)], MESH);
      expect(selectedWorkloadIdentities(s1, "default/a.internal")).to.deep.equal(["spiffe://example.org/ns/default/sa/api"]);
      const s2 = buildSnapshot(s1, [fileState(files)], { ...MESH, trustDomain: "prod.example.org" });
      expect(s2.changes.full).to.equal(true);
      expect(s2.version).to.equal(2);
      expect(selectedWorkloadIdentities(s2, "default/a.internal")).to.deep.equal(["spiffe://prod.example.org/ns/default/sa/api"]);
      expect(sorted(s2.changes.endpoints)).to.deep.equal(["default/a.internal"]);
      expect(buildSnapshot(s2, [fileState(files)], { ...MESH, trustDomain: "prod.example.org" })).to.equal(s2);
    });
  });

  it("gives a host+port claimed by two ServiceEntries of one namespace to the precedence winner", () => {
    // Precedence (validate.compareServiceEntryPrecedence): namespace, then name, so `alpha` beats `beta`.
    const s = buildSnapshot(undefined, [fileState({
      "z-alpha.yaml": serviceEntry({ name: "alpha", hosts: ["shared.internal"], endpoints: ["10.0.0.1"], ports: [{ number: 80, name: "http", protocol: "HTTP" }] }),
      "a-beta.yaml": serviceEntry({
        name: "beta",
        hosts: ["shared.internal"],
        endpoints: ["10.0.0.2"],
        ports: [{ number: 80, name: "tcp-legacy", protocol: "TCP" }, { number: 8080, name: "admin", protocol: "HTTP" }],
      }),
      "other-ns.yaml": serviceEntry({ name: "aaa", namespace: "elsewhere", hosts: ["shared.internal"], endpoints: ["10.0.0.3"], ports: [{ number: 80, name: "tcp", protocol: "TCP" }] }),
    })], MESH);
    const svc = s.services.get("default/shared.internal")!;
    expect(svc.configKey).to.equal("ServiceEntry/default/alpha");
    expect(svc.ports).to.deep.equal([
      { number: 80, name: "http", protocol: "HTTP" },
      { number: 8080, name: "admin", protocol: "HTTP" },
    ]);
    expect(addresses(s, "default/shared.internal")).to.deep.equal(["10.0.0.1", "10.0.0.2"]);
    // Another namespace is another service: no conflict.
    expect(s.services.get("elsewhere/shared.internal")!.ports[0]!.protocol).to.equal("TCP");
    const conflict = s.problems.filter((p) => /both claim host/.test(p.message));
    expect(conflict).to.have.length(1);
    expect(conflict[0]).to.deep.include({ severity: "warning", file: "a-beta.yaml", name: "beta" });
  });

  it("keeps one definition of a duplicated key, by file order, and reports the other naming both files", () => {
    const one = fileState({ "b.yaml": serviceEntry({ name: "dup", hosts: ["from-b.internal"], endpoints: ["10.0.0.2"] }) }, "dir-1");
    const two = fileState({ "a.yaml": serviceEntry({ name: "dup", hosts: ["from-a.internal"], endpoints: ["10.0.0.1"] }) }, "dir-2");
    for (const states of [[one, two], [two, one]]) {
      const s = buildSnapshot(undefined, states, MESH);
      expect([...s.services.keys()]).to.deep.equal(["default/from-a.internal"]);
      const dup = s.problems.filter((p) => p.severity === "error");
      expect(dup).to.have.length(1);
      expect(dup[0]!.file).to.equal("b.yaml");
      expect(dup[0]!.message).to.contain("a.yaml:1:1");
      expect(dup[0]!.message).to.contain("ServiceEntry/default/dup");
    }
  });

  it("carries every source's problems, sorted by file and line", () => {
    const state = fileState({ "ok.yaml": serviceEntry({ name: "ok", hosts: ["ok.internal"], endpoints: ["10.0.0.1"] }) });
    const bad = parseDocuments("bad.yaml", "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: x}\nspec:\n  hots: [x]\n");
    expect(bad.objects).to.have.length(0);
    const s = buildSnapshot(undefined, [{ ...state, problems: bad.problems }], MESH);
    expect(s.problems.length).to.equal(bad.problems.length);
    expect(s.problems.some((p) => p.file === "bad.yaml" && p.line === 5)).to.equal(true);
    expect(s.services.has("default/ok.internal")).to.equal(true);
  });

  describe("services provided by a source (Consul)", () => {
    const origin = { type: "consul" as const, datacenter: "dc1", service: "payments", index: 7 };
    const consulService: Service = {
      key: "default/payments.service.consul",
      hostname: "payments.service.consul",
      namespace: "default",
      addresses: [],
      ports: [{ number: 8443, name: "grpc", protocol: "GRPC" }],
      resolution: "STATIC",
      location: "MESH_INTERNAL",
      exportTo: ["*"],
      subjectAltNames: [],
      configKey: "ConsulService/default/payments",
      origin,
    };
    const consulEndpoints: Endpoint[] = [
      { address: "10.5.0.1", ports: { grpc: 8443 }, labels: {}, health: "HEALTHY", namespace: "default", origin, locality: "dc1" },
      { address: "10.5.0.2", ports: { grpc: 8443 }, labels: {}, health: "DEGRADED", namespace: "default", origin, locality: "dc1" },
    ];
    const consul = (): SourceState => ({
      objects: [],
      services: [structuredClone(consulService)],
      endpoints: new Map([[consulService.key, structuredClone(consulEndpoints)]]),
      problems: [],
      status: { name: "consul", synced: true, stale: false, revision: "7" },
    });

    it("serves them as given when no ServiceEntry names the host, with an automatic VIP like any address-less service", () => {
      const s = buildSnapshot(undefined, [fileState({}), consul()], MESH);
      const { autoAddresses, ...served } = s.services.get("default/payments.service.consul")!;
      expect(served).to.deep.equal(consulService);
      expect(autoAddresses).to.deep.equal(allocateVips([consulService]).get(consulService.key));
      expect(s.endpoints.get("default/payments.service.consul")).to.deep.equal(consulEndpoints);
    });

    it("lets a file ServiceEntry with the same host decorate them: SANs, exportTo and location, Consul's endpoints", () => {
      const files = fileState({
        "payments.yaml": serviceEntry({
          name: "payments-tls",
          namespace: "billing",
          hosts: ["payments.service.consul", "payments.billing.internal"],
          location: "MESH_EXTERNAL",
          exportTo: ["."],
          sans: ["spiffe://example.org/ns/billing/sa/payments"],
          endpoints: ["10.99.0.1"],
        }),
      });
      const s = buildSnapshot(undefined, [files, consul()], MESH);
      const svc = s.services.get("default/payments.service.consul")!;
      expect(svc).to.deep.include({
        location: "MESH_EXTERNAL",
        configKey: "ConsulService/default/payments",
        decoratedBy: "ServiceEntry/billing/payments-tls",
      });
      expect(svc.exportTo).to.deep.equal(["billing"]);
      expect(svc.subjectAltNames).to.deep.equal(["spiffe://example.org/ns/billing/sa/payments"]);
      expect(svc.ports).to.deep.equal(consulService.ports);
      expect(addresses(s, "default/payments.service.consul")).to.deep.equal(["10.5.0.1", "10.5.0.2"]);
      // No second service for the decorated host; the entry's other host is an ordinary service.
      expect([...s.services.keys()].filter((k) => k.endsWith("/payments.service.consul"))).to.deep.equal(["default/payments.service.consul"]);
      expect(addresses(s, "billing/payments.billing.internal")).to.deep.equal(["10.99.0.1"]);
      const warning = s.problems.find((p) => p.file === "payments.yaml" && p.severity === "warning" && /ignored/.test(p.message));
      expect(warning, JSON.stringify(s.problems)).to.not.equal(undefined);
    });

    it("does not warn about a decorating entry that declares no endpoints of its own", () => {
      const files = fileState({
        "payments.yaml": `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: payments-sans}
spec:
  hosts: [payments.service.consul]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8443, name: grpc, protocol: GRPC}]
  subjectAltNames: [payments.example.org]
`,
      });
      const s = buildSnapshot(undefined, [files, consul()], MESH);
      expect(s.services.get("default/payments.service.consul")!.subjectAltNames).to.deep.equal(["payments.example.org"]);
      expect(s.problems).to.deep.equal([]);
    });

    it("marks endpoint changes of a provided service; an origin-only change is published with no changes marked", () => {
      const s1 = buildSnapshot(undefined, [consul()], MESH);
      expect(buildSnapshot(s1, [consul()], MESH)).to.equal(s1);
      const moved = consul();
      (moved.endpoints as Map<string, Endpoint[]>).get(consulService.key)![0]!.origin = { ...origin, index: 8 };
      const s2 = buildSnapshot(s1, [moved], MESH);
      expect(s2.version).to.equal(2);
      expect(s2.changes.endpoints.size + s2.changes.services.size).to.equal(0);
      const unhealthy = consul();
      (unhealthy.endpoints as Map<string, Endpoint[]>).get(consulService.key)![1]!.health = "UNHEALTHY";
      const s3 = buildSnapshot(s2, [unhealthy], MESH);
      expect(sorted(s3.changes.endpoints)).to.deep.equal(["default/payments.service.consul"]);
      expect(s3.changes.services.size).to.equal(0);
      expect(s3.endpoints.get(consulService.key)!.map((e) => e.health)).to.deep.equal(["HEALTHY", "UNHEALTHY"]);
    });
  });

  it("publishes frozen snapshots", () => {
    const s = buildSnapshot(undefined, [fileState({
      "x.yaml": serviceEntry({ name: "svc", hosts: ["svc.internal"], endpoints: ["10.0.0.1"] }),
    })], MESH);
    const svc = s.services.get("default/svc.internal")!;
    const eps = s.endpoints.get("default/svc.internal")!;
    expect(Object.isFrozen(s)).to.equal(true);
    // Reflect.set reports a refused write whether or not the caller runs in strict mode.
    expect(Reflect.set(svc, "hostname", "x")).to.equal(false);
    expect(svc.hostname).to.equal("svc.internal");
    expect(() => (svc.ports as unknown[]).push({})).to.throw(TypeError);
    expect(Reflect.set(svc.ports[0]!, "number", 81)).to.equal(false);
    expect(Reflect.set(eps[0]!, "address", "x")).to.equal(false);
    expect(() => (eps as unknown[]).push({})).to.throw(TypeError);
    expect(Reflect.set(s.configs.get("ServiceEntry/default/svc")!.spec, "hosts", [])).to.equal(false);
    expect(() => (s.problems as unknown[]).push({})).to.throw(TypeError);
  });
});
