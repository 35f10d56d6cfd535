// Issue 4 end to end: the Consul catalog -> ConsulSource -> registry (merged with a watched directory) -> generators ->
// ADS -> @grpc/grpc-js-xds clients calling real gRPC servers. Consul is the HTTP API simulator (test/consul-simulator.ts)
// and, when a `consul` binary is on PATH or CONSUL_BIN names one, a real agent: both are driven only through Consul's
// HTTP API (packages/registry/test/consul-targets.ts). The control plane runs in-process on loopback port 0 with the
// real resource cache. Instances of one Consul service share a port on several loopback addresses, as instances on
// several hosts do. grpc-js-xds NACKs anything it cannot use, so after every test /debug/syncz must show no NACK.
import { expect } from "chai";
import * as grpc from "@grpc/grpc-js";
import { TypeUrl } from "@vmpilot/xds/protos";
import { resolveServerConfig, ServerConfigError } from "@vmpilot/xds/server/config";
import {
  realConsulBinary,
  realTarget,
  REAL_CONSUL_SKIPPED,
  simulatorTarget,
  type ConsulTarget,
  type Instance,
} from "../packages/registry/test/consul-targets.js";
import { call, startEchoServers, tally, type EchoClient, type EchoServer } from "./helpers/echo.js";
import { eventually, xdsEchoClient } from "./helpers/e2e.js";
import { ConsulControlPlane, echoServersOnOnePort, fetchXds, registryService, type RegistryzService } from "./helpers/consul-e2e.js";

const HOST = "web.service.consul";

function yaml(...docs: string[]): string {
  return docs.map((d) => d.trim()).join("\n---\n") + "\n";
}

/** One instance of Consul service `name` on its own node; the echo server on `server` answers for it. */
function instance(name: string, server: EchoServer, o: { tags?: string[]; meta?: Record<string, string> } = {}): Instance {
  const host = server.opts.host;
  const last = host.split(".").pop();
  return {
    node: `node-${last}`,
    nodeAddress: host,
    id: `${name}-${last}`,
    name,
    address: host,
    port: server.port,
    tags: o.tags ?? [],
    meta: { protocol: "grpc", ...o.meta },
  };
}

interface ConfigzSource {
  name: string;
  synced: boolean;
  stale: boolean;
  lastError?: string;
  revision?: string;
}

interface Configz {
  sources: ConfigzSource[];
  problems: { severity: string; message: string; file: string; line: number; kind?: string; name?: string }[];
  configs: { kind: string; name: string; origin: string; decorates?: { service: string; origin: string }[] }[];
  providedServices: {
    kind: string;
    namespace: string;
    name: string;
    hostname: string;
    origin: string;
    consul?: { datacenter: string; service: string; index: number };
    decoratedBy?: { config: string; origin: string };
  }[];
}

function consulTargets(): { label: string; make: () => Promise<ConsulTarget>; available: () => string | undefined }[] {
  return [
    { label: "the Consul HTTP API simulator", make: () => simulatorTarget(), available: () => undefined },
    { label: "a real Consul agent", make: () => realTarget(), available: () => (realConsulBinary() ? undefined : REAL_CONSUL_SKIPPED) },
  ];
}

