// The vmpilot-agent command as operators run it: a separate Node process on the TypeScript sources.
import { spawn } from "node:child_process";
import dns from "node:dns";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { expect } from "chai";
import { encodeJson } from "@vmpilot/xds/protojson";
import { isAlive, startCa, tmpDir, until, writeEnvoyStandIn, type RunningCa } from "./helpers.js";

const CLI = fileURLToPath(new URL("../src/cli.ts", import.meta.url));

interface Proc {
  code: Promise<number | null>;
  stdout: () => string;
  stderr: () => string;
  kill: (sig: NodeJS.Signals) => void;
}

function cli(args: string[], env: NodeJS.ProcessEnv = {}): Proc {
  const child = spawn(process.execPath, ["--conditions=vmpilot-source", "--import", "tsx", CLI, ...args], {
    env: { ...process.env, VMPILOT_LOG_FORMAT: "json", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  child.stdout.on("data", (d) => (out += d));
  child.stderr.on("data", (d) => (err += d));
  return {
    code: new Promise((resolve) => child.on("exit", (c) => resolve(c))),
    stdout: () => out,
    stderr: () => err,
    kill: (sig) => child.kill(sig),
  };
}

describe("vmpilot-agent CLI", function () {
  this.timeout(60_000);
  let dir: string;
  let ca: RunningCa;
  let configFile: string;

  before(async () => {
    ca = await startCa();
    dir = tmpDir("vmpilot-agent-cli-");
    fs.writeFileSync(path.join(dir, "root-cert.pem"), ca.rootPem);
    fs.writeFileSync(path.join(dir, "token"), await ca.ca.tokens.create({ trustDomain: "cluster.local", namespace: "shop", serviceAccount: "reviews" }));
    configFile = path.join(dir, "agent.yaml");
    fs.writeFileSync(
      configFile,
      `name: reviews-vm-1
namespace: shop
serviceAccount: reviews
address: 127.0.0.1
ports: [{name: http, port: 9080, targetPort: 8080}]
controlPlane: {address: "${ca.address}", tokenFile: ${dir}/token, rootCertFile: ${dir}/root-cert.pem}
output: {dir: ${dir}/out}
status: {address: "127.0.0.1:0"}
interception: {proxyUid: 1337}
`,
    );
  });
  after(async () => {
    await ca.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("bootstrap prints a strict Envoy bootstrap, --kind grpc the gRPC one, --out writes a file", async () => {
    const envoy = cli(["bootstrap", "--config", configFile]);
    expect(await envoy.code).to.equal(0);
    const json = JSON.parse(envoy.stdout());
    expect(() => encodeJson("envoy.config.bootstrap.v3.Bootstrap", json)).not.to.throw();
    expect(json.node.id).to.equal("sidecar~127.0.0.1~reviews-vm-1.shop~shop.svc.cluster.local");

    const gw = cli(["bootstrap", "--config", configFile, "--kind", "gateway", "--out", path.join(dir, "gw.json")]);
    expect(await gw.code).to.equal(0);
    expect(JSON.parse(fs.readFileSync(path.join(dir, "gw.json"), "utf8")).node.id).to.match(/^router~/);

    const grpc = cli(["bootstrap", "--config", configFile, "--kind", "grpc"], { VMPILOT_AGENT_AUTO_REGISTER_GROUP: "reviews" });
    expect(await grpc.code).to.equal(0);
    const g = JSON.parse(grpc.stdout());
    expect(g.node.metadata).to.deep.include({ PROXY_KIND: "grpc", AUTO_REGISTER_GROUP: "reviews" });
  });

  it("reports config errors with file:line and exits 1", async () => {
    const bad = path.join(dir, "bad.yaml");
    fs.writeFileSync(bad, fs.readFileSync(configFile, "utf8") + "proxy:\n  knd: envoy\n");
    const p = cli(["bootstrap", "--config", bad]);
    expect(await p.code).to.equal(1);
    expect(p.stderr()).to.include(`${bad}:11:3: error: unknown field "proxy.knd"`);
    expect(p.stdout()).to.equal("");
  });

  it("iptables --dry-run prints the REDIRECT rules", async () => {
    const p = cli(["iptables", "--config", configFile, "--dry-run"]);
    expect(await p.code).to.equal(0);
    const lines = p.stdout().trim().split("\n");
    expect(lines).to.include("iptables -t nat -A VMPILOT_INBOUND -p tcp --dport 8080 -j VMPILOT_IN_REDIRECT");
    expect(lines).to.include("iptables -t nat -A VMPILOT_OUTPUT -m owner --uid-owner 1337 -j RETURN");
    expect(lines).to.include("iptables -t nat -A VMPILOT_REDIRECT -p tcp -j REDIRECT --to-ports 15001");
  });

  it("iptables without --dry-run refuses clearly when not root", async function () {
    if (process.getuid?.() === 0) {
      console.log("      (skipped: running as root, and no test may change the host's iptables)");
      this.skip();
    }
    const p = cli(["iptables", "--config", configFile]);
    expect(await p.code).to.equal(1);
    expect(p.stderr()).to.include("vmpilot-agent: applying iptables rules needs root; run as root, or use --dry-run to print them");
  });

  it("iptables without --dry-run refuses clearly when iptables-restore is not on PATH", async () => {
    // An empty PATH: whatever the uid, nothing can be applied to this host.
    const p = cli(["iptables", "--config", configFile], { PATH: "" });
    expect(await p.code).to.equal(1);
    expect(p.stderr()).to.match(/vmpilot-agent: (applying iptables rules needs root|iptables-restore not found on PATH; install iptables, or use --dry-run)/);
  });

  it("iptables refuses when interception is off", async () => {
    const p = cli(["iptables", "--config", configFile, "--dry-run"], { VMPILOT_AGENT_INTERCEPTION_MODE: "NONE" });
    expect(await p.code).to.equal(1);
    expect(p.stderr()).to.include("interception.mode is NONE and dns.capture is off: there are no capture rules to print");
  });

  it("iptables --dry-run prints the DNS capture rules (before the TCP capture) when dns.capture is on", async () => {
    const p = cli(["iptables", "--config", configFile, "--dry-run"], { VMPILOT_AGENT_DNS_ENABLED: "true", VMPILOT_AGENT_DNS_CAPTURE_SERVERS: "10.0.0.2" });
    expect(await p.code).to.equal(0);
    const lines = p.stdout().trim().split("\n");
    expect(lines).to.include("iptables -t nat -N VMPILOT_OUTPUT_DNS");
    expect(lines).to.include("iptables -t nat -I OUTPUT 1 -p udp -m udp --dport 53 -j VMPILOT_OUTPUT_DNS");
    expect(lines).to.include("iptables -t nat -A VMPILOT_OUTPUT_DNS -m owner --uid-owner 1337 -j RETURN");
    expect(lines).to.include("iptables -t nat -A VMPILOT_OUTPUT_DNS -d 10.0.0.2/32 -p tcp -m tcp --dport 53 -j REDIRECT --to-ports 15053");
    const off = cli(["iptables", "--config", configFile, "--dry-run"]);
    expect(await off.code).to.equal(0);
    expect(off.stdout()).not.to.include("VMPILOT_OUTPUT_DNS");
  });

  it("run without an envoy binary exits 1 with a clear message", async () => {
    const p = cli(["run", "--config", configFile, "--envoy-bin", path.join(dir, "missing-envoy")]);
    expect(await p.code).to.equal(1);
    expect(p.stderr()).to.match(/vmpilot-agent: envoy binary ".*missing-envoy" not found; install Envoy, pass --envoy-bin PATH/);
  });

  it("run keeps retrying an unreachable CA, not ready meanwhile, and SIGTERM still exits 0", async () => {
    const envoy = writeEnvoyStandIn(dir);
    // Port 1 on loopback: nothing listens there, connections are refused.
    const p = cli(["run", "--config", configFile, "--envoy-bin", envoy.binary], { VMPILOT_AGENT_CONTROL_PLANE_ADDRESS: "127.0.0.1:1", VMPILOT_AGENT_CERTIFICATES_MIN_RETRY: "100ms" });
    await until("a logged retry", () => /obtaining the first certificate failed: .*retrying in \d+ ms/.test(p.stderr()), 30_000);
    expect(envoy.events()).to.deep.equal([]); // nothing starts without an identity
    p.kill("SIGTERM");
    expect(await p.code).to.equal(0);
  });

  it("run with dns.enabled answers on the DNS port at once (before any name table), and SIGTERM stops it with exit 0", async () => {
    const p = cli(["run", "--config", configFile], {
      VMPILOT_AGENT_PROXY_KIND: "grpc",
      VMPILOT_AGENT_STATUS_READINESS_ADDRESS: "127.0.0.1:0",
      VMPILOT_AGENT_DNS_ENABLED: "true",
      VMPILOT_AGENT_DNS_ADDRESS: "127.0.0.48",
      VMPILOT_AGENT_DNS_PORT: "0",
      VMPILOT_AGENT_DNS_UPSTREAMS: "",
    });
    const port = Number((await until("the DNS proxy to listen", () => /DNS proxy on 127\.0\.0\.48:(\d+)/.exec(p.stderr()), 30_000))[1]);
    const resolver = new dns.promises.Resolver({ timeout: 2000, tries: 1 });
    resolver.setServers([`127.0.0.48:${port}`]);
    // No upstreams and (this CA serves no name tables) no mesh names: an answer, REFUSED, not a timeout.
    const code = await resolver.resolve4("anything.example").then(() => "answered", (e: NodeJS.ErrnoException) => e.code);
    expect(code).to.equal("EREFUSED");
    p.kill("SIGTERM");
    expect(await p.code).to.equal(0);
  });

  it("run starts envoy; SIGTERM drains it and the agent exits 0", async () => {
    const envoy = writeEnvoyStandIn(dir);
    const p = cli(["run", "--config", configFile, "--envoy-bin", envoy.binary]);
    const started = await until("the envoy stand-in to start", () => envoy.events().find((e) => e.args), 30_000);
    expect(started.args!.slice(0, 2)).to.deep.equal(["-c", path.join(dir, "out", "envoy-bootstrap.json")]);
    p.kill("SIGTERM");
    expect(await p.code).to.equal(0);
    expect(envoy.events().some((e) => e.pid === started.pid && e.signal === "SIGTERM")).to.equal(true);
    expect(isAlive(started.pid)).to.equal(false);
  });
});
