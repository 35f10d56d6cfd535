// End to end with gRPC's own xDS client: the real control plane (files -> registry -> generators -> cache ->
// ADS) and real gRPC servers on distinct loopback addresses, declared as WorkloadEntries; a client that only
// knows `xds:///HOST:PORT` and a bootstrap. grpc-js-xds validates every resource strictly and NACKs what it
// cannot use, so after every test /debug/syncz must show no NACK.
import { expect } from "chai";
import * as grpc from "@grpc/grpc-js";
import { ResourceCache } from "@vmpilot/xds/cache";
import { call, type EchoClient, EchoServer, startEchoServers, tally } from "./helpers/echo.js";
import { eventually, serviceEntry, TestControlPlane, workloadEntry, xdsEchoClient } from "./helpers/e2e.js";

const PORT = 7070;

function yaml(...docs: string[]): string {
  return docs.map((d) => d.trim()).join("\n---\n") + "\n";
}

function subsets(name: string, host: string, names: string[]): string {
  return yaml(`
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ${name}, namespace: default}
spec:
  host: ${host}
  subsets:
${names.map((s) => `  - {name: ${s}, labels: {version: ${s}}}`).join("\n")}
`);
}

function virtualService(name: string, host: string, http: string): string {
  return yaml(`
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ${name}, namespace: default}
spec:
  hosts: [${host}]
  http:
${http.replace(/^\n/, "").replace(/\s+$/, "")}
`);
}