for (const { label, make, available } of consulTargets()) {
  describe(`Consul end to end with @grpc/grpc-js-xds (Consul: ${label})`, function () {
    this.timeout(90_000);
    let target: ConsulTarget;
    let cp: ConsulControlPlane | undefined;
    const cleanups: (() => unknown)[] = [];

    before(function () {
      const skipped = available();
      if (skipped) {
        console.log(`      ${skipped}`);
        this.skip();
      }
    });

    beforeEach(async function () {
      target = await make();
      cleanups.push(() => target.close());
    });

    afterEach(async function () {
      // grpc-js-xds NACKs anything it cannot use; nothing a test did may have produced one.
      const nacks = cp ? await cp.nacks().catch((err: Error) => [`cannot read /debug/syncz: ${err.message}`]) : [];
      for (const c of cleanups.splice(0).reverse()) await c();
      cp = undefined;
      expect(nacks).to.deep.equal([]);
    });

    async function serve(hosts: string[]): Promise<EchoServer[]> {
      const servers = await echoServersOnOnePort(hosts);
      cleanups.push(() => servers.forEach((s) => s.stop()));
      return servers;
    }

    async function controlPlane(files: Record<string, string> = {}, consul: Record<string, unknown> = {}): Promise<ConsulControlPlane> {
      const started = await ConsulControlPlane.start(target.address, files, consul);
      cleanups.push(() => started.stop());
      cp = started;
      return started;
    }

    function client(host: string, port: number): EchoClient {
      const c = xdsEchoClient(cp!.xdsAddress, `${host}:${port}`);
      cleanups.push(() => c.close());
      return c;
    }

    /** Waits until calls succeed and every server in `names` has answered at least once. */
    async function reachAll(c: EchoClient, names: string[], timeoutMs = 20_000): Promise<void> {
      const seen = new Set<string>();
      await eventually(`calls reaching ${names.join(", ")}`, timeoutMs, async () => {
        const r = await call(c, {}, {}, 2000);
        if (r.server) seen.add(r.server);
        return names.every((n) => seen.has(n)) ? true : undefined;
      }, 10);
    }

    /** Waits until `n` calls in a row all succeed on `name`; returns how long that took. */
    async function onlyReaches(c: EchoClient, name: string, timeoutMs = 15_000, n = 20): Promise<number> {
      const { elapsedMs } = await eventually(`${n} calls in a row answered by ${name} alone`, timeoutMs, async () => {
        for (let i = 0; i < n; i++) {
          const r = await call(c, {}, {}, 2000);
          if (r.server !== name) return undefined;
        }
        return true;
      }, 10);
      return elapsedMs;
    }

    async function service(): Promise<RegistryzService> {
      const s = await registryService(cp!, HOST);
      if (!s) throw new Error(`${HOST} is not in /debug/registryz`);
      return s;
    }

    /** The ClusterLoadAssignment a gRPC client gets for `cluster`, as [address:port, health] pairs. */
    async function eds(cluster: string): Promise<string[]> {
      const [cla] = await fetchXds(cp!.xdsAddress, `grpc-consul-eds-${Date.now()}`, TypeUrl.ClusterLoadAssignment, [cluster]);
      const out: string[] = [];
      for (const loc of (cla?.endpoints ?? []) as { lb_endpoints: { endpoint: { address: { socket_address: { address: string; port_value: number } } }; health_status?: string }[] }[]) {
        for (const lb of loc.lb_endpoints) {
          const sa = lb.endpoint.address.socket_address;
          out.push(`${sa.address}:${sa.port_value} ${lb.health_status ?? "UNKNOWN"}`);
        }
      }
      return out.sort();
    }

    async function configz(): Promise<Configz> {
      return cp!.json<Configz>("/debug/configz");
    }

    async function consulStatus(): Promise<ConfigzSource> {
      const s = (await configz()).sources.find((x) => x.name === "consul");
      if (!s) throw new Error("no consul source in /debug/configz");
      return s;
    }

    it("a service registered with two instances: a gRPC client reaches both, round robin", async function () {
      const [a, b] = await serve(["127.0.0.21", "127.0.0.22"]);
      await target.register(instance("web", a!));
      await target.register(instance("web", b!));
      await controlPlane();
      const c = client(HOST, a!.port);
      await reachAll(c, ["127.0.0.21", "127.0.0.22"]);
      const counts = new Map<string, number>();
      for (let i = 0; i < 30; i++) {
        const r = await call(c);
        expect(r.code, r.details).to.equal(grpc.status.OK);
        counts.set(r.server!, (counts.get(r.server!) ?? 0) + 1);
      }
      // Round robin over two ready endpoints: 15/15, give or take a rotation boundary.
      expect(counts.get("127.0.0.21")).to.be.within(14, 16);
      expect(counts.get("127.0.0.22")).to.be.within(14, 16);
      const s = await service();
      expect(s.origin).to.match(new RegExp(`^consul:${target.datacenter}/web@\\d+$`));
      expect(s.ports).to.deep.equal([{ number: a!.port, protocol: "GRPC", name: `grpc-${a!.port}` }]);
    });

    it("a failing check moves traffic to the other instance within seconds; the endpoint is sent UNHEALTHY, not dropped", async function () {
      const [a, b] = await serve(["127.0.0.21", "127.0.0.22"]);
      const ia = instance("web", a!);
      await target.register(ia);
      await target.register(instance("web", b!));
      await controlPlane();
      const c = client(HOST, a!.port);
      await reachAll(c, ["127.0.0.21", "127.0.0.22"]);

      await target.setStatus(ia, "critical");
      const moved = await onlyReaches(c, "127.0.0.22");
      console.log(`      check critical -> 20 calls in a row on the other instance ${moved} ms later (the 20 calls included)`);

      const s = await service();
      expect(s.endpoints.map((e) => `${e.address} ${e.health}`).sort()).to.deep.equal(["127.0.0.21 UNHEALTHY", "127.0.0.22 HEALTHY"]);
      const cluster = `outbound|${a!.port}||${HOST}`;
      expect(await eds(cluster)).to.deep.equal([`127.0.0.21:${a!.port} UNHEALTHY`, `127.0.0.22:${a!.port} HEALTHY`]);

      // Passing again: the instance takes traffic again.
      await target.setStatus(ia, "passing");
      await reachAll(c, ["127.0.0.21", "127.0.0.22"]);
      expect(await eds(cluster)).to.deep.equal([`127.0.0.21:${a!.port} HEALTHY`, `127.0.0.22:${a!.port} HEALTHY`]);
    });

    it("deregistering an instance removes its endpoint; deregistering the last removes the service", async function () {
      const [a, b] = await serve(["127.0.0.21", "127.0.0.22"]);
      const ia = instance("web", a!);
      const ib = instance("web", b!);
      await target.register(ia);
      await target.register(ib);
      await controlPlane();
      const c = client(HOST, a!.port);
      await reachAll(c, ["127.0.0.21", "127.0.0.22"]);
      const cluster = `outbound|${a!.port}||${HOST}`;

      await target.deregister(ia);
      await onlyReaches(c, "127.0.0.22");
      expect((await service()).endpoints.map((e) => e.address)).to.deep.equal(["127.0.0.22"]);
      expect(await eds(cluster)).to.deep.equal([`127.0.0.22:${a!.port} HEALTHY`]);

      await target.deregister(ib);
      await eventually(`${HOST} gone from /debug/registryz`, 15_000, async () => ((await registryService(cp!, HOST)) ? undefined : true));
      const clusters = await fetchXds(cp!.xdsAddress, "grpc-consul-cds", TypeUrl.Cluster, []);
      expect(clusters.map((x) => x.name)).not.to.include(cluster);
    });

    it("Consul stopped: traffic continues on the last known endpoints, the source is marked stale, nothing is removed; it resumes when Consul is back", async function () {
      const [a, b, c3] = await serve(["127.0.0.21", "127.0.0.22", "127.0.0.23"]);
      await target.register(instance("web", a!));
      await target.register(instance("web", b!));
      await controlPlane();
      const c = client(HOST, a!.port);
      await reachAll(c, ["127.0.0.21", "127.0.0.22"]);
      expect(await cp!.metric('vmpilot_source_stale{source="consul"}')).to.equal(0);
      const before = await service();

      await target.stop();
      const { value: down } = await eventually("consul marked stale in /debug/configz", 20_000, async () => {
        const s = await consulStatus();
        return s.stale ? s : undefined;
      });
      expect(down.synced).to.equal(true);
      expect(down.lastError).to.be.a("string").and.not.equal("");
      expect(await cp!.metric('vmpilot_source_stale{source="consul"}')).to.equal(1);
      expect(await cp!.metric('vmpilot_source_synced{source="consul"}')).to.equal(1);
      expect(await cp!.metric('vmpilot_source_stale{source="files"}')).to.equal(0);
      // Synced once: a replica that loses Consul stays ready and keeps serving.
      expect((await cp!.get("/ready")).status).to.equal(200);

      // The source keeps retrying (backoff capped at 300 ms here); across several failed rounds nothing is removed.
      const failedSince = Date.now();
      while (Date.now() - failedSince < 1500) {
        const s = await service();
        expect(s.endpoints.map((e) => `${e.address} ${e.health}`)).to.deep.equal(before.endpoints.map((e) => `${e.address} ${e.health}`));
        await new Promise((r) => setTimeout(r, 100));
      }
      const counts = await tally(c, 40);
      expect(counts.get("127.0.0.21")).to.be.greaterThan(0);
      expect(counts.get("127.0.0.22")).to.be.greaterThan(0);
      expect((counts.get("127.0.0.21") ?? 0) + (counts.get("127.0.0.22") ?? 0)).to.equal(40);
      expect(await eds(`outbound|${a!.port}||${HOST}`)).to.deep.equal([`127.0.0.21:${a!.port} HEALTHY`, `127.0.0.22:${a!.port} HEALTHY`]);

      // A third instance registered while this agent was unreachable shows up once it is back.
      await target.registerWhileDown(instance("web", c3!));
      await target.start();
      await eventually("consul no longer stale", 20_000, async () => {
        const s = await consulStatus();
        return !s.stale && s.lastError === undefined ? true : undefined;
      });
      expect(await cp!.metric('vmpilot_source_stale{source="consul"}')).to.equal(0);
      await reachAll(c, ["127.0.0.21", "127.0.0.22", "127.0.0.23"]);
    });

    it("a file VirtualService splits traffic 80/20 between subsets of a Consul service selected by tags (1,000 calls, tolerance ±5 points)", async function () {
      const [v1, v2] = await serve(["127.0.0.21", "127.0.0.22"]);
      await target.register(instance("web", v1!, { tags: ["version=v1"] }));
      await target.register(instance("web", v2!, { tags: ["version|v2"] }));
      await controlPlane({
        "web-routing.yaml": yaml(`
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: default}
spec:
  host: ${HOST}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
`, `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: default}
spec:
  hosts: [${HOST}]
  http:
  - route:
    - {destination: {host: ${HOST}, subset: v1}, weight: 80}
    - {destination: {host: ${HOST}, subset: v2}, weight: 20}
`),
      });
      const c = client(HOST, v1!.port);
      await reachAll(c, ["127.0.0.21", "127.0.0.22"]);
      expect(await eds(`outbound|${v1!.port}|v1|${HOST}`)).to.deep.equal([`127.0.0.21:${v1!.port} HEALTHY`]);
      expect(await eds(`outbound|${v1!.port}|v2|${HOST}`)).to.deep.equal([`127.0.0.22:${v1!.port} HEALTHY`]);
      const counts = await tally(c, 1000);
      const n1 = counts.get("127.0.0.21") ?? 0;
      const n2 = counts.get("127.0.0.22") ?? 0;
      console.log(`      80/20 split measured: v1 ${(n1 / 10).toFixed(1)}%, v2 ${(n2 / 10).toFixed(1)}% of 1000 calls`);
      expect(n1 + n2).to.equal(1000);
      // Binomial(1000, 0.8) has a standard deviation of 1.26 points: ±5 points is four of them.
      expect(n1 / 1000).to.be.within(0.75, 0.85);
    });

    it("a file ServiceEntry with the same host decorates the Consul service: its subjectAltNames reach the cluster, both origins are shown", async function () {
      const [a, b] = await serve(["127.0.0.21", "127.0.0.22"]);
      await target.register(instance("web", a!, { meta: { "service-account": "web" } }));
      await target.register(instance("web", b!, { meta: { "service-account": "web" } }));
      const legacySan = "spiffe://legacy.example.org/ns/shop/sa/web";
      await controlPlane({
        "web-decoration.yaml": yaml(`
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web-decoration, namespace: default}
spec:
  hosts: [${HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: ${a!.port}, name: grpc, protocol: GRPC}
  subjectAltNames: ["${legacySan}"]
`),
      });

      // Traffic from a proxyless client is unchanged (gRPC clients get mTLS only from a DestinationRule).
      const c = client(HOST, a!.port);
      await reachAll(c, ["127.0.0.21", "127.0.0.22"]);

      const s = await service();
      expect(s.subjectAltNames).to.deep.equal([legacySan]);
      expect(s.decoratedBy).to.equal("ServiceEntry/default/web-decoration");
      expect(s.endpoints.map((e) => e.address)).to.deep.equal(["127.0.0.21", "127.0.0.22"]);

      // An Envoy sidecar gets automatic mTLS to the Consul endpoints (they have a service account), verifying the
      // decorating entry's SANs plus the instances' own SPIFFE id.
      const sidecar = "sidecar~127.0.0.99~client-1.default~default.svc.cluster.local";
      const clusters = await fetchXds(cp!.xdsAddress, sidecar, TypeUrl.Cluster, [], { SERVICE_ACCOUNT: "client" });
      const cluster = clusters.find((x) => x.name === `outbound|${a!.port}||${HOST}`) as Record<string, any> | undefined;
      expect(cluster, "outbound cluster of the Consul service").to.not.equal(undefined);
      const mtls = (cluster!.transport_socket_matches as any[]).find((m) => m.name === "tlsMode-istio");
      const validation = mtls.transport_socket.typed_config.common_tls_context.combined_validation_context.default_validation_context;
      // Envoy's typed matchers, or the older untyped ones: what counts is the set of SANs verified.
      const sans = [
        ...(validation.match_typed_subject_alt_names ?? []).map((m: any) => m.matcher.exact),
        ...(validation.match_subject_alt_names ?? []).map((m: any) => m.exact),
      ].sort();
      expect(sans).to.deep.equal([legacySan, "spiffe://cluster.local/ns/default/sa/web"].sort());

      // /debug/configz: the file object names the Consul service it decorates and vice versa.
      const z = await configz();
      const se = z.configs.find((x) => x.kind === "ServiceEntry" && x.name === "web-decoration")!;
      expect(se.origin).to.equal(`${cp!.dir}/web-decoration.yaml:1:1`);
      expect(se.decorates).to.have.length(1);
      expect(se.decorates![0]!.service).to.equal(`default/${HOST}`);
      expect(se.decorates![0]!.origin).to.match(new RegExp(`^consul:${target.datacenter}/web@\\d+$`));
      const consulWeb = z.providedServices.find((x) => x.hostname === HOST)!;
      expect(consulWeb).to.deep.include({ kind: "ConsulService", namespace: "default", name: "web", origin: se.decorates![0]!.origin });
      expect(consulWeb.consul).to.deep.include({ datacenter: target.datacenter, service: "web" });
      expect(consulWeb.consul!.index).to.be.greaterThan(0);
      expect(consulWeb.decoratedBy).to.deep.equal({ config: "ServiceEntry/default/web-decoration", origin: se.origin });

      // A conflict (endpoints on the decorating entry) is reported at the file, naming the Consul service.
      await cp!.write(
        "web-decoration.yaml",
        yaml(`
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web-decoration, namespace: default}
spec:
  hosts: [${HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: ${a!.port}, name: grpc, protocol: GRPC}
  subjectAltNames: ["${legacySan}"]
  endpoints:
  - address: 127.0.0.29
`),
      );
      const { value: conflict } = await eventually("decoration conflict in /debug/configz", 15_000, async () =>
        (await configz()).problems.find((p) => p.kind === "ServiceEntry" && p.name === "web-decoration"),
      );
      expect(conflict.file).to.equal(`${cp!.dir}/web-decoration.yaml`);
      expect(conflict.message).to.contain(HOST).and.contain("Consul");
      // The Consul endpoints stay; the entry's own endpoint is ignored.
      expect((await service()).endpoints.map((e) => e.address)).to.deep.equal(["127.0.0.21", "127.0.0.22"]);
    });

    it("instances on different ports: each port's cluster holds only the instances serving that port", async function () {
      const [a, b] = await startEchoServers([
        { name: "127.0.0.31", host: "127.0.0.31" },
        { name: "127.0.0.32", host: "127.0.0.32" },
      ]);
      cleanups.push(() => [a, b].forEach((s) => s!.stop()));
      await target.register(instance("web", a!));
      await target.register(instance("web", b!));
      await controlPlane();
      const s = await service();
      expect(s.ports.map((p) => p.number).sort()).to.deep.equal([a!.port, b!.port].sort());
      expect(await eds(`outbound|${a!.port}||${HOST}`)).to.deep.equal([`127.0.0.31:${a!.port} HEALTHY`]);
      expect(await eds(`outbound|${b!.port}||${HOST}`)).to.deep.equal([`127.0.0.32:${b!.port} HEALTHY`]);
      const c = client(HOST, b!.port);
      await onlyReaches(c, "127.0.0.32");
    });

    describe("Consul unreachable at start", function () {
      it("serves the files; /ready is 503 naming the Consul source until it syncs (consul.waitForSync defaults to true)", async function () {
        const [f, w] = await serve(["127.0.0.41", "127.0.0.42"]);
        await target.stop();
        await controlPlane({ "files.yaml": fileService(f!) });
        const ready = await cp!.get("/ready");
        expect(ready.status).to.equal(503);
        expect(ready.body).to.match(/source consul has not synced: .+/);
        expect(await cp!.metric('vmpilot_source_synced{source="consul"}')).to.equal(0);
        expect(await cp!.metric('vmpilot_source_synced{source="files"}')).to.equal(1);
        const down = await consulStatus();
        expect(down).to.deep.include({ synced: false, stale: false });
        expect(down.lastError).to.be.a("string").and.not.equal("");

        // The files are served meanwhile.
        await reachAll(client("files.example.com", f!.port), ["127.0.0.41"]);

        await target.registerWhileDown(instance("web", w!));
        await target.start();
        await eventually("/ready 200 once Consul synced", 20_000, async () => ((await cp!.get("/ready")).status === 200 ? true : undefined));
        expect(await cp!.metric('vmpilot_source_synced{source="consul"}')).to.equal(1);
        expect((await cp!.get("/ready")).body).to.equal("ready\n");
        await reachAll(client(HOST, w!.port), ["127.0.0.42"]);
      });

      it("with consul.waitForSync: false, /ready is 200 on the files alone and still names the unsynced source", async function () {
        const [f] = await serve(["127.0.0.41"]);
        await target.stop();
        await controlPlane({ "files.yaml": fileService(f!) }, { waitForSync: false });
        const ready = await cp!.get("/ready");
        expect(ready.status).to.equal(200);
        expect(ready.body).to.match(/^ready\n  source consul has not synced: .+ \(readiness does not wait for it: consul.waitForSync is false\)\n$/);
        expect(await cp!.metric('vmpilot_source_synced{source="consul"}')).to.equal(0);
        await reachAll(client("files.example.com", f!.port), ["127.0.0.41"]);
        await target.start();
        await eventually("/ready without notes once Consul synced", 20_000, async () => ((await cp!.get("/ready")).body === "ready\n" ? true : undefined));
      });
    });
  });
}

