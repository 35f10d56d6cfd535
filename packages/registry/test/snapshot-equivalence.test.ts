// The incremental snapshot build against the full one: for seeded random sequences of edits over generated
// configs (real YAML through the real parser, files re-parsed only when edited, as FileSource does; a second
// source providing services, as ConsulSource does), every step's incremental snapshot must equal the full
// rebuild's: services (with VIPs), endpoints, configs, problems, sources, version and change set, map order
// included, and "nothing changed" (the previous snapshot returned) at the same steps.
//
// The generator draws names, hosts, labels and ports from small pools on purpose: that is what makes
// collisions happen (duplicate keys across files, host+port conflicts, several entries merging into one service,
// decorated provided services, wildcard DestinationRules, selectors gaining and losing workloads).
import { expect } from "chai";
import { parseDocuments } from "../src/parse/index.js";
import { DEFAULT_MESH, type AnyConfig, type ConfigProblem, type Endpoint, type MeshConfig, type RegistrySnapshot, type Service, type SourceState } from "../src/model.js";
import { buildSnapshot, buildSnapshotFull } from "../src/snapshot.js";
import { VipAllocator, allocateVips } from "../src/vips.js";
import { seededRandom } from "../../../test/helpers/random.js";

class Gen {
  constructor(readonly random: () => number) {}
  int(n: number): number {
    return Math.floor(this.random() * n);
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }
  chance(p: number): boolean {
    return this.random() < p;
  }
  some<T>(xs: readonly T[], max: number): T[] {
    const n = 1 + this.int(max);
    return [...new Set(Array.from({ length: n }, () => this.pick(xs)))];
  }
}

const NAMESPACES = ["default", "shop"];
const NAMES = ["a", "b", "c", "d", "e", "f"];
const HOSTS = ["api.example.com", "API.example.com", "db.example.com", "web.internal", "pay.service.consul", "cart.service.consul", "*.example.com"];
const DR_HOSTS = [...HOSTS, "*.com", "*", "nomatch.org"];
const PORTS = [80, 443, 8080];
const LABELS = [{ app: "api" }, { app: "db" }, { app: "api", version: "v1" }, { version: "v1" }, { app: "web", version: "v2" }, {}];
const SUBSETS = ["v1", "v2", "canary"];

function serviceEntry(g: Gen, ns: string, name: string): unknown {
  const spec: Record<string, unknown> = {
    hosts: g.some(HOSTS.filter((h) => !h.startsWith("*") || g.chance(0.3)), 2),
    ports: g.some(PORTS, 2).map((n) => ({ number: n, name: `p${n}-${g.int(2)}`, protocol: g.pick(["HTTP", "TCP", "GRPC"]) })),
    location: g.pick(["MESH_INTERNAL", "MESH_EXTERNAL"]),
    resolution: g.pick(["STATIC", "STATIC", "DNS", "NONE"]),
  };
  if (g.chance(0.2)) spec.addresses = [`10.9.${g.int(4)}.${g.int(4)}`];
  if (g.chance(0.6)) spec.workloadSelector = { labels: g.pick(LABELS) };
  else if (g.chance(0.5)) spec.endpoints = g.some(["10.0.0.1", "10.0.0.2", "10.0.0.3"], 2).map((address) => ({ address }));
  if (g.chance(0.2)) spec.exportTo = [g.pick([".", "*", "shop"])];
  if (g.chance(0.3)) spec.subjectAltNames = [`spiffe://x/${g.int(3)}`];
  return { apiVersion: "networking.istio.io/v1", kind: "ServiceEntry", metadata: { name, namespace: ns }, spec };
}

function workloadEntry(g: Gen, ns: string, name: string): unknown {
  const spec: Record<string, unknown> = { address: `10.1.${g.int(3)}.${g.int(8)}`, labels: g.pick(LABELS) };
  if (g.chance(0.5)) spec.serviceAccount = g.pick(["sa1", "sa2"]);
  if (g.chance(0.3)) spec.ports = { [`p8080-${g.int(2)}`]: 9000 + g.int(3) };
  if (g.chance(0.2)) spec.weight = 1 + g.int(3);
  const metadata: Record<string, unknown> = { name, namespace: ns };
  if (g.chance(0.3)) metadata.labels = g.pick(LABELS);
  return { apiVersion: "networking.istio.io/v1", kind: "WorkloadEntry", metadata, spec };
}

