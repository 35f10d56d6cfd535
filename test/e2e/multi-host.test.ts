// The multi-host testbed (issue 7): the control plane and the workloads on different hosts, over a network.
//
// Hosts are network namespaces on one switch (netns.ts), with addresses in 10.213.0.0/24 that exist only
// inside them. Every process is the real program:
//   cp  10.213.0.1   `vmpilot server`: config dir, state dir (CA + token key), mTLS xDS + CA on 10.213.0.1:15012;
//                    plaintext xDS and HTTP stay on cp's own loopback; Consul (the simulator) on cp's loopback,
//                    where w1 and w2 are registered as instances of the Consul service `echo-legacy`
//   w1  10.213.0.11  `vmpilot-agent run` (proxy kind grpc) + an echo server with the agent's certificates
//   w2  10.213.0.12  the same
//   c1  10.213.0.21  `vmpilot-agent run` + a client on xds:///echo.e2e.internal:7070 (file config) and
//                    xds:///echo-legacy.service.consul:7070 (Consul) through grpc-js-xds and the agent's bootstrap
//                    (its xDS goes through the agent's xDS proxy, over mTLS, to cp), and an "impostor" echo
//                    server holding c1's certificate while a WorkloadEntry claims it is `echo`
// Each agent gets its first certificate over the network with a token from `vmpilot token create` and the
// mesh root, as an operator would hand them out.
//
// Needs root and iproute2: skips with the reason otherwise, and FAILS instead when CI is set (CI runs as root
// with iproute2 installed by .ci/install-system-deps.sh).
import fs from "node:fs";
import path from "node:path";
import { expect } from "chai";
import { AGENT_CLI, CONSUL, HostProcess, httpIn, runToCompletion, VMPILOT_CLI, WORKLOAD } from "./hosts.js";
import { rootInterfaces, sweepStale, Testbed, testbedTmpDir, unavailableReason } from "./netns.js";
import { until as pollUntil } from "../helpers/poll.js";

const TRUST_DOMAIN = "cluster.local";
const NS = "e2e";
const ECHO_HOST = "echo.e2e.internal";
const IMPOSTOR_HOST = "impostor.e2e.internal";
const CONSUL_SERVICE = "echo-legacy";
const CONSUL_HOST = `${CONSUL_SERVICE}.service.consul`;
const PORT = 7070;
const IMPOSTOR_PORT = 7071;
const CP = { name: "cp", address: "10.213.0.1" };
const W1 = { name: "w1", address: "10.213.0.11" };
const W2 = { name: "w2", address: "10.213.0.12" };
const C1 = { name: "c1", address: "10.213.0.21" };
const SECURE_ADDR = `${CP.address}:15012`;
const HTTP = "http://127.0.0.1:15014";
const spiffe = (sa: string) => `spiffe://${TRUST_DOMAIN}/ns/${NS}/sa/${sa}`;

/** What cutting a link may cost: the last FAILOVER_CALLS calls all reach the other host within this bound. */
const FAILOVER_BOUND_MS = 10_000;
const FAILOVER_CALLS = 20;
const CALL_INTERVAL_MS = 50;
/** Every call ends by then (a call to a cut-off host hangs until its deadline). */
const CALL_DEADLINE_MS = 3000;

interface CallEvent {
  event: "call";
  target: string;
  seq: number;
  start: number;
  ok: boolean;
  server?: string;
  peer?: string;
  code?: string;
  details?: string;
}

/** The GitOps directory's one file; `withoutW1` drops w1's WorkloadEntry (a workload taken out of service). */
function meshConfig(opts: { withoutW1?: boolean } = {}): string {
  const serviceEntry = (name: string, host: string, app: string) => `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ${name}, namespace: ${NS}}
spec:
  hosts: [${host}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: ${PORT}, name: grpc, protocol: GRPC}]
  workloadSelector: {labels: {app: ${app}}}
`;
  // Proxyless gRPC gets mTLS when a DestinationRule asks for ISTIO_MUTUAL: certificate provider instances from
  // the bootstrap, SAN matchers from the selected workloads' service accounts.
  const mutual = (name: string, host: string) => `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ${name}, namespace: ${NS}}
spec:
  host: ${host}
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
`;
  const workload = (name: string, address: string, app: string, port: number) => `apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ${name}, namespace: ${NS}}
spec:
  address: ${address}
  ports: {grpc: ${port}}
  labels: {app: ${app}, host: ${name}}
  serviceAccount: echo
`;
  return [
    serviceEntry("echo", ECHO_HOST, "echo"),
    mutual("echo", ECHO_HOST),
    ...(opts.withoutW1 ? [] : [workload("w1", W1.address, "echo", PORT)]),
    workload("w2", W2.address, "echo", PORT),
    // Claims to be `echo` on c1; the server there holds c1's certificate (sa `client`), so the SAN check fails.
    serviceEntry("impostor", IMPOSTOR_HOST, "impostor"),
    mutual("impostor", IMPOSTOR_HOST),
    // The Consul service's instances carry meta service-account=echo, so its SANs are echo's identity.
    mutual("echo-legacy", CONSUL_HOST),
    workload("impostor", C1.address, "impostor", IMPOSTOR_PORT),
  ].join("---\n");
}

