// Auto-registered workloads shared through Consul (DESIGN.md "Scale-out"), end to end with two control-plane
// replicas on loopback sharing one Consul:
// - replica A is a real `vmpilot server` child process (so it can be SIGKILLed: no graceful anything);
// - replica B is an in-process ControlPlane whose Consul traffic goes through a TCP relay the test can cut (a
//   Consul outage as B sees it, while A and Consul carry on);
// - workloads are ADS streams with AUTO_REGISTER_GROUP (as the agent opens them) that send Istio
//   HealthInformation reports; each has a gRPC echo server on its own loopback address;
// - B serves them to a @grpc/grpc-js-xds client and to a raw EDS subscriber that records every answer.
// Consul is the HTTP API simulator (reaper settings shortened) and, when a `consul` binary is on PATH or CONSUL_BIN
// names one, a real agent, whose non-user reaper settings cannot be shortened (DeregisterCriticalServiceAfter is
// floored at 1 m and reaped every 30 s): its deadlines are longer.
import { expect } from "chai";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { resolveServerConfig, type ServerConfig } from "@vmpilot/xds/server/config";
import type { PublishedWorkload } from "@vmpilot/registry/auto-registration";
import { livenessCheckId, registrationOf, serviceIdOf } from "@vmpilot/registry/consul/index";
import { ControlPlane } from "@vmpilot/xds/server/control-plane";
import { ResourceCache } from "@vmpilot/xds/cache";
import { TypeUrl } from "@vmpilot/xds/protos";
import { HEALTH_TYPE_URL } from "@vmpilot/xds/server/resources";
import { ConsulSimulator } from "./consul-simulator.js";
import { realConsulBinary, realTarget, REAL_CONSUL_SKIPPED, type ConsulTarget } from "../packages/registry/test/consul-targets.js";
import { call, type EchoClient, type EchoServer } from "./helpers/echo.js";
import { EdsRecorder } from "./helpers/eds-recorder.js";
import { collectJsonLines, eventually, xdsEchoClient } from "./helpers/e2e.js";
import { echoServersOnOnePort, FAST_CONSUL } from "./helpers/consul-e2e.js";
import { RawAdsClient, testNode } from "./helpers/raw-ads-client.js";
import { until } from "./helpers/poll.js";

type J = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const ROOT = path.join(import.meta.dirname, "..");
const CLI = path.join(ROOT, "packages", "xds", "src", "cli.ts");
const HOST = "ratings.shop.internal";
const TTL_MS = 2000;
const GRACE_MS = 3000;
/** `autoRegistration.consul.deregisterAfter`: Consul's removal of a dead replica's registrations. */
const DEREGISTER_AFTER_MS = 5000;
const IPS = ["127.0.0.41", "127.0.0.42", "127.0.0.43", "127.0.0.44"];

function files(port: number): string {
  return `apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: ratings, namespace: shop}
spec:
  metadata:
    labels: {app: ratings}
  template:
    ports: {grpc: ${port}}
  probe:
    periodSeconds: 1
    tcpSocket: {port: ${port}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: shop}
spec:
  hosts: [${HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: ${port}, name: grpc, protocol: GRPC}]
  workloadSelector: {labels: {app: ratings}}
`;
}

/** A TCP relay to Consul: B's only way there, so cutting it is a Consul outage for B alone. */
class Relay {
  private server: net.Server | undefined;
  private readonly sockets = new Set<net.Socket>();
  port = 0;
  constructor(private readonly target: { host: string; port: number }) {}
  async open(): Promise<void> {
    const server = net.createServer((client) => {
      const upstream = net.connect(this.target.port, this.target.host);
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on("close", () => this.sockets.delete(s));
        s.on("error", () => undefined);
      }
      client.pipe(upstream).pipe(client);
      client.on("close", () => upstream.destroy());
      upstream.on("close", () => client.destroy());
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.port, "127.0.0.1", () => resolve());
    });
    this.port = (server.address() as net.AddressInfo).port;
    this.server = server;
  }
  async cut(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    for (const sock of this.sockets) sock.destroy();
    if (s) await new Promise<void>((resolve) => s.close(() => resolve()));
  }
}

