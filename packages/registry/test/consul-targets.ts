// What the Consul suites run against: the Consul HTTP API simulator, or a real Consul agent when a `consul` binary is
// on PATH or CONSUL_BIN names one. Both are driven through Consul's HTTP API only, so one set of cases serves both.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { webcrypto } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { Agent, request } from "node:https";
import { request as httpRequest } from "node:http";
import { createServer, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as x509 from "@peculiar/x509";
import { ConsulSimulator, type CheckStatus } from "../../../test/consul-simulator.js";

export interface Instance {
  node: string;
  nodeAddress: string;
  nodeMeta?: Record<string, string>;
  id: string;
  name: string;
  address?: string;
  port: number;
  tags?: string[];
  meta?: Record<string, string>;
  weights?: { Passing: number; Warning: number };
  status?: CheckStatus;
}

export interface TestPki {
  dir: string;
  caFile: string;
  serverCertFile: string;
  serverKeyFile: string;
  clientCertFile: string;
  clientKeyFile: string;
  ca: string;
  serverCert: string;
  serverKey: string;
}

export interface TargetOptions {
  /** Enforce ACLs (default deny); this is the management token the driver writes with. */
  aclToken?: string;
  /** Serve HTTPS with these certificates and require client certificates. */
  tls?: TestPki;
}

/** One Consul under test, driven through its HTTP API. */
export interface ConsulTarget {
  readonly kind: "simulator" | "real";
  readonly address: string;
  readonly datacenter: string;
  /** Present for the simulator only: its request log and fault hooks. */
  readonly sim?: ConsulSimulator;
  /** PUT to Consul's HTTP API with the management token. */
  put(path: string, body: unknown): Promise<void>;
  register(i: Instance): Promise<void>;
  setStatus(i: Instance, status: CheckStatus): Promise<void>;
  deregister(i: Instance): Promise<void>;
  /** Makes the agent unreachable (listener closed / process stopped). */
  stop(): Promise<void>;
  start(): Promise<void>;
  /**
   * Applies a change that happens while this agent is unreachable. The simulator applies it to its catalog at once
   * (as the servers would); a real single-server agent cannot take writes while stopped, so it is applied right after
   * the next start(), before anyone could have read the catalog through it... as far as timing allows.
   */
  registerWhileDown(i: Instance): Promise<void>;
  close(): Promise<void>;
}

function registration(i: Instance) {
  return {
    Node: i.node,
    Address: i.nodeAddress,
    NodeMeta: i.nodeMeta ?? {},
    Service: { ID: i.id, Service: i.name, Address: i.address ?? "", Port: i.port, Tags: i.tags ?? [], Meta: i.meta ?? {}, Weights: i.weights },
    Check: { CheckID: `service:${i.id}`, Name: `${i.name} health`, Status: i.status ?? "passing", ServiceID: i.id },
  };
}

abstract class HttpDriven {
  abstract readonly address: string;
  protected abstract writeToken: string | undefined;
  protected abstract tls: TestPki | undefined;

  async put(path: string, body: unknown): Promise<void> {
    const url = new URL(path, this.address);
    const payload = JSON.stringify(body);
    const headers: Record<string, string> = { "Content-Type": "application/json" };
    if (this.writeToken) headers["X-Consul-Token"] = this.writeToken;
    await new Promise<void>((resolve, reject) => {
      const opts = { method: "PUT", headers };
      const done = (res: import("node:http").IncomingMessage) => {
        let text = "";
        res.on("data", (c) => (text += c));
        res.on("end", () => (res.statusCode === 200 ? resolve() : reject(new Error(`PUT ${path}: ${res.statusCode} ${text}`))));
      };
      const req = this.tls
        ? request(url, { ...opts, ca: this.tls.ca, cert: this.tls.serverCert, key: this.tls.serverKey, agent: new Agent({ keepAlive: false }) }, done)
        : httpRequest(url, opts, done);
      req.on("error", reject);
      req.end(payload);
    });
  }

  register(i: Instance): Promise<void> {
    return this.put("/v1/catalog/register", registration(i));
  }

  setStatus(i: Instance, status: CheckStatus): Promise<void> {
    return this.put("/v1/catalog/register", registration({ ...i, status }));
  }

  deregister(i: Instance): Promise<void> {
    return this.put("/v1/catalog/deregister", { Node: i.node, ServiceID: i.id });
  }
}

class SimulatorTarget extends HttpDriven implements ConsulTarget {
  readonly kind = "simulator" as const;
  protected writeToken: string | undefined;
  protected tls: TestPki | undefined;
  constructor(
    readonly sim: ConsulSimulator,
    opts: TargetOptions,
  ) {
    super();
    this.writeToken = opts.aclToken;
    this.tls = opts.tls;
  }
  get address() {
    return this.sim.address;
  }
  get datacenter() {
    return this.sim.datacenter;
  }
  stop() {
    return this.sim.stop();
  }
  start() {
    return this.sim.start();
  }
  async registerWhileDown(i: Instance) {
    this.sim.apply("/v1/catalog/register", registration(i));
  }
  close() {
    return this.sim.close();
  }
}

export async function simulatorTarget(opts: TargetOptions = {}): Promise<ConsulTarget> {
  const sim = await ConsulSimulator.start({
    aclToken: opts.aclToken,
    tls: opts.tls ? { key: opts.tls.serverKey, cert: opts.tls.serverCert, ca: opts.tls.ca, verifyIncoming: true } : undefined,
  });
  return new SimulatorTarget(sim, opts);
}

// ---- real Consul ----

/** The consul binary to run, or undefined (and why) when there is none. */
export function realConsulBinary(): string | undefined {
  const fromEnv = process.env.CONSUL_BIN;
  if (fromEnv) return fromEnv;
  const r = spawnSync("sh", ["-c", "command -v consul"], { encoding: "utf8" });
  const path = r.stdout.trim();
  return r.status === 0 && path ? path : undefined;
}

export const REAL_CONSUL_SKIPPED = "real Consul: skipped (no consul binary on PATH and CONSUL_BIN unset)";

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((resolve) => s.listen(0, "127.0.0.1", resolve));
  const port = (s.address() as AddressInfo).port;
  await new Promise((resolve) => s.close(resolve));
  return port;
}