/** `vmpilot server --config` (paths relative to the file). */
function serverConfigYaml(consulAddr: string): string {
  return `configDirs: [cp-config]
stateDir: cp-state
secureAddr: ${SECURE_ADDR}
xdsAddr: 127.0.0.1:15010
httpAddr: 127.0.0.1:15014
mesh: {trustDomain: ${TRUST_DOMAIN}}
# Consul's services belong to the mesh namespace of the workloads registered there: their SPIFFE ids are e2e's.
consul: {address: "${consulAddr}", namespace: ${NS}}
`;
}

function agentConfig(dir: string, host: { name: string; address: string }, sa: string, labels: Record<string, string>): string {
  return `name: ${host.name}
namespace: ${NS}
serviceAccount: ${sa}
labels: {${Object.entries(labels).map(([k, v]) => `${k}: ${v}`).join(", ")}}
address: ${host.address}
ports: [{name: grpc, port: ${PORT}, protocol: GRPC}]
trustDomain: ${TRUST_DOMAIN}
controlPlane:
  address: ${SECURE_ADDR}
  tokenFile: ${dir}/token
  rootCertFile: ${dir}/root-cert.pem
output: {dir: ${dir}/out}
proxy: {kind: grpc}
interception: {mode: NONE}
status: {address: "${host.address}:15020", readinessAddress: "${host.address}:15021"}
certificates: {minRetry: 200ms, maxRetry: 2s}
`;
}

/** A process the test depends on has exited: no point in waiting any longer. */
class Exited extends Error {}

function mustRun(...ps: HostProcess[]): void {
  for (const p of ps) if (!p.running) throw new Exited(`${p.opts.name} exited:\n${p.report()}`);
}

/** Polls (poll.ts) until `fn` returns a value; a process that exited (`Exited`) ends the wait at once. */
function until<T>(what: string, timeoutMs: number, fn: () => T | undefined | Promise<T | undefined>, everyMs = 100): Promise<T> {
  return pollUntil(what, async () => {
    const v = await fn();
    return v === undefined ? undefined : { v };
  }, { timeoutMs, everyMs, fatal: (e) => e instanceof Exited }).then((r) => r.v);
}

