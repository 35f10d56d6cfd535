// Registry over a real FileSource (real files, real chokidar, real parser) and, for Consul-provided services, a
// small in-test RegistrySource: a test double of the source interface, not of a peer.
import { expect } from "chai";
import { EventEmitter } from "node:events";
import { appendFile, mkdtemp, rm, utimes, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { FileSource } from "../src/file-source.js";
import { setLogLevel } from "../src/logger.js";
import type { Endpoint, RegistrySnapshot, RegistrySource, Service, SourceState } from "../src/model.js";
import { Registry } from "../src/registry.js";
import { selectedWorkloadIdentities } from "../src/snapshot.js";
import { until } from "../../../test/helpers/poll.js";

if (!process.env.VMPILOT_LOG_LEVEL) setLogLevel("error");

const nextTurn = () => new Promise((r) => setImmediate(r));

const SERVICES = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: shop}
spec:
  hosts: [api.shop.internal]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP}]
  workloadSelector:
    labels: {app: api}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web, namespace: shop}
spec:
  hosts: [web.shop.internal]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  workloadSelector:
    labels: {app: web}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: payments, namespace: billing}
spec:
  hosts: [payments.service.consul]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8443, name: grpc, protocol: GRPC}]
  subjectAltNames: [spiffe://example.org/ns/billing/sa/payments]
`;

function vm(name: string, address: string, app: string, sa = "shop-sa"): string {
  return `apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ${name}, namespace: shop}
spec:
  address: ${address}
  labels: {app: ${app}}
  serviceAccount: ${sa}
`;
}

function routes(timeout: string): string {
  return `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api-routes, namespace: shop}
spec:
  hosts: [api.shop.internal]
  http:
  - timeout: ${timeout}
    route:
    - destination: {host: api.shop.internal}
