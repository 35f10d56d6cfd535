// Harness for the Consul end-to-end suite: a real control plane (in-process, loopback, port 0) whose Consul is the
// simulator (or a real agent), with the real resource cache, plus echo servers that share one port on several
// loopback addresses, the way a Consul service's instances share a port on several hosts.
import { mkdtemp, rm, unlink, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type { ConsulSourceOptions } from "@vmpilot/registry/consul/index";
import { ResourceCache } from "@vmpilot/xds/cache";
import { decodeToJson } from "@vmpilot/xds/protojson";
import { typeNameOfUrl } from "@vmpilot/xds/protos";
import { resolveServerConfig, type ServerConfig } from "@vmpilot/xds/server/config";
import { ControlPlane } from "@vmpilot/xds/server/control-plane";
import * as grpc from "@grpc/grpc-js";
import { EchoServer } from "./echo.js";
import { type SynczProxy } from "./e2e.js";
import { RawAdsClient, testNode } from "./raw-ads-client.js";

/**
 * Consul timings for tests: short blocking waits and backoff, so an outage and a recovery show within a second or two
 * instead of after production's 5-minute waits and 30-second backoff cap.
 */
export const FAST_CONSUL: Partial<ConsulSourceOptions> = {
  wait: 2000,
  minInterval: 20,
  jitter: 0.5,
  backoff: { initial: 50, max: 300 },
  requestTimeout: 3000,
};

export class ConsulControlPlane {
  cp!: ControlPlane;
  readonly cache = new ResourceCache();

  private constructor(
    readonly dir: string,
    readonly config: ServerConfig,
  ) {}

  /**
   * A control plane on 127.0.0.1 (OS-chosen ports) watching a fresh temp dir and reading Consul at `consulAddress`.
   * `consul` is the server config's `consul:` section as YAML would give it (parsed by the real config code); the
   * test timings are laid over the parsed options.
   */
  static async start(consulAddress: string, files: Record<string, string> = {}, consul: Record<string, unknown> = {}): Promise<ConsulControlPlane> {
    const dir = await mkdtemp(path.join(os.tmpdir(), "vmpilot-consul-e2e-"));
    for (const [name, content] of Object.entries(files)) await writeFile(path.join(dir, name), content);
    const parsed = resolveServerConfig({ configDirs: [dir], xdsAddr: "127.0.0.1:0", httpAddr: "127.0.0.1:0", consul: { address: consulAddress, ...consul } }, dir, {});
    const config: ServerConfig = { ...parsed, consul: { ...parsed.consul!, ...FAST_CONSUL } };
    const t = new ConsulControlPlane(dir, config);
    t.cp = new ControlPlane({ config, createCache: () => t.cache });
    await t.cp.start();
    return t;
  }

  get xdsAddress(): string {
    return this.cp.addresses.xds!;
  }

  async write(name: string, content: string): Promise<void> {
    await writeFile(path.join(this.dir, name), content);
  }

  async remove(name: string): Promise<void> {
    await unlink(path.join(this.dir, name));
  }

  async get(pathname: string): Promise<{ status: number; body: string }> {
    const res = await fetch(`http://${this.cp.addresses.http}${pathname}`);
    return { status: res.status, body: await res.text() };
  }

  async json<T>(pathname: string): Promise<T> {
    const r = await this.get(pathname);
    if (r.status !== 200) throw new Error(`GET ${pathname}: ${r.status} ${r.body}`);
    return JSON.parse(r.body) as T;
  }

  /** Every NACK any connected proxy sent (empty = none). */
  async nacks(): Promise<string[]> {
    const out: string[] = [];
    for (const p of await this.json<SynczProxy[]>("/debug/syncz")) {
      for (const [type, t] of Object.entries(p.types)) if (t.lastNack) out.push(`${p.proxyId} ${type}: ${t.lastNack.message}`);
    }
    return out;
  }

  /** The value of one Prometheus sample (`name{labels}`), or undefined when absent. */
  async metric(sample: string): Promise<number | undefined> {
    const text = (await this.get("/metrics")).body;
    for (const line of text.split("\n")) {
      if (line.startsWith(`${sample} `)) return Number(line.slice(sample.length + 1));
    }
    return undefined;
  }

  async stop(): Promise<void> {
    await this.cp.stop(1000);
    await rm(this.dir, { recursive: true, force: true });
  }
}

// ---- the registry views the suite reads ----

export interface RegistryzEndpoint {
  address: string;
  ports: Record<string, number>;
  labels: Record<string, string>;
  health: string;
  locality?: string;
  origin: string;
}

export interface RegistryzService {
  key: string;
  hostname: string;
  ports: { number: number; name: string; protocol: string }[];
  subjectAltNames: string[];
  decoratedBy?: string;
  origin: string;
  endpoints: RegistryzEndpoint[];
}

export async function registryService(cp: ConsulControlPlane, hostname: string): Promise<RegistryzService | undefined> {
  const z = await cp.json<{ services: RegistryzService[] }>("/debug/registryz");
  return z.services.find((s) => s.hostname === hostname);
}

// ---- echo servers sharing one port ----

function bind(server: EchoServer, host: string, port: number): Promise<number> {
  return new Promise<number>((resolve, reject) =>
    server.server.bindAsync(`${host}:${port}`, grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
}

/**
 * Echo servers named after their hosts, all on one port (chosen by the OS for the first host). A port free on the first
 * address is almost always free on the others too; when it is not, the whole set is retried on a new port.
 */
export async function echoServersOnOnePort(hosts: string[], name = (host: string) => host): Promise<EchoServer[]> {
  for (let attempt = 0; ; attempt++) {
    const servers: EchoServer[] = [];
    try {
      let port = 0;
      for (const host of hosts) {
        const s = new EchoServer({ name: name(host), host });
        servers.push(s);
        s.port = await bind(s, host, port);
        port = s.port;
      }
      return servers;
    } catch (err) {
      for (const s of servers) s.stop();
      if (attempt >= 5) throw err;
    }
  }
}

// ---- what the xDS server sends, read as a proxy reads it ----

/**
 * One SotW request for `typeUrl` and `names` from a fresh stream with node `nodeId` (a gRPC client unless the metadata
 * says otherwise); the response's resources decoded to proto JSON.
 */
export async function fetchXds(
  xdsAddress: string,
  nodeId: string,
  typeUrl: string,
  names: string[],
  metadata: Record<string, unknown> = {},
): Promise<Record<string, unknown>[]> {
  const c = new RawAdsClient(xdsAddress, "sotw");
  try {
    c.send({ node: testNode(nodeId, metadata), type_url: typeUrl, resource_names: names });
    const r = await c.next(10_000);
    return r.resources.map((res) => decodeToJson(typeNameOfUrl(res.type_url), res.value) as Record<string, unknown>);
  } finally {
    c.close();
  }
}