function destinationRule(g: Gen, ns: string, name: string): unknown {
  const spec: Record<string, unknown> = { host: g.pick(DR_HOSTS) };
  if (g.chance(0.8)) spec.subsets = g.some(SUBSETS, 2).map((s) => ({ name: s, labels: { version: s } }));
  if (g.chance(0.3)) spec.exportTo = [g.pick([".", "*", "shop", "default"])];
  return { apiVersion: "networking.istio.io/v1", kind: "DestinationRule", metadata: { name, namespace: ns }, spec };
}

function virtualService(g: Gen, ns: string, name: string): unknown {
  const hosts = g.some(HOSTS.filter((h) => !h.startsWith("*")), 2);
  const route = (host: string): unknown => (g.chance(0.6) ? { destination: { host, subset: g.pick(SUBSETS) } } : { destination: { host } });
  const spec: Record<string, unknown> = { hosts, http: [{ route: [route(g.pick(HOSTS.filter((h) => !h.startsWith("*"))))] }] };
  if (g.chance(0.3)) spec.tcp = [{ route: [route(g.pick(hosts))] }];
  return { apiVersion: "networking.istio.io/v1", kind: "VirtualService", metadata: { name, namespace: ns }, spec };
}

const KINDS = [serviceEntry, serviceEntry, workloadEntry, workloadEntry, workloadEntry, destinationRule, virtualService];

/** A file: a few documents; sometimes padded so the same objects move to other lines. */
function fileText(g: Gen): string {
  const docs = Array.from({ length: 1 + g.int(3) }, () => g.pick(KINDS)(g, g.pick(NAMESPACES), g.pick(NAMES)));
  const pad = g.chance(0.2) ? "# moved\n" : "";
  return pad + docs.map((d) => JSON.stringify(d, null, 1)).join("\n---\n") + "\n";
}

/** A FileSource-like source: files re-parsed only when edited, objects listed in file order. */
class Files {
  readonly texts = new Map<string, string>();
  private readonly parsed = new Map<string, { objects: AnyConfig[]; problems: ConfigProblem[] }>();
  state: SourceState;

  constructor(
    readonly name: string,
    readonly dir: string,
  ) {
    this.state = this.aggregate();
  }

  write(file: string, text: string): void {
    this.texts.set(file, text);
    this.parsed.set(file, parseDocuments(`${this.dir}/${file}`, text));
    this.state = this.aggregate();
  }

  /** Same text, parsed again: new objects with the same content (a touch, or another file's edit in a burst). */
  reparse(file: string): void {
    this.write(file, this.texts.get(file)!);
  }

  remove(file: string): void {
    this.texts.delete(file);
    this.parsed.delete(file);
    this.state = this.aggregate();
  }

  private aggregate(): SourceState {
    const objects: AnyConfig[] = [];
    const problems: ConfigProblem[] = [];
    for (const f of [...this.parsed.keys()].sort()) {
      objects.push(...this.parsed.get(f)!.objects);
      problems.push(...this.parsed.get(f)!.problems);
    }
    return { objects, problems, status: { name: this.name, synced: true, stale: false } };
  }
}

/** A ConsulSource-like source: services provided directly, unchanged ones keeping their identity. */
class Provider {
  private readonly services = new Map<string, { service: Service; endpoints: Endpoint[] }>();
  private synced = true;
  state: SourceState = this.aggregate();