`;
}

/** Stands in for ConsulSource: services and endpoints handed over directly. */
class ProvidedServices extends EventEmitter<{ change: [] }> implements RegistrySource {
  readonly name = "consul-double";
  started = 0;
  stopped = 0;
  private state: SourceState;

  constructor(health: Endpoint["health"]) {
    super();
    this.state = ProvidedServices.stateWith(health);
  }

  static stateWith(health: Endpoint["health"]): SourceState {
    const origin = { type: "consul" as const, datacenter: "dc1", service: "payments", index: 1 };
    const service: Service = {
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
    const endpoints: Endpoint[] = [{ address: "10.5.0.1", ports: { grpc: 8443 }, labels: {}, health, namespace: "default", origin }];
    return {
      objects: [],
      services: [service],
      endpoints: new Map([[service.key, endpoints]]),
      problems: [],
      status: { name: "consul-double", synced: true, stale: false },
    };
  }

  async start(): Promise<void> {
    this.started++;
  }
  async stop(): Promise<void> {
    this.stopped++;
  }
  current(): SourceState {
    return this.state;
  }
  setHealth(health: Endpoint["health"]): void {
    this.state = ProvidedServices.stateWith(health);
    this.emit("change");
  }
}

describe("Registry", function () {
  this.timeout(60_000);
  let dir: string;
  let registry: Registry | undefined;
  let files: FileSource;
  let published: RegistrySnapshot[];

  async function startRegistry(extra: Record<string, string> = {}): Promise<Registry> {
    await writeFile(path.join(dir, "services.yaml"), SERVICES);
    await writeFile(path.join(dir, "vm-1.yaml"), vm("vm-1", "10.0.0.1", "api"));
    await writeFile(path.join(dir, "vm-2.yaml"), vm("vm-2", "10.0.0.2", "web"));
    await writeFile(path.join(dir, "routes.yaml"), routes("5s"));
    for (const [name, text] of Object.entries(extra)) await writeFile(path.join(dir, name), text);
    files = new FileSource({ dirs: [dir], debounceMs: { quiet: 50, max: 500 } });
    registry = new Registry({ sources: [files], mesh: { trustDomain: "example.org" } });
    published = [];
    registry.on("snapshot", (s) => published.push(s));
    await registry.start();
    return registry;
  }

  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "vmpilot-registry-"));
  });
  afterEach(async () => {
    await registry?.stop();
    registry = undefined;
    await rm(dir, { recursive: true, force: true });
  });

  it("publishes a full first snapshot from the files, serving the good ones when one is bad", async () => {
    expect(new Registry().current().version).to.equal(0);
    const r = await startRegistry({ "broken.yaml": "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: x, namespace: shop}\nspec:\n  adress: 10.0.0.9\n" });
    const s = r.current();
    expect(s.version).to.equal(1);
    expect(s.changes.full).to.equal(true);
    expect(published).to.deep.equal([s]);
    expect(r.synced).to.equal(true);
    expect([...s.services.keys()]).to.deep.equal(["billing/payments.service.consul", "shop/api.shop.internal", "shop/web.shop.internal"]);
    expect(s.endpoints.get("shop/api.shop.internal")!.map((e) => e.address)).to.deep.equal(["10.0.0.1"]);
    expect(selectedWorkloadIdentities(s, "shop/api.shop.internal")).to.deep.equal(["spiffe://example.org/ns/shop/sa/shop-sa"]);
    const bad = s.problems.find((p) => p.file === path.join(dir, "broken.yaml") && p.severity === "error");
    expect(bad, JSON.stringify(s.problems)).to.not.equal(undefined);
    expect(bad!.line).to.equal(5);
    expect(s.sources).to.have.length(1);
    expect(s.sources[0]).to.deep.include({ name: "files", synced: true, stale: false });
    expect(s.sources[0]!.lastError).to.match(/broken\.yaml:5:\d+: /);
  });

  it("publishes a WorkloadEntry edit as an endpoint change of the services selecting it only", async () => {
    const r = await startRegistry();
    await writeFile(path.join(dir, "vm-1.yaml"), vm("vm-1", "10.0.0.11", "api"));
    const s = await until("snapshot 2", () => published.find((p) => p.version === 2));
    expect([...s.changes.endpoints]).to.deep.equal(["shop/api.shop.internal"]);
    expect(s.changes.services.size + s.changes.routing.size).to.equal(0);
    expect(s.changes.full).to.equal(false);
    expect(s.endpoints.get("shop/api.shop.internal")!.map((e) => e.address)).to.deep.equal(["10.0.0.11"]);
    expect(r.current()).to.equal(s);

    // Relabelled from api to web: both services' endpoints change.
    await writeFile(path.join(dir, "vm-1.yaml"), vm("vm-1", "10.0.0.11", "web"));
    const s3 = await until("snapshot 3", () => published.find((p) => p.version === 3));
    expect([...s3.changes.endpoints].sort()).to.deep.equal(["shop/api.shop.internal", "shop/web.shop.internal"]);
  });

  it("publishes a VirtualService edit as a routing change only", async () => {
    await startRegistry();
    await writeFile(path.join(dir, "routes.yaml"), routes("30s"));
    const s = await until("snapshot 2", () => published.find((p) => p.version === 2));
    expect([...s.changes.routing]).to.deep.equal(["VirtualService/shop/api-routes"]);
    expect(s.changes.services.size + s.changes.endpoints.size).to.equal(0);
  });

  it("publishes nothing, and keeps the version, when files change but the config does not", async () => {
    const r = await startRegistry();
    let sourceChanges = 0;
    files.on("change", () => sourceChanges++);

    // A trailing comment: the source re-parses and reports a change; the registry finds nothing new.
    await appendFile(path.join(dir, "routes.yaml"), "# reviewed by ops\n");
    await until("the file source saw the edit", () => sourceChanges > 0);
    await nextTurn();
    await nextTurn();
    expect(r.current().version).to.equal(1);
    expect(published).to.have.length(1);

    // A touch (same bytes), then a real edit: exactly one more snapshot, carrying only the edit.
    const later = new Date(Date.now() + 5000);
    await utimes(path.join(dir, "services.yaml"), later, later);
    await writeFile(path.join(dir, "vm-2.yaml"), vm("vm-2", "10.0.0.22", "web"));
    const s = await until("snapshot 2", () => published.find((p) => p.version === 2));
    expect([...s.changes.endpoints]).to.deep.equal(["shop/web.shop.internal"]);
    expect(s.changes.services.size + s.changes.routing.size).to.equal(0);
    expect(published.map((p) => p.version)).to.deep.equal([1, 2]);
  });

  it("adds a source at runtime; a file ServiceEntry decorates the services it provides", async () => {
    const r = await startRegistry();
    const consul = new ProvidedServices("HEALTHY");
    const s2 = await r.addSource(consul);
    expect(consul.started).to.equal(1);
    expect(s2.version).to.equal(2);
    const svc = s2.services.get("default/payments.service.consul")!;
    expect(svc.decoratedBy).to.equal("ServiceEntry/billing/payments");
    expect(svc.subjectAltNames).to.deep.equal(["spiffe://example.org/ns/billing/sa/payments"]);
    expect(s2.services.has("billing/payments.service.consul")).to.equal(false);
    expect(s2.endpoints.get("default/payments.service.consul")!.map((e) => e.address)).to.deep.equal(["10.5.0.1"]);
    expect(s2.changes.services.has("default/payments.service.consul")).to.equal(true);
    expect(s2.changes.services.has("billing/payments.service.consul")).to.equal(true);

    consul.setHealth("UNHEALTHY");
    const s3 = await until("snapshot 3", () => published.find((p) => p.version === 3));
    expect([...s3.changes.endpoints]).to.deep.equal(["default/payments.service.consul"]);
    expect(s3.endpoints.get("default/payments.service.consul")![0]!.health).to.equal("UNHEALTHY");

    await r.stop();
    registry = undefined;
    expect(consul.stopped).to.equal(1);
    // Stopped: a late change from a source publishes nothing.
    consul.setHealth("HEALTHY");
    await nextTurn();
    expect(published.map((p) => p.version)).to.deep.equal([1, 2, 3]);
  });

  it("publishes a full snapshot on a mesh change, and nothing when the mesh is the same", async () => {
    const r = await startRegistry();
    expect(r.setMesh({ trustDomain: "example.org" })).to.equal(r.current());
    expect(published).to.have.length(1);
    const s2 = r.setMesh({ trustDomain: "prod.example.org", outboundTrafficPolicy: "REGISTRY_ONLY" });
    expect(s2.version).to.equal(2);
    expect(s2.changes.full).to.equal(true);
    expect(s2.mesh.outboundTrafficPolicy).to.equal("REGISTRY_ONLY");
    expect(selectedWorkloadIdentities(s2, "shop/api.shop.internal")).to.deep.equal(["spiffe://prod.example.org/ns/shop/sa/shop-sa"]);
    expect(published).to.deep.equal([published[0], s2]);
  });
});