function fileService(server: EchoServer): string {
  return yaml(`
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: files, namespace: default}
spec:
  hosts: [files.example.com]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: ${server.port}, name: grpc, protocol: GRPC}
  endpoints:
  - address: ${server.opts.host}
`);
}

describe("server config: consul.waitForSync", function () {
  it("is read from the consul section, absent unless given (readiness then waits), and must be a boolean", function () {
    const base = { configDirs: ["/x"] };
    expect(resolveServerConfig({ ...base, consul: { address: "http://127.0.0.1:8500" } }, "/", {}).consul).to.deep.equal({ address: "http://127.0.0.1:8500" });
    expect(resolveServerConfig({ ...base, consul: { address: "http://127.0.0.1:8500", waitForSync: false } }, "/", {}).consul).to.deep.equal({
      address: "http://127.0.0.1:8500",
      waitForSync: false,
    });
    // --consul-addr keeps the file's other settings.
    expect(resolveServerConfig({ ...base, consul: { address: "http://127.0.0.1:8500", waitForSync: false } }, "/", { consulAddr: "http://127.0.0.1:8501" }).consul).to.deep.equal({
      address: "http://127.0.0.1:8501",
      waitForSync: false,
    });
    expect(() => resolveServerConfig({ ...base, consul: { address: "http://127.0.0.1:8500", waitForSync: "no" } }, "/", {})).to.throw(ServerConfigError, /consul\.waitForSync: expected true or false/);
  });
});