  edit(g: Gen): void {
    const name = g.pick(["pay", "cart", "api"]);
    const ns = g.pick(["default", "default", "shop"]);
    const hostname = name === "api" ? "api.example.com" : `${name}.service.consul`;
    const key = `${ns}/${hostname}`;
    if (g.chance(0.1)) this.synced = !this.synced;
    else if (this.services.has(key) && g.chance(0.3)) this.services.delete(key);
    else {
      const service: Service = {
        key,
        hostname,
        namespace: ns,
        addresses: g.chance(0.2) ? ["10.8.0.1"] : [],
        ports: [{ number: 80, name: "http", protocol: "HTTP" }],
        resolution: "STATIC",
        location: "MESH_INTERNAL",
        exportTo: ["*"],
        subjectAltNames: [],
        configKey: `consul/dc1/${name}`,
        origin: { type: "consul", datacenter: "dc1", service: name, index: g.int(3) },
      };
      const endpoints: Endpoint[] = g.some(["10.7.0.1", "10.7.0.2", "10.7.0.3"], 3).map((address) => ({
        address,
        ports: {},
        labels: {},
        health: g.pick(["HEALTHY", "UNHEALTHY"] as const),
        namespace: ns,
        origin: service.origin,
      }));
      this.services.set(key, { service, endpoints });
    }
    this.state = this.aggregate();
  }

  private aggregate(): SourceState {
    const keys = [...this.services.keys()].sort();
    const problems: ConfigProblem[] = this.synced ? [] : [{ severity: "warning", message: "consul: not synced", file: "consul", line: 0, column: 0 }];
    return {
      objects: [],
      services: keys.map((k) => this.services.get(k)!.service),
      endpoints: new Map(keys.map((k) => [k, this.services.get(k)!.endpoints])),
      problems,
      status: { name: "consul", synced: this.synced, stale: false },
    };
  }
}

/** Everything a consumer can observe of a snapshot, maps as ordered entry lists, change sets sorted. */
function observable(s: RegistrySnapshot): unknown {
  return {
    version: s.version,
    mesh: s.mesh,
    services: [...s.services],
    endpoints: [...s.endpoints],
    configs: [...s.configs],
    problems: s.problems,
    sources: s.sources,
    changes: {
      services: [...s.changes.services].sort(),
      endpoints: [...s.changes.endpoints].sort(),
      routing: [...s.changes.routing].sort(),
      full: s.changes.full,
    },
  };
}

/** JSON with object keys sorted (field order is not observable; array and map order are). */
function canonicalJson(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) => {
    if (x === null || typeof x !== "object" || Array.isArray(x)) return x;
    return Object.fromEntries(Object.entries(x as object).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  });
}

interface RunStats {
  published: number;
  unchanged: number;
  problems: number;
  services: number;
  maxConfigs: number;
}

function runSequence(seed: number, steps: number): RunStats {
  const g = new Gen(seededRandom(seed));
  const files = [new Files("files", "/conf"), new Files("files-2", "/conf2")];
  const provider = new Provider();
  let mesh: MeshConfig = { ...DEFAULT_MESH, trustDomain: "example.org" };
  const states = (): SourceState[] => [files[0]!.state, provider.state, files[1]!.state];

  let inc = buildSnapshot(undefined, states(), mesh);
  let full = buildSnapshotFull(undefined, states(), mesh);
  const stats: RunStats = { published: 0, unchanged: 0, problems: 0, services: 0, maxConfigs: 0 };
  const edits: string[] = [];
  for (let step = 0; step < steps; step++) {
    // One "change" may be several edits, as a git pull or a burst of events is.
    const burst = g.chance(0.15) ? 2 + g.int(4) : 1;
    for (let b = 0; b < burst; b++) {
      const r = g.random();
      const src = g.chance(0.8) ? files[0]! : files[1]!;
      const existing = [...src.texts.keys()];
      if (r < 0.45 || existing.length < 3) {
        const file = g.chance(0.5) && existing.length > 0 ? g.pick(existing) : `f${g.int(14)}.yaml`;
        src.write(file, fileText(g));
        edits.push(`write ${src.name}/${file}`);
      } else if (r < 0.55) {
        const file = g.pick(existing);
        src.reparse(file);
        edits.push(`reparse ${src.name}/${file}`);
      } else if (r < 0.65) {
        const file = g.pick(existing);
        src.remove(file);
        edits.push(`remove ${src.name}/${file}`);
      } else if (r < 0.8) {
        provider.edit(g);
        edits.push("provider");
      } else if (r < 0.83) {
        mesh = { ...mesh, trustDomain: g.pick(["example.org", "other.org"]) };
        edits.push(`mesh ${mesh.trustDomain}`);
      } else {
        // A file edited into an invalid state: a problem from the source, and (here) its objects gone.
        const file = g.pick(existing);
        src.write(file, "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: broken}\nspec: {hosts: [x], bogus: 1}\n");
        edits.push(`break ${src.name}/${file}`);
      }
    }

    // Now and then a snapshot is built from twice (a caller retrying): the incremental side must start over, correctly.
    const fork = g.chance(0.05);
    const nextInc = buildSnapshot(inc, states(), mesh);
    const nextFull = buildSnapshotFull(full, states(), mesh);
    const context = `seed ${seed}, step ${step}: ${edits.slice(-burst).join(", ")}`;
    expect(nextInc === inc, `${context}: incremental returned the previous snapshot: ${nextInc === inc}, full: ${nextFull === full}`).to.equal(nextFull === full);
    const a = canonicalJson(observable(nextInc));
    const b = canonicalJson(observable(nextFull));
    if (a !== b) expect(JSON.parse(a), context).to.deep.equal(JSON.parse(b));
    if (fork) {
      const again = buildSnapshot(inc, states(), mesh);
      expect(canonicalJson(observable(again)), `${context} (built again from the same snapshot)`).to.equal(a);
    }
    if (nextInc === inc) stats.unchanged++;
    else stats.published++;
    inc = nextInc;
    full = nextFull;
    stats.problems += inc.problems.length;
    stats.services += inc.services.size;
    stats.maxConfigs = Math.max(stats.maxConfigs, inc.configs.size);
  }
  return stats;
}