/**
 * A single-server agent (not `-dev`: its data dir survives a restart, so stop/start behaves like an agent that was
 * unreachable for a while) on loopback with random ports, DNS and gRPC off.
 */
class RealConsulTarget extends HttpDriven implements ConsulTarget {
  readonly kind = "real" as const;
  readonly datacenter = "dc1";
  protected writeToken: string | undefined;
  protected tls: TestPki | undefined;
  private proc: ChildProcess | undefined;
  private log = "";
  private readonly queued: Instance[] = [];
  readonly address: string;

  private constructor(
    private readonly bin: string,
    private readonly dir: string,
    private readonly ports: { http: number; serfLan: number; server: number },
    opts: TargetOptions,
  ) {
    super();
    this.writeToken = opts.aclToken;
    this.tls = opts.tls;
    this.address = `${opts.tls ? "https" : "http"}://127.0.0.1:${ports.http}`;
  }

  static async create(bin: string, opts: TargetOptions): Promise<RealConsulTarget> {
    const dir = await mkdtemp(join(tmpdir(), "vmpilot-consul-"));
    const ports = { http: await freePort(), serfLan: await freePort(), server: await freePort() };
    const hcl: string[] = [];
    if (opts.aclToken) {
      hcl.push(`acl { enabled = true\n default_policy = "deny"\n tokens { initial_management = "${opts.aclToken}"\n agent = "${opts.aclToken}" } }`);
    }
    if (opts.tls) {
      hcl.push(
        `tls { defaults { ca_file = "${opts.tls.caFile}"\n cert_file = "${opts.tls.serverCertFile}"\n key_file = "${opts.tls.serverKeyFile}"\n verify_incoming = true } }`,
        `ports { https = ${ports.http}\n http = -1 }`,
      );
    }
    await writeFile(join(dir, "test.hcl"), hcl.join("\n") + "\n");
    const t = new RealConsulTarget(bin, dir, ports, opts);
    await t.start();
    return t;
  }