describe("multi-host testbed: control plane and workloads in separate network namespaces", function () {
  this.timeout(90_000);
  let bed: Testbed | undefined;
  let tmp: string;
  let interfacesBefore: string[];
  const procs: HostProcess[] = [];
  let server: HostProcess;
  let client: HostProcess;
  let startServer: () => HostProcess;
  let configDir: string;
  const onSignal = (sig: NodeJS.Signals) => {
    // Killed mid-run (Ctrl-C, CI timeout): remove the namespaces, then die of the same signal.
    bed?.destroy();
    process.kill(process.pid, sig);
  };

  function spawn(name: string, host: string | undefined, script: string, args: string[]): HostProcess {
    const p = new HostProcess({ name, ...(host ? { netns: bed!.host(host).netns } : {}), env: { VMPILOT_LOG_LEVEL: "info" } }, script, args);
    procs.push(p);
    return p;
  }

  /** The client's calls as it reported them, in completion order. */
  const callLog: CallEvent[] = [];
  const calls = (target: string, from = 0): CallEvent[] => callLog.filter((e) => e.target === target && e.start >= from);
  const echoCalls = (from = 0) => calls(`xds:///${ECHO_HOST}:${PORT}`, from);
  const consulCalls = (from = 0) => calls(`xds:///${CONSUL_HOST}:${PORT}`, from);

  async function controlPlaneReady(): Promise<void> {
    await until("the control plane's /ready", 30_000, async () => {
      mustRun(server);
      return (await httpIn(bed!.host("cp").netns, `${HTTP}/ready`)).status === 200 ? true : undefined;
    }, 200);
  }

  async function syncz(): Promise<{ proxyId: string; types: Record<string, { acked?: unknown; lastNack?: { message: string } }> }[]> {
    return JSON.parse((await httpIn(bed!.host("cp").netns, `${HTTP}/debug/syncz`)).body);
  }

  before(async function () {
    const reason = unavailableReason();
    if (reason) {
      if (process.env.CI) throw new Error(`the multi-host testbed cannot run, and CI is set: ${reason}`);
      console.log(`      skipped: ${reason}`);
      this.skip();
    }
    const swept = sweepStale();
    if (swept.length) console.log(`      removed what earlier runs left: ${swept.join(", ")}`);
    interfacesBefore = rootInterfaces();
    process.once("SIGINT", onSignal);
    process.once("SIGTERM", onSignal);
    try {
      bed = new Testbed().create([CP, W1, W2, C1]);
    } catch (e) {
      // Root without CAP_SYS_ADMIN (an unprivileged container): the same "cannot run here" as above.
      const msg = (e as Error).message;
      if (process.env.CI || !/Operation not permitted|Permission denied/.test(msg)) throw e;
      console.log(`      skipped: cannot create network namespaces here: ${msg.trim()}`);
      this.skip();
    }
    tmp = testbedTmpDir();

    // cp: Consul, with w1 and w2 registered as the VMs' Consul agents would register them.
    const consul = spawn("cp: consul (simulator)", "cp", CONSUL, []);
    const consulAddr = await until("Consul to listen", 30_000, () => {
      mustRun(consul);
      const l = consul.stdout.find((x) => x.includes('"listening"'));
      return l ? (JSON.parse(l) as { address: string }).address : undefined;
    });
    for (const h of [W1, W2]) {
      const r = await httpIn(bed.host("cp").netns, `${consulAddr}/v1/catalog/register`, {
        method: "PUT",
        body: { Node: h.name, Address: h.address, Service: { ID: `${CONSUL_SERVICE}-${h.name}`, Service: CONSUL_SERVICE, Port: PORT, Meta: { "service-account": "echo", protocol: "grpc" } } },
      });
      expect(r.status, `registering ${h.name} in Consul: ${r.body}`).to.equal(200);
    }

    // cp: the control plane, configured by its config file: the GitOps dir, the state dir, Consul, addresses.
    const stateDir = path.join(tmp, "cp-state");
    const serverConfig = path.join(tmp, "vmpilot.yaml");
    configDir = path.join(tmp, "cp-config");
    fs.mkdirSync(configDir);
    fs.writeFileSync(path.join(configDir, "mesh.yaml"), meshConfig());
    fs.writeFileSync(serverConfig, serverConfigYaml(consulAddr));
    startServer = () => (server = spawn("cp: vmpilot server", "cp", VMPILOT_CLI, ["server", "--config", serverConfig]));
    startServer();
    await controlPlaneReady();

    // The operator's part: one token per workload from the state dir, and the mesh root, handed to each host.
    const hosts = [
      { host: W1, sa: "echo", labels: { app: "echo" } },
      { host: W2, sa: "echo", labels: { app: "echo" } },
      { host: C1, sa: "client", labels: { app: "client" } },
    ];
    const dirs: Record<string, string> = {};
    await Promise.all(
      hosts.map(async ({ host, sa, labels }) => {
        const dir = (dirs[host.name] = path.join(tmp, host.name));
        fs.mkdirSync(dir);
        const token = await runToCompletion({ name: `token for ${host.name}` }, VMPILOT_CLI, ["token", "create", "--config", serverConfig, "--namespace", NS, "--service-account", sa, "--ttl", "10m"]);
        fs.writeFileSync(path.join(dir, "token"), token.trim() + "\n", { mode: 0o600 });
        fs.copyFileSync(path.join(stateDir, "ca", "root-cert.pem"), path.join(dir, "root-cert.pem"));
        fs.writeFileSync(path.join(dir, "agent.yaml"), agentConfig(dir, host, sa, labels));
        spawn(`${host.name}: vmpilot-agent`, host.name, AGENT_CLI, ["run", "--config", path.join(dir, "agent.yaml")]);
      }),
    );
    const bootstrap = (h: string) => path.join(dirs[h]!, "out", "grpc-bootstrap.json");
    // The agent writes the bootstrap only after it holds a certificate from the CA across the network.
    await until("every agent's certificate and gRPC bootstrap", 30_000, () => {
      mustRun(...procs);
      return hosts.every(({ host }) => fs.existsSync(bootstrap(host.name))) ? true : undefined;
    });

    const workloads = [
      spawn("w1: echo server", "w1", WORKLOAD, ["--name", "w1", "--bootstrap", bootstrap("w1"), "--listen", `${W1.address}:${PORT}`]),
      spawn("w2: echo server", "w2", WORKLOAD, ["--name", "w2", "--bootstrap", bootstrap("w2"), "--listen", `${W2.address}:${PORT}`]),
    ];
    await until("the echo servers to listen", 30_000, () => {
      mustRun(...workloads);
      return workloads.every((p) => p.stdout.some((l) => l.includes('"listening"'))) ? true : undefined;
    });
    client = spawn("c1: client + impostor", "c1", WORKLOAD, [
      "--name", "impostor",
      "--bootstrap", bootstrap("c1"),
      "--listen", `${C1.address}:${IMPOSTOR_PORT}`,
      "--call", `xds:///${ECHO_HOST}:${PORT}`,
      "--call", `xds:///${IMPOSTOR_HOST}:${PORT}`,
      "--call", `xds:///${CONSUL_HOST}:${PORT}`,
      "--interval", String(CALL_INTERVAL_MS),
      "--deadline", String(CALL_DEADLINE_MS),
    ]);
    client.onLine((l) => {
      const e = JSON.parse(l) as CallEvent | { event: string };
      if (e.event === "call") callLog.push(e as CallEvent);
    });
  });

  afterEach(function () {
    if (this.currentTest?.state === "failed") for (const p of procs) console.log(p.report());
  });

  after(async function () {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    await Promise.all(procs.map((p) => p.stop("SIGTERM", 3000)));
    bed?.destroy();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  it("discovers both workload hosts across the network and calls them over mTLS with SPIFFE identities", async () => {
    const seen = await until("successful calls reaching both w1 and w2", 30_000, () => {
      const servers = new Set(echoCalls().filter((c) => c.ok).map((c) => c.server));
      return servers.has("w1") && servers.has("w2") ? servers : undefined;
    });
    expect([...seen].sort()).to.deep.equal(["w1", "w2"]);
    // The same servers as instances of a Consul service, over mTLS too (its DestinationRule asks for it).
    await until("calls to the Consul service reaching both w1 and w2", 30_000, () => {
      const servers = new Set(consulCalls().filter((c) => c.ok).map((c) => c.server));
      return servers.has("w1") && servers.has("w2") ? true : undefined;
    });
    // Each server authenticated the caller by the certificate c1's agent obtained (requireClientCert).
    for (const c of [...echoCalls(), ...consulCalls()].filter((c) => c.ok)) expect(c.peer, `call ${c.seq} to ${c.target}`).to.equal(spiffe("client"));

    // The impostor is reachable and holds a valid mesh certificate, but for sa `client`, not the `echo` its
    // WorkloadEntry claims: the client's SAN check (from the cluster the control plane sent) refuses it.
    // Counted from the first successful echo call: by then c1 has the impostor's cluster too, so its calls
    // fail at the handshake, not for want of config.
    const configured = Math.min(...echoCalls().filter((c) => c.ok).map((c) => c.start));
    const impostor = await until("ten calls to the impostor", 20_000, () => {
      const cs = calls(`xds:///${IMPOSTOR_HOST}:${PORT}`, configured);
      return cs.length >= 10 ? cs : undefined;
    });
    expect(impostor.filter((c) => c.ok), "calls the impostor answered").to.deep.equal([]);
    for (const c of impostor) {
      expect(c.code, `impostor call ${c.seq}`).to.equal("UNAVAILABLE");
      expect(c.details, `impostor call ${c.seq}`).to.match(/No matching subject alternative name found in certificate/);
    }
    expect(client.stdout.filter((l) => l.includes('"served"')), "calls the impostor server handled").to.deep.equal([]);

    // grpc-js-xds accepted everything it was sent (it NACKs what it cannot use).
    const c1 = (await syncz()).find((p) => p.proxyId.includes(C1.address));
    expect(c1, "c1's xDS client on the control plane").to.not.equal(undefined);
    for (const [type, t] of Object.entries(c1!.types)) expect(t.lastNack, `NACK of ${type}`).to.equal(undefined);
  });

  it(`moves traffic to w2 within ${FAILOVER_BOUND_MS / 1000} s of cutting w1's link, and back after reconnecting it`, async () => {
    const cutAt = Date.now();
    bed!.setLink("w1", false);
    // Converged at T: every call started at T or later reached w2, and there are FAILOVER_CALLS of them. Only
    // calls old enough to have ended count, so one still hanging on w1 cannot hide behind later successes.
    const convergedAt = await until(`${FAILOVER_CALLS} consecutive calls to w2 after the cut`, FAILOVER_BOUND_MS + 15_000, () => {
      const settledBefore = Date.now() - CALL_DEADLINE_MS - 500;
      const after = echoCalls(cutAt).filter((c) => c.start < settledBefore).sort((a, b) => a.start - b.start);
      let i = after.length;
      while (i > 0 && after[i - 1]!.ok && after[i - 1]!.server === "w2") i--;
      return after.length - i >= FAILOVER_CALLS ? after[i]!.start : undefined;
    });
    const took = convergedAt - cutAt;
    console.log(`      failover: calls from ${took} ms after the cut on all reached w2`);
    expect(took, "time from the cut to the first of the calls that all reach w2").to.be.at.most(FAILOVER_BOUND_MS);
    expect(echoCalls(convergedAt).filter((c) => !c.ok || c.server !== "w2"), "calls after convergence that did not reach w2").to.deep.equal([]);

    const upAt = Date.now();
    bed!.setLink("w1", true);
    await until("w1 to serve again after its link is back", 20_000, () => (echoCalls(upAt).some((c) => c.ok && c.server === "w1") ? true : undefined));
  });

  it("keeps traffic flowing while the control plane is killed and restarted with the same state dir; the client resubscribes and gets later changes", async () => {
    const killedAt = Date.now();
    await server.stop("SIGKILL");
    // The data plane does not need the control plane: calls keep succeeding while it is gone.
    await until("2 s of calls without a control plane", 10_000, () => (echoCalls(killedAt).some((c) => c.start > killedAt + 2000) ? true : undefined));
    startServer();
    await controlPlaneReady();
    // c1's xDS client came back through its agent's proxy: the new process has sent it every type and had them ACKed.
    await until("c1 to resubscribe to the restarted control plane", 30_000, async () => {
      const c1 = (await syncz()).find((p) => p.proxyId.includes(C1.address));
      const types = Object.values(c1?.types ?? {});
      return types.length >= 4 && types.every((t) => t.acked && !t.lastNack) ? true : undefined;
    });
    const resumedAt = Date.now();
    await until("more calls after the restart", 10_000, () => (echoCalls(resumedAt).filter((c) => c.start > resumedAt + 1000).length > 0 ? true : undefined));
    for (const [source, list] of [["files", echoCalls], ["Consul", consulCalls]] as const) {
      const window = list(killedAt).filter((c) => c.start <= resumedAt + 1000);
      expect(window.length, `calls to the ${source} service around the restart`).to.be.greaterThan(20);
      expect(window.filter((c) => !c.ok), `calls to the ${source} service that failed around the restart`).to.deep.equal([]);
    }
    expect(new Set(echoCalls(resumedAt).filter((c) => c.ok).map((c) => c.server))).to.deep.equal(new Set(["w1", "w2"]));

    // The resumed stream is live, not just ACKed: a change made now reaches the client (w1 taken out of service).
    const changedAt = Date.now();
    fs.writeFileSync(path.join(configDir, "mesh.yaml.tmp"), meshConfig({ withoutW1: true }));
    fs.renameSync(path.join(configDir, "mesh.yaml.tmp"), path.join(configDir, "mesh.yaml"));
    await until(`${FAILOVER_CALLS} consecutive calls to w2 after w1's WorkloadEntry was removed`, 15_000, () => {
      const recent = echoCalls(changedAt).sort((a, b) => a.start - b.start).slice(-FAILOVER_CALLS);
      return recent.length === FAILOVER_CALLS && recent.every((c) => c.ok && c.server === "w2") ? true : undefined;
    });
  });

  it("leaves no namespaces, veths or processes behind", async () => {
    await Promise.all(procs.map((p) => p.stop("SIGTERM", 3000)));
    const names = bed!.prefix;
    bed!.destroy();
    expect(bed!.remaining(), `namespaces named ${names}*`).to.deep.equal([]);
    expect(rootInterfaces(), "interfaces of the test's own namespace").to.deep.equal(interfacesBefore);
    expect(procs.filter((p) => p.running).map((p) => p.opts.name)).to.deep.equal([]);
  });
});