describe("incremental buildSnapshot equals the full rebuild", function () {
  this.timeout(60_000);

  for (const seed of [1, 2, 3, 4]) {
    it(`seed ${seed}: 200 random edits (files, duplicates, conflicts, selectors, provided services, mesh), same snapshot at every step`, () => {
      const stats = runSequence(seed, 200);
      // The generator must actually exercise what it claims to; a run of empty snapshots would prove nothing.
      expect(stats.published, "snapshots published").to.be.greaterThan(80);
      expect(stats.unchanged, "steps with nothing observable changed").to.be.greaterThan(0);
      expect(stats.problems, "problems seen").to.be.greaterThan(100);
      expect(stats.services / 200, "services per snapshot").to.be.greaterThan(2);
      expect(stats.maxConfigs).to.be.greaterThan(10);
    });
  }
});

describe("VipAllocator equals allocateVips", function () {
  this.timeout(30_000);

  for (const slots of [7, 31, 257]) {
    it(`keeps the greedy allocation through random additions and removals (${slots} slots, collisions and a full table)`, () => {
      const g = new Gen(seededRandom(slots));
      const alloc = new VipAllocator(slots);
      const keys = new Set<string>();
      let previous = new Map<string, string[]>();
      for (let step = 0; step < 250; step++) {
        const add: string[] = [];
        const remove: string[] = [];
        // Drift around the table size, so it fills up, overflows and drains again.
        const target = slots * (0.5 + 0.7 * Math.abs(Math.sin(step / 25)));
        for (let n = 1 + g.int(4); n > 0; n--) {
          if (keys.size < target || keys.size === 0 ? g.chance(0.8) : g.chance(0.2)) add.push(`ns-${g.int(3)}/h${g.int(slots * 2)}.example`);
          else remove.push(g.pick([...keys]));
        }
        for (const k of remove) keys.delete(k);
        for (const k of add) keys.add(k);
        const changed = alloc.update(add, remove);
        const expected = allocateVips([...keys].map((key) => ({ key, hostname: key.split("/")[1]!, addresses: [], resolution: "STATIC" })), slots);
        const actual = new Map([...keys].filter((k) => alloc.get(k)).map((k) => [k, alloc.get(k)!]));
        expect(Object.fromEntries([...actual].sort()), `step ${step}`).to.deep.equal(Object.fromEntries([...expected].sort()));
        const reallyChanged = new Set([...keys, ...previous.keys()].filter((k) => String(expected.get(k)) !== String(previous.get(k))));
        expect([...changed].sort(), `step ${step}: the keys reported as moved`).to.deep.equal([...reallyChanged].sort());
        previous = expected;
      }
    });
  }
});