/** Replica A: `vmpilot server` as a child process, its JSON log parsed. */
class ChildReplica {
  readonly lines: J[] = [];
  xds = "";
  http = "";
  private constructor(readonly child: ChildProcess) {}
  static async start(configFile: string): Promise<ChildReplica> {
    const child = spawn(process.execPath, ["--conditions=vmpilot-source", "--import", "tsx", CLI, "server", "--config", configFile], {
      cwd: ROOT,
      env: { ...process.env, VMPILOT_LOG_FORMAT: "json", VMPILOT_LOG_LEVEL: "info", VMPILOT_STATE_DIR: "" },
      stdio: ["ignore", "ignore", "pipe"],
    });
    const r = new ChildReplica(child);
    collectJsonLines(child.stderr!, r.lines);
    const { value } = await eventually("replica A running", 60_000, async () => {
      if (child.exitCode !== null) throw new Error(`replica A exited ${child.exitCode}: ${JSON.stringify(r.lines.slice(-5))}`);
      return r.lines.find((l) => l.message === "vmpilot server running");
    });
    r.xds = String(value.xds);
    r.http = String(value.http);
    return r;
  }
  kill(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return Promise.resolve();
    const exited = new Promise<void>((resolve) => this.child.once("exit", () => resolve()));
    this.child.kill("SIGKILL");
    return exited;
  }
}

/** A workload's ADS stream (what its agent opens) with health reports. */
class Workload {
  readonly client: RawAdsClient<"sotw">;
  constructor(
    xds: string,
    readonly ip: string,
  ) {
    this.client = new RawAdsClient(xds, "sotw");
    this.client.send({
      node: testNode(`sidecar~${ip}~ratings-vm-${ip.split(".").pop()}.shop~shop.svc.cluster.local`, { NAMESPACE: "shop", AUTO_REGISTER_GROUP: "ratings", LABELS: { version: "v1" } }),
      type_url: TypeUrl.Cluster,
      resource_names: [],
    });
  }
  healthy(): void {
    this.client.send({ type_url: HEALTH_TYPE_URL });
  }
  unhealthy(message: string): void {
    this.client.send({ type_url: HEALTH_TYPE_URL, error_detail: { code: 14, message } });
  }
  close(): void {
    this.client.close();
  }
}

interface Target {
  kind: "simulator" | "real";
  address: string;
  close(): Promise<void>;
}

function targets(): { label: string; make: () => Promise<Target>; skipped: () => string | undefined }[] {
  return [
    {
      label: "the Consul HTTP API simulator",
      make: async () => {
        // Consul's non-user reaper settings (30 s, 1 m) shortened, as the simulator allows; everything else is Consul's.
        const sim = await ConsulSimulator.start({ checkReapIntervalMs: 200, checkDeregisterIntervalMinMs: 0 });
        return { kind: "simulator", address: sim.address, close: () => sim.close() };
      },
      skipped: () => undefined,
    },
    {
      label: "a real Consul agent",
      make: async () => {
        const t: ConsulTarget = await realTarget();
        return { kind: "real", address: t.address, close: () => t.close() };
      },
      skipped: () => (realConsulBinary() ? undefined : REAL_CONSUL_SKIPPED),
    },
  ];
}