describe("xDS end to end with @grpc/grpc-js-xds", function () {
  this.timeout(60_000);
  let tcp: TestControlPlane;
  const servers: EchoServer[] = [];
  const clients: EchoClient[] = [];

  before(async function () {
    tcp = await TestControlPlane.start(() => new ResourceCache());
  });

  after(async function () {
    for (const c of clients) c.close();
    for (const s of servers) s.stop();
    await tcp?.stop();
  });

  afterEach(async function () {
    // grpc-js-xds NACKs anything it cannot use; none of the above may have produced one.
    expect(await tcp.nacks()).to.deep.equal([]);
  });

  async function serve(...specs: { name: string; host: string; failWhen?: (n: number) => boolean }[]): Promise<EchoServer[]> {
    const started = await startEchoServers(specs);
    servers.push(...started);
    return started;
  }

  /** WorkloadEntries for `echo` servers, labelled app=APP and version=VERSION. */
  async function declare(app: string, list: { server: EchoServer; version?: string }[]): Promise<void> {
    for (const { server, version } of list) {
      await tcp.write(`we-${server.opts.name}.yaml`, workloadEntry({ name: server.opts.name, address: server.opts.host, port: server.port, labels: { app, ...(version ? { version } : {}) } }));
    }
  }

  function client(host: string): EchoClient & { nodeId: string } {
    const c = xdsEchoClient(tcp.xdsAddress, `${host}:${PORT}`);
    clients.push(c);
    return c;
  }

  /** Waits until calls succeed and every server in `names` has answered at least once. */
  async function reachAll(c: EchoClient, names: string[], headers: Record<string, string> = {}, timeoutMs = 15_000): Promise<void> {
    const seen = new Set<string>();
    await eventually(`calls reaching ${names.join(", ")}`, timeoutMs, async () => {
      const r = await call(c, {}, headers, 2000);
      if (r.server) seen.add(r.server);
      return names.every((n) => seen.has(n)) ? true : undefined;
    }, 10);
  }

  it("discovers endpoints through workloadSelector and round-robins across them", async function () {
    const s = await serve({ name: "rr-1", host: "127.0.0.2" }, { name: "rr-2", host: "127.0.0.3" }, { name: "rr-3", host: "127.0.0.4" });
    await declare("rr", s.map((server) => ({ server })));
    await tcp.write("se-rr.yaml", serviceEntry({ name: "rr", host: "rr.example.com", port: PORT, selector: { app: "rr" } }));
    const c = client("rr.example.com");
    await reachAll(c, ["rr-1", "rr-2", "rr-3"]);
    const counts = new Map<string, number>();
    for (let i = 0; i < 30; i++) {
      const r = await call(c);
      expect(r.code, r.details).to.equal(grpc.status.OK);
      counts.set(r.server!, (counts.get(r.server!) ?? 0) + 1);
    }
    // Round robin over three ready endpoints: 30 sequential calls split 10/10/10 (±1 for a rotation boundary).
    for (const n of ["rr-1", "rr-2", "rr-3"]) expect(counts.get(n), `${n} in ${JSON.stringify([...counts])}`).to.be.within(9, 11);
  });

  it("splits traffic 80/20 by subset weight over 1,000 calls (tolerance ±5 points)", async function () {
    const [v1, v2] = await serve({ name: "split-v1", host: "127.0.0.5" }, { name: "split-v2", host: "127.0.0.6" });
    await declare("split", [
      { server: v1!, version: "v1" },
      { server: v2!, version: "v2" },
    ]);
    await tcp.write("se-split.yaml", serviceEntry({ name: "split", host: "split.example.com", port: PORT, selector: { app: "split" } }));
    await tcp.write("dr-split.yaml", subsets("split", "split.example.com", ["v1", "v2"]));
    await tcp.write(
      "vs-split.yaml",
      virtualService(
        "split",
        "split.example.com",
        `
  - route:
    - {destination: {host: split.example.com, subset: v1}, weight: 80}
    - {destination: {host: split.example.com, subset: v2}, weight: 20}
`,
      ),
    );
    const c = client("split.example.com");
    await reachAll(c, ["split-v1", "split-v2"]);
    const counts = await tally(c, 1000);
    const share = (counts.get("split-v1") ?? 0) / 1000;
    console.log(`      80/20 split measured: v1 ${(share * 100).toFixed(1)}%, v2 ${(((counts.get("split-v2") ?? 0) / 1000) * 100).toFixed(1)}% of 1000 calls`);
    expect((counts.get("split-v1") ?? 0) + (counts.get("split-v2") ?? 0)).to.equal(1000);
    expect(share).to.be.within(0.75, 0.85);
  });

  it("routes by request header to a subset", async function () {
    const [stable, canary] = await serve({ name: "hdr-v1", host: "127.0.0.7" }, { name: "hdr-v2", host: "127.0.0.8" });
    await declare("hdr", [
      { server: stable!, version: "v1" },
      { server: canary!, version: "v2" },
    ]);
    await tcp.write("se-hdr.yaml", serviceEntry({ name: "hdr", host: "hdr.example.com", port: PORT, selector: { app: "hdr" } }));
    await tcp.write("dr-hdr.yaml", subsets("hdr", "hdr.example.com", ["v1", "v2"]));
    await tcp.write(
      "vs-hdr.yaml",
      virtualService(
        "hdr",
        "hdr.example.com",
        `
  - match:
    - headers:
        x-variant: {exact: canary}
    route:
    - destination: {host: hdr.example.com, subset: v2}
  - route:
    - destination: {host: hdr.example.com, subset: v1}
`,
      ),
    );
    const c = client("hdr.example.com");
    await reachAll(c, ["hdr-v2"], { "x-variant": "canary" });
    const canaryCounts = await tally(c, 50, { "x-variant": "canary" }, 5);
    const plainCounts = await tally(c, 50, {}, 5);
    expect([...canaryCounts]).to.deep.equal([["hdr-v2", 50]]);
    expect([...plainCounts]).to.deep.equal([["hdr-v1", 50]]);
  });

  it("injects faults: abort returns the configured status, delay adds the configured delay", async function () {
    const [f] = await serve({ name: "fault-1", host: "127.0.0.9" });
    await declare("fault", [{ server: f! }]);
    await tcp.write("se-fault.yaml", serviceEntry({ name: "fault", host: "fault.example.com", port: PORT, selector: { app: "fault" } }));
    await tcp.write(
      "vs-fault.yaml",
      virtualService(
        "fault",
        "fault.example.com",
        `
  - match:
    - headers:
        x-fault: {exact: abort}
    fault:
      abort: {httpStatus: 403, percentage: {value: 100}}
    route:
    - destination: {host: fault.example.com}
  - match:
    - headers:
        x-fault: {exact: delay}
    fault:
      delay: {fixedDelay: 500ms, percentage: {value: 100}}
    route:
    - destination: {host: fault.example.com}
  - route:
    - destination: {host: fault.example.com}
`,
      ),
    );
    const c = client("fault.example.com");
    await reachAll(c, ["fault-1"]);
    const callsBefore = f!.calls;
    const aborted = await call(c, {}, { "x-fault": "abort" });
    // HTTP 403 maps to PERMISSION_DENIED (gRPC's HTTP-to-status mapping); the server never sees the call.
    expect(grpc.status[aborted.code], aborted.details).to.equal("PERMISSION_DENIED");
    expect(f!.calls).to.equal(callsBefore);
    const delayed = await call(c, {}, { "x-fault": "delay" });
    expect(delayed.code, delayed.details).to.equal(grpc.status.OK);
    expect(delayed.elapsedMs).to.be.at.least(500);
    const plain = await call(c);
    expect(plain.code).to.equal(grpc.status.OK);
  });

  it("cuts a slow call at the route timeout", async function () {
    const [slow] = await serve({ name: "slow-1", host: "127.0.0.10" });
    await declare("slow", [{ server: slow! }]);
    await tcp.write("se-slow.yaml", serviceEntry({ name: "slow", host: "slow.example.com", port: PORT, selector: { app: "slow" } }));
    await tcp.write("vs-slow.yaml", virtualService("slow", "slow.example.com", `\n  - timeout: 300ms\n    route:\n    - destination: {host: slow.example.com}\n`));
    const c = client("slow.example.com");
    await reachAll(c, ["slow-1"]);
    const r = await call(c, { sleepMs: 3000 }, {}, 10_000);
    expect(grpc.status[r.code]).to.equal("DEADLINE_EXCEEDED");
    expect(r.elapsedMs).to.be.at.least(300).and.below(3000);
    const fast = await call(c, { sleepMs: 10 });
    expect(fast.code).to.equal(grpc.status.OK);
  });

  it("retries turn a flaky backend's failures into successes", async function () {
    // Fails every other call with UNAVAILABLE.
    const [flaky] = await serve({ name: "flaky-1", host: "127.0.0.11", failWhen: (n) => n % 2 === 1 });
    await declare("flaky", [{ server: flaky! }]);
    await tcp.write("se-flaky.yaml", serviceEntry({ name: "flaky", host: "flaky.example.com", port: PORT, selector: { app: "flaky" } }));
    await tcp.write(
      "vs-flaky.yaml",
      virtualService(
        "flaky",
        "flaky.example.com",
        `
  - match:
    - headers:
        x-retry: {exact: "no"}
    route:
    - destination: {host: flaky.example.com}
  - retries: {attempts: 3, retryOn: unavailable}
    route:
    - destination: {host: flaky.example.com}
`,
      ),
    );
    const c = client("flaky.example.com");
    await reachAll(c, ["flaky-1"]);
    // Without retries about half the calls fail: the backend really is flaky.
    const without = await tally(c, 20, { "x-retry": "no" }, 1);
    expect(without.get("error:UNAVAILABLE") ?? 0).to.be.greaterThan(0);
    const failuresBefore = flaky!.failures;
    const withRetries = await tally(c, 20, {}, 1);
    expect([...withRetries]).to.deep.equal([["flaky-1", 20]]);
    expect(flaky!.failures - failuresBefore, "the backend failed and the client retried").to.be.greaterThan(0);
  });

  it("reaches a server by hostname through a DNS-resolution ServiceEntry", async function () {
    const [dns] = await serve({ name: "dns-1", host: "127.0.0.1" });
    await tcp.write("se-dns.yaml", serviceEntry({ name: "dns", host: "dns.example.com", port: PORT, resolution: "DNS", endpoints: [{ address: "localhost", port: dns!.port }] }));
    const c = client("dns.example.com");
    await reachAll(c, ["dns-1"]);
  });

  it("follows WorkloadEntry files being added and removed within 2 seconds, and ignores a broken file", async function () {
    const [d1, d2] = await serve({ name: "dyn-1", host: "127.0.0.12" }, { name: "dyn-2", host: "127.0.0.13" });
    await declare("dyn", [{ server: d1! }]);
    await tcp.write("se-dyn.yaml", serviceEntry({ name: "dyn", host: "dyn.example.com", port: PORT, selector: { app: "dyn" } }));
    const c = client("dyn.example.com");
    await reachAll(c, ["dyn-1"]);

    await declare("dyn", [{ server: d2! }]);
    const added = await eventually("dyn-2 receiving traffic", 2000, async () => ((await call(c, {}, {}, 1000)).server === "dyn-2" ? true : undefined), 10);
    console.log(`      added WorkloadEntry serving after ${added.elapsedMs} ms`);

    await tcp.remove("we-dyn-1.yaml");
    const removed = await eventually("dyn-1 out of rotation", 2000, async () => {
      const servers = await Promise.all(Array.from({ length: 6 }, () => call(c, {}, {}, 1000)));
      return servers.every((r) => r.server === "dyn-2") ? true : undefined;
    }, 10);
    console.log(`      removed WorkloadEntry out of rotation after ${removed.elapsedMs} ms`);

    // A broken edit of dyn-2's file: its last good version keeps serving; nothing is pushed, traffic does not move.
    const sentVersions = async (): Promise<Record<string, string | undefined>> => {
      const p = (await tcp.syncz()).find((x) => x.proxyId === c.nodeId)!;
      return Object.fromEntries(Object.entries(p.types).map(([t, v]) => [t, v.sent?.version]));
    };
    const before = await sentVersions();
    expect(before.EDS).to.be.a("string");
    await tcp.write("we-dyn-2.yaml", "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: dyn-2}\nspec:\n  address: [not, an, address]\n");
    await eventually("problem reported", 5000, async () => {
      const z = JSON.parse((await tcp.get("/debug/configz")).body) as { problems: { file: string }[] };
      return z.problems.some((p) => p.file.endsWith("we-dyn-2.yaml")) ? true : undefined;
    });
    const after = await tally(c, 20, {}, 4);
    expect([...after]).to.deep.equal([["dyn-2", 20]]);
    // Any push the new snapshot caused would have gone out within the debounce cap (1 s).
    await new Promise((r) => setTimeout(r, 1200));
    expect(await sentVersions()).to.deep.equal(before);
  });

  it("survives a control plane restart: traffic keeps flowing and later changes still arrive", async function () {
    const [r1, r2] = await serve({ name: "rs-1", host: "127.0.0.14" }, { name: "rs-2", host: "127.0.0.15" });
    await declare("rs", [{ server: r1! }]);
    await tcp.write("se-rs.yaml", serviceEntry({ name: "rs", host: "rs.example.com", port: PORT, selector: { app: "rs" } }));
    const c = client("rs.example.com");
    await reachAll(c, ["rs-1"]);

    await tcp.restart();
    // While the client reconnects it serves from what it has.
    const during = await call(c);
    expect(during.server, during.details).to.equal("rs-1");
    await eventually("client reconnected to the new control plane", 20_000, async () => ((await tcp.syncz()).length > 0 ? true : undefined), 100);
    await declare("rs", [{ server: r2! }]);
    await reachAll(c, ["rs-2"], {}, 20_000);
  });
});