  async start(): Promise<void> {
    if (this.proc) return;
    const p = this.ports;
    const args = [
      "agent",
      "-server",
      "-bootstrap-expect=1",
      `-data-dir=${join(this.dir, "data")}`,
      `-config-file=${join(this.dir, "test.hcl")}`,
      "-bind=127.0.0.1",
      "-client=127.0.0.1",
      "-advertise=127.0.0.1",
      "-node=vmpilot-test",
      "-datacenter=dc1",
      `-serf-lan-port=${p.serfLan}`,
      "-serf-wan-port=-1",
      `-server-port=${p.server}`,
      "-dns-port=-1",
      "-grpc-port=-1",
      "-log-level=warn",
    ];
    if (!this.tls) args.push(`-http-port=${p.http}`);
    this.proc = spawn(this.bin, args, { stdio: ["ignore", "pipe", "pipe"] });
    this.proc.stdout!.on("data", (c) => (this.log += c));
    this.proc.stderr!.on("data", (c) => (this.log += c));
    const deadline = Date.now() + 60_000;
    // Ready when a leader is elected and the catalog takes writes.
    for (;;) {
      if (this.proc.exitCode !== null) throw new Error(`consul exited ${this.proc.exitCode}:\n${this.log}`);
      try {
        await this.put("/v1/catalog/register", { Node: "vmpilot-probe", Address: "127.0.0.250" });
        await this.put("/v1/catalog/deregister", { Node: "vmpilot-probe" });
        break;
      } catch (e) {
        if (Date.now() > deadline) throw new Error(`consul did not become ready: ${(e as Error).message}\n${this.log}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    for (const i of this.queued.splice(0)) await this.register(i);
  }

  async stop(): Promise<void> {
    const proc = this.proc;
    if (!proc) return;
    this.proc = undefined;
    const exited = new Promise((resolve) => proc.once("exit", resolve));
    proc.kill("SIGINT"); // graceful leave, as systemd would stop it
    const timer = setTimeout(() => proc.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(timer);
  }

  async registerWhileDown(i: Instance): Promise<void> {
    this.queued.push(i);
  }

  async close(): Promise<void> {
    await this.stop();
    await rm(this.dir, { recursive: true, force: true });
  }
}

export async function realTarget(opts: TargetOptions = {}): Promise<ConsulTarget> {
  const bin = realConsulBinary();
  if (!bin) throw new Error(REAL_CONSUL_SKIPPED);
  return RealConsulTarget.create(bin, opts);
}

// ---- certificates for the TLS cases ----

/** A CA, a server certificate for 127.0.0.1 (and server.dc1.consul) and a client certificate, as PEM files in a temp dir. */
export async function createTestPki(): Promise<TestPki> {
  x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);
  const alg = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };
  const notBefore = new Date(Date.now() - 60_000);
  const notAfter = new Date(Date.now() + 24 * 3600_000);
  const gen = () => webcrypto.subtle.generateKey(alg, true, ["sign", "verify"]) as Promise<webcrypto.CryptoKeyPair>;
  const caKeys = await gen();
  const ca = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: "01",
    name: "CN=vmpilot test Consul CA",
    notBefore,
    notAfter,
    keys: caKeys,
    signingAlgorithm: alg,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
    ],
  });
  const leaf = async (serial: string, cn: string, san: x509.JsonGeneralName[], usages: string[]) => {
    const keys = await gen();
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: serial,
      subject: `CN=${cn}`,
      issuer: ca.subject,
      notBefore,
      notAfter,
      signingKey: caKeys.privateKey,
      publicKey: keys.publicKey,
      signingAlgorithm: alg,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
        new x509.ExtendedKeyUsageExtension(usages),
        ...(san.length ? [new x509.SubjectAlternativeNameExtension(san)] : []),
      ],
    });
    const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey("pkcs8", keys.privateKey)).toString("base64");
    const key = `-----BEGIN PRIVATE KEY-----\n${pkcs8.match(/.{1,64}/g)!.join("\n")}\n-----END PRIVATE KEY-----\n`;
    return { cert: cert.toString("pem") + "\n", key };
  };
  const server = await leaf(
    "02",
    "server.dc1.consul",
    [
      { type: "ip", value: "127.0.0.1" },
      { type: "dns", value: "server.dc1.consul" },
      { type: "dns", value: "localhost" },
    ],
    // As `consul tls cert create -server` makes them: servers are also TLS clients (of each other; here, of the test driver).
    [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth],
  );
  const client = await leaf("03", "vmpilot", [], [x509.ExtendedKeyUsage.clientAuth]);
  const dir = await mkdtemp(join(tmpdir(), "vmpilot-consul-pki-"));
  const files = {
    caFile: join(dir, "ca.pem"),
    serverCertFile: join(dir, "server.pem"),
    serverKeyFile: join(dir, "server-key.pem"),
    clientCertFile: join(dir, "client.pem"),
    clientKeyFile: join(dir, "client-key.pem"),
  };
  const caPem = ca.toString("pem") + "\n";
  await writeFile(files.caFile, caPem);
  await writeFile(files.serverCertFile, server.cert);
  await writeFile(files.serverKeyFile, server.key, { mode: 0o600 });
  await writeFile(files.clientCertFile, client.cert);
  await writeFile(files.clientKeyFile, client.key, { mode: 0o600 });
  return { dir, ...files, ca: caPem, serverCert: server.cert, serverKey: server.key };
}