for (const { label, make, skipped } of targets()) {
  describe(`auto-registered workloads shared by two replicas through Consul (${label})`, function () {
    this.timeout(240_000);
    let target: Target;
    let dir: string;
    let relay: Relay;
    let a: ChildReplica;
    let b: ControlPlane;
    let servers: EchoServer[];
    let port: number;
    let client: EchoClient | undefined;
    let recorder: EdsRecorder | undefined;
    const workloads: Workload[] = [];
    /** Removal by a real Consul waits for its 1 m floor and 30 s reaper. */
    let removalDeadline = 30_000;

    before(async function () {
      const why = skipped();
      if (why) {
        console.log(`      ${why}`);
        this.skip();
      }
      target = await make();
      if (target.kind === "real") removalDeadline = 150_000;
      servers = await echoServersOnOnePort(IPS);
      port = servers[0]!.port;
      dir = await mkdtemp(path.join(os.tmpdir(), "vmpilot-autoreg-consul-"));
      // The GitOps directory both replicas watch; the replicas' own config files live beside it, not in it.
      const configDir = path.join(dir, "config");
      await mkdir(configDir);
      await writeFile(path.join(configDir, "ratings.yaml"), files(port));
      const autoRegistration = { cleanupGracePeriod: `${GRACE_MS}ms`, consul: { ttl: `${TTL_MS}ms`, deregisterAfter: `${DEREGISTER_AFTER_MS}ms` } };
      await writeFile(
        path.join(dir, "replica-a.yaml"),
        JSON.stringify({
          configDirs: [configDir],
          xdsAddr: "127.0.0.1:0",
          httpAddr: "127.0.0.1:0",
          consul: { address: target.address, wait: "2s" },
          autoRegistration: { ...autoRegistration, consul: { ...autoRegistration.consul, replica: "replica-a" } },
        }),
      );
      const consulUrl = new URL(target.address);
      relay = new Relay({ host: consulUrl.hostname, port: Number(consulUrl.port) });
      await relay.open();
      const parsed = resolveServerConfig(
        {
          configDirs: [configDir],
          xdsAddr: "127.0.0.1:0",
          httpAddr: "127.0.0.1:0",
          consul: { address: `http://127.0.0.1:${relay.port}` },
          autoRegistration: { ...autoRegistration, consul: { ...autoRegistration.consul, replica: "replica-b" } },
        },
        dir,
        {},
      );
      const config = { ...parsed, consul: { ...parsed.consul!, ...FAST_CONSUL } };
      [a, b] = await Promise.all([
        ChildReplica.start(path.join(dir, "replica-a.yaml")),
        (async () => {
          const cp = new ControlPlane({ config, createCache: () => new ResourceCache() });
          await cp.start();
          return cp;
        })(),
      ]);
      recorder = new EdsRecorder(b.addresses.xds!, `outbound|${port}||${HOST}`);
    });

    after(async function () {
      client?.close();
      await recorder?.stop();
      for (const w of workloads) w.close();
      await a?.kill();
      await b?.stop(1000);
      await relay?.cut();
      for (const s of servers ?? []) s.stop();
      await target?.close();
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    afterEach(async function () {
      if (this.currentTest?.state === "failed" && a) console.log(`replica A log (last 30):\n  ${a.lines.slice(-30).map((l) => JSON.stringify(l)).join("\n  ")}`);
    });

    function workload(xds: string, ip: string): Workload {
      const w = new Workload(xds, ip);
      workloads.push(w);
      return w;
    }

    async function json(http: string, p: string): Promise<J> {
      const res = await fetch(`http://${http}${p}`);
      return (await res.json()) as J;
    }

    async function endpointOn(http: string, ip: string): Promise<J | undefined> {
      const z = await json(http, "/debug/registryz");
      return (z.services as J[]).find((s) => s.hostname === HOST)?.endpoints.find((e: J) => e.address === ip);
    }

    /** Consul's view: the vmpilot instances of service `vmpilot-shop--ratings` (default prefix) for `ip`, with their checks. */
    async function consulInstances(ip: string): Promise<J[]> {
      const res = await fetch(`${target.address}/v1/health/service/vmpilot-shop--ratings`);
      const body = (await res.json()) as J[];
      return body.filter((e) => e.Service.Address === ip);
    }

    const checkStatus = (inst: J, suffix: string) => (inst.Checks as J[]).find((c) => c.CheckID === `${inst.Service.ID}:${suffix}`)?.Status;

    it("a workload connected only to replica A is served by replica B: a grpc-js-xds client on B reaches it", async function () {
      const w = workload(a.xds, IPS[0]!);
      w.healthy();
      const { value: ep, elapsedMs } = await eventually("B serves the workload HEALTHY", 20_000, async () => {
        const e = await endpointOn(b.addresses.http!, IPS[0]!);
        return e?.health === "HEALTHY" ? e : undefined;
      });
      console.log(`      (connected to A -> HEALTHY on B: ${elapsedMs} ms)`);
      expect(ep.workload).to.equal(`WorkloadEntry/shop/ratings-${IPS[0]}`);
      expect(ep.labels).to.deep.equal({ app: "ratings", version: "v1" });
      expect(ep.ports).to.deep.equal({ grpc: port });

      const [inst, ...more] = await consulInstances(IPS[0]!);
      expect(more, "one registration, by replica A").to.deep.equal([]);
      expect(inst!.Service.Meta).to.deep.include({ "vmpilot-replica": "replica-a", "vmpilot-group": "ratings", "vmpilot-namespace": "shop", "vmpilot-auto-registered": "1" });
      expect(inst!.Service.Tags).to.deep.equal(["vmpilot-auto-registered", "version=v1"]);
      expect([checkStatus(inst!, "replica"), checkStatus(inst!, "health")]).to.deep.equal(["passing", "passing"]);

      const configz = await json(b.addresses.http!, "/debug/configz");
      expect((configz.providedServices as J[]).map((s) => s.hostname), "not a Consul mesh service").not.to.include("ratings.service.consul");

      client = xdsEchoClient(b.addresses.xds!, `${HOST}:${port}`, { NAMESPACE: "shop" });
      const reached = await eventually("a call through B reaching the workload", 20_000, async () => {
        const r = await call(client!, {}, {}, 2000);
        return r.server === IPS[0] ? r : undefined;
      });
      expect(reached.value.server).to.equal(IPS[0]);
    });

    it("a replica started later serves the workload as soon as start() resolves (read back from Consul, nothing published by it)", async function () {
      const cfg = resolveServerConfig(
        { configDirs: [path.join(dir, "config")], xdsAddr: "127.0.0.1:0", httpAddr: "127.0.0.1:0", consul: { address: target.address }, autoRegistration: { consul: { replica: "replica-c", register: false } } },
        dir,
        {},
      );
      const c = new ControlPlane({ config: { ...cfg, consul: { ...cfg.consul!, ...FAST_CONSUL } }, createCache: () => new ResourceCache() });
      await c.start();
      try {
        const first = c.current();
        const entry = first.configs.get(`WorkloadEntry/shop/ratings-${IPS[0]}`);
        expect(entry?.kind, "in the current snapshot once start() resolved").to.equal("WorkloadEntry");
        expect(entry?.status).to.deep.equal({ health: "HEALTHY" });
        expect(first.sources.find((x) => x.name === "auto-registration")?.revision).to.equal("1 registered (0 through this replica, 1 through others)");
      } finally {
        await c.stop(1000);
      }
    });

    it("the workload's health follows it to B: UNHEALTHY in B's EDS (sent, not dropped) on a failing report to A, HEALTHY again after a passing one", async function () {
      const w = workloads[0]!;
      w.unhealthy("connection refused");
      await eventually("UNHEALTHY in B's EDS", 20_000, async () => (recorder!.health(IPS[0]!) === "UNHEALTHY" ? true : undefined));
      const [inst] = await consulInstances(IPS[0]!);
      expect(checkStatus(inst!, "health")).to.equal("critical");
      expect(checkStatus(inst!, "replica")).to.equal("passing");
      w.healthy();
      await eventually("HEALTHY in B's EDS", 20_000, async () => (recorder!.health(IPS[0]!) === "HEALTHY" ? true : undefined));
    });

    it("a workload moving from A to B stays HEALTHY in B's EDS throughout; after A's grace period only B's registration is left", async function () {
      const since = Date.now();
      workloads[0]!.close();
      await eventually("A's registration in its grace period (liveness warning)", 20_000, async () => {
        const [inst] = await consulInstances(IPS[0]!);
        return inst && checkStatus(inst, "replica") === "warning" ? true : undefined;
      });
      // The agent reconnects to B; its first health report comes a while later.
      const moved = workload(b.addresses.xds!, IPS[0]!);
      await eventually("B's own registration", 20_000, async () => ((await consulInstances(IPS[0]!)).some((i) => i.Service.Meta["vmpilot-replica"] === "replica-b") ? true : undefined));
      await new Promise((r) => setTimeout(r, 1000));
      expect(recorder!.health(IPS[0]!), "no local report yet: the one A heard holds").to.equal("HEALTHY");
      moved.healthy();
      const { elapsedMs } = await eventually("A's registration deregistered after its grace period", 20_000 + GRACE_MS, async () => {
        const insts = await consulInstances(IPS[0]!);
        return insts.length === 1 && insts[0]!.Service.Meta["vmpilot-replica"] === "replica-b" ? true : undefined;
      });
      console.log(`      (A's registration gone ${elapsedMs} ms after B's appeared; grace period ${GRACE_MS} ms)`);
      await eventually("A serves it from B's registration", 20_000, async () => ((await endpointOn(a.http, IPS[0]!))?.health === "HEALTHY" ? true : undefined));
      expect(recorder!.statesSince(IPS[0]!, since), "B's EDS answers for the workload since the move").to.deep.equal(["HEALTHY"]);
    });

    it("a graceful stop of a workload removes it from B after the grace period, not before", async function () {
      const w = workload(a.xds, IPS[1]!);
      w.healthy();
      await eventually("B serves it", 20_000, async () => ((await endpointOn(b.addresses.http!, IPS[1]!))?.health === "HEALTHY" ? true : undefined));
      const stoppedAt = Date.now();
      w.close();
      await eventually("gone from B", removalDeadline, async () => ((await endpointOn(b.addresses.http!, IPS[1]!)) === undefined ? true : undefined), 100);
      const after = Date.now() - stoppedAt;
      console.log(`      (workload stopped -> removed on B: ${after} ms; grace period ${GRACE_MS} ms)`);
      expect(after).to.be.at.least(GRACE_MS);
      expect(await consulInstances(IPS[1]!)).to.deep.equal([]);
      await eventually("gone from B's EDS", 10_000, async () => (recorder!.health(IPS[1]!) === undefined ? true : undefined));
    });

    it("a Consul outage on B keeps every endpoint B serves (others' from Consul and its own), and B registers its workloads again afterwards", async function () {
      const w = workload(a.xds, IPS[2]!);
      w.healthy();
      await eventually("B serves A's workload", 20_000, async () => ((await endpointOn(b.addresses.http!, IPS[2]!))?.health === "HEALTHY" ? true : undefined));
      await eventually("HEALTHY in B's EDS", 20_000, async () => (recorder!.health(IPS[2]!) === "HEALTHY" ? true : undefined));
      await relay.cut();
      const cutAt = Date.now();
      await eventually("B's Consul source stale", 20_000, async () => ((await json(b.addresses.http!, "/debug/configz")).sources as J[]).find((s) => s.name === "consul")?.stale === true || undefined);
      // What the others see meanwhile: B stopped renewing, so to Consul it is a dead replica: critical, and
      // UNHEALTHY on A. Not removed: that waits for deregisterAfter, longer than this outage.
      await eventually("B's registration critical (its TTL expired)", 20_000 + TTL_MS, async () => {
        const inst = (await consulInstances(IPS[0]!)).find((i) => i.Service.Meta["vmpilot-replica"] === "replica-b");
        return inst && checkStatus(inst, "replica") === "critical" ? true : undefined;
      });
      await eventually("A serves B's workload UNHEALTHY (sent, not removed)", 20_000, async () => ((await endpointOn(a.http, IPS[0]!))?.health === "UNHEALTHY" ? true : undefined));
      const since = cutAt;
      expect((await endpointOn(b.addresses.http!, IPS[2]!))?.health, "A's workload, read from Consul before the outage").to.equal("HEALTHY");
      expect((await endpointOn(b.addresses.http!, IPS[0]!))?.health, "B's own workload").to.equal("HEALTHY");
      expect(recorder!.statesSince(IPS[2]!, since)).to.deep.equal(["HEALTHY"]);
      expect(recorder!.statesSince(IPS[0]!, since)).to.deep.equal(["HEALTHY"]);

      await relay.open();
      await eventually("B's Consul source fresh again", 20_000, async () => ((await json(b.addresses.http!, "/debug/configz")).sources as J[]).find((s) => s.name === "consul")?.stale === false || undefined);
      const { elapsedMs } = await eventually("B's workload registered (and passing) again", 30_000, async () => {
        const inst = (await consulInstances(IPS[0]!)).find((i) => i.Service.Meta["vmpilot-replica"] === "replica-b");
        return inst && checkStatus(inst, "replica") === "passing" ? true : undefined;
      });
      console.log(`      (relay restored -> B's registration passing again: ${elapsedMs} ms)`);
      expect((await endpointOn(b.addresses.http!, IPS[2]!))?.health).to.equal("HEALTHY");
    });

    it("killing replica A (SIGKILL): B marks its workload UNHEALTHY after the TTL, and removes it deregisterAfter later (not after the grace period)", async function () {
      const w = workload(a.xds, IPS[3]!);
      w.healthy();
      await eventually("B serves it", 20_000, async () => ((await endpointOn(b.addresses.http!, IPS[3]!))?.health === "HEALTHY" ? true : undefined)).catch(async (err: Error) => {
        const sources = (await json(b.addresses.http!, "/debug/configz")).sources;
        throw new Error(`${err.message}; B's sources: ${JSON.stringify(sources)}; Consul: ${JSON.stringify(await consulInstances(IPS[3]!))}; B's endpoint: ${JSON.stringify(await endpointOn(b.addresses.http!, IPS[3]!))}`);
      });
      await eventually("HEALTHY in B's EDS", 20_000, async () => (recorder!.health(IPS[3]!) === "HEALTHY" ? true : undefined));
      const since = Date.now();
      await a.kill();
      const killedAt = Date.now();
      const unhealthy = await eventually("UNHEALTHY in B's EDS", 20_000 + TTL_MS, async () => (recorder!.health(IPS[3]!) === "UNHEALTHY" ? true : undefined));
      const removed = await eventually("removed from B's EDS", removalDeadline, async () => (recorder!.health(IPS[3]!) === undefined ? true : undefined), 100);
      const unhealthyAfter = unhealthy.elapsedMs;
      const removedAfter = Date.now() - killedAt;
      console.log(`      (killed -> UNHEALTHY on B: ${unhealthyAfter} ms (TTL ${TTL_MS} ms); -> removed: ${removedAfter} ms (deregisterAfter ${DEREGISTER_AFTER_MS} ms))`);
      expect(unhealthyAfter, "not before the last renewal's TTL ran out").to.be.at.least(TTL_MS * 0.6);
      expect(removed.elapsedMs, "deregisterAfter after it turned critical").to.be.at.least(DEREGISTER_AFTER_MS * 0.9);
      expect(recorder!.statesSince(IPS[3]!, since)).to.deep.equal(["HEALTHY", "UNHEALTHY", "ABSENT"]);
      expect(await consulInstances(IPS[3]!)).to.deep.equal([]);
    });

    it("a graceful stop of replica B deregisters nothing: its workloads' registrations are left to expire", async function () {
      const before = (await consulInstances(IPS[0]!)).find((i) => i.Service.Meta["vmpilot-replica"] === "replica-b");
      expect(before && checkStatus(before, "replica")).to.equal("passing");
      await recorder!.stop();
      recorder = undefined;
      client?.close();
      client = undefined;
      await b.stop(1000);
      const after = (await consulInstances(IPS[0]!)).find((i) => i.Service.Meta["vmpilot-replica"] === "replica-b");
      expect(after, "still registered right after the stop").to.not.equal(undefined);
      await eventually("B's registration critical once its TTL ran out", 20_000 + TTL_MS, async () => {
        const i = (await consulInstances(IPS[0]!)).find((x) => x.Service.Meta["vmpilot-replica"] === "replica-b");
        return i && checkStatus(i, "replica") === "critical" ? true : undefined;
      });
    });
  });
}

describe("server config: autoRegistration.consul", function () {
  const base = { configDirs: ["/x"], consul: { address: "http://127.0.0.1:8500" } };
  it("takes register, ttl, deregisterAfter, servicePrefix and replica; leaves them out when not given; rejects what Consul could not use", function () {
    expect(resolveServerConfig(base, "/", {}).autoRegistration).to.deep.equal({ cleanupGracePeriodMs: 10_000 });
    const full = resolveServerConfig({ ...base, autoRegistration: { consul: { register: false, ttl: "45s", deregisterAfter: "20m", servicePrefix: "vm-", replica: "cp-1" } } }, "/", {});
    expect(full.autoRegistration).to.deep.equal({ cleanupGracePeriodMs: 10_000, consul: { register: false, ttlMs: 45_000, deregisterAfterMs: 1_200_000, servicePrefix: "vm-", replica: "cp-1" } });
    expect(() => resolveServerConfig({ ...base, autoRegistration: { consul: { deregisterAfter: "0s" } } }, "/", {})).to.throw(/deregisterAfter: must be positive/);
    expect(() => resolveServerConfig({ ...base, autoRegistration: { consul: { ttl: "500ms" } } }, "/", {})).to.throw(/autoRegistration.consul.ttl: at least 1s/);
    expect(() => resolveServerConfig({ ...base, autoRegistration: { consul: { servicePrefix: "VM_" } } }, "/", {})).to.throw(/servicePrefix/);
    expect(() => resolveServerConfig({ ...base, autoRegistration: { consul: { tll: "5s" } } }, "/", {})).to.throw(/unknown key "tll"/);
  });
});

describe("a replica's Consul publishing and read-back across a failed reload and shutdown (the Consul HTTP API simulator)", function () {
  this.timeout(60_000);
  let sim: ConsulSimulator;
  let dir: string;
  let configDir: string;
  const cleanups: (() => unknown)[] = [];
  const IP = "127.0.0.41";
  const serviceId = serviceIdOf("r1", "shop", `ratings-${IP}`);

  beforeEach(async function () {
    // Consul's non-user reaper settings (30 s, 1 m) shortened, as the simulator allows.
    sim = await ConsulSimulator.start({ checkReapIntervalMs: 100, checkDeregisterIntervalMinMs: 0 });
    cleanups.push(() => sim.close());
    dir = await mkdtemp(path.join(os.tmpdir(), "vmpilot-autoreg-lifecycle-"));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    configDir = path.join(dir, "config");
    await mkdir(configDir);
    await writeFile(path.join(configDir, "ratings.yaml"), files(9080));
  });

  afterEach(async function () {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  function serverConfig(consul: J = {}, grace = "3s", publishing: J = {}): ServerConfig {
    const parsed = resolveServerConfig(
      {
        configDirs: [configDir],
        xdsAddr: "127.0.0.1:0",
        httpAddr: "127.0.0.1:0",
        consul: { address: sim.address, ...consul },
        autoRegistration: { cleanupGracePeriod: grace, consul: { ttl: "1s", replica: "r1", ...publishing } },
      },
      dir,
      {},
    );
    return { ...parsed, consul: { ...parsed.consul!, ...FAST_CONSUL } };
  }

  async function replica(config: ServerConfig): Promise<ControlPlane> {
    const cp = new ControlPlane({ config, createCache: () => new ResourceCache() });
    cleanups.push(() => cp.stop(1000));
    await cp.start();
    return cp;
  }

  function connect(cp: ControlPlane, ip: string): Workload {
    const w = new Workload(cp.addresses.xds!, ip);
    cleanups.push(() => w.close());
    return w;
  }

  /** Another replica's registration, written as vmpilot writes it (it is on the same agent). */
  function otherReplicaRegisters(ip: string): void {
    const published: PublishedWorkload = {
      key: `shop/ratings-${ip}`,
      namespace: "shop",
      group: "ratings",
      name: `ratings-${ip}`,
      address: ip,
      proxyId: `sidecar~${ip}~x.shop~shop.svc.cluster.local`,
      labels: {},
      connected: true,
      probed: false,
      ports: { grpc: 9080 },
    };
    sim.apply("/v1/agent/service/register", registrationOf(published, { replica: "other", servicePrefix: "vmpilot-", ttlMs: 60_000, gracePeriodMs: 10_000, deregisterAfterMs: 600_000 }));
  }

  const entryOn = (cp: ControlPlane, ip: string) => cp.current().configs.get(`WorkloadEntry/shop/ratings-${ip}`);

  it("a reload that fails (unreadable consul.tls.caFile) keeps the running publisher, read-back and config; the error is reported", async function () {
    const cp = await replica(serverConfig());
    connect(cp, IP);
    await until("registered", () => sim.catalog.services.has(`${sim.nodeName}/${serviceId}`));
    const publisher = cp.autoRegistration.consulPublisher;
    expect(publisher).to.not.equal(undefined);
    const caFile = path.join(dir, "no-such-ca.pem");
    const bad = serverConfig({ address: sim.address.replace(/^http:/, "https:"), tls: { caFile } });
    let error: Error | undefined;
    try {
      await cp.reload(bad);
    } catch (err) {
      error = err as Error;
    }
    expect(error?.message, "the reload reports why").to.include(caFile);
    expect(cp.autoRegistration.consulPublisher, "the running publisher").to.equal(publisher);
    const since = performance.now();
    await until("renewals go on after the failed reload (TTL 1 s, renewed every third)", () => sim.requestsTo("/v1/agent/check/pass/", since).length >= 2);
    expect(sim.agentCheckStatus(livenessCheckId(serviceId))?.Status).to.equal("passing");
    otherReplicaRegisters("127.0.0.42");
    await until("another replica's registration made after the failed reload is read back", () => entryOn(cp, "127.0.0.42"));
    expect(cp.current().sources.find((s) => s.name === "consul")).to.include({ synced: true, stale: false });
    // The config was not half-applied: a good reload afterwards still sees a change to apply and applies it.
    await cp.reload(serverConfig({}, "4s"));
    expect(cp.autoRegistration.source.gracePeriod).to.equal(4000);
  });

  it("shutdown deregisters nothing, even with a cleanup grace period shorter than the drain: publishing stops before the streams are ended", async function () {
    const cp = await replica(serverConfig({}, "1ms"));
    connect(cp, IP);
    await until("registered and held", () => sim.agentCheckStatus(livenessCheckId(serviceId))?.Status === "passing");
    await cp.stop(1000);
    // stop() resolved: the publisher has stopped, and whatever it was going to write is written.
    expect(sim.requestsTo("/v1/agent/service/deregister/").map((r) => r.path)).to.deep.equal([]);
    expect(sim.catalog.services.has(`${sim.nodeName}/${serviceId}`), "left to expire").to.equal(true);
    expect(sim.agentCheckStatus(livenessCheckId(serviceId))?.Status, "as it was when the replica stopped").to.equal("passing");
  });

  it("a replica that stops renewing (killed, or cut off from Consul) has its registrations removed deregisterAfter after they expire, not after the far shorter cleanup grace period", async function () {
    const cp = await replica(serverConfig({}, "1ms", { deregisterAfter: "3s" }));
    connect(cp, IP);
    await until("registered and held", () => sim.agentCheckStatus(livenessCheckId(serviceId))?.Status === "passing");
    await cp.stop(1000); // renewals end; nothing is deregistered (above)
    const critical = await until("its TTL expired", () => sim.agentCheckStatus(livenessCheckId(serviceId))?.Status === "critical" && performance.now());
    const removed = await until("Consul removed it", () => !sim.catalog.services.has(`${sim.nodeName}/${serviceId}`) && performance.now(), 30_000);
    // The simulator's reaper runs every 100 ms and has no 1 m floor here (Consul's would make it max(3 s, 1 m)).
    expect(removed - critical, "critical for deregisterAfter before removal").to.be.at.least(2700);
  });
});
