// The server's own configuration: a YAML file (documented in config/vmpilot.yaml), overridden by flags.
// Read again on SIGHUP. Unknown keys are errors, like in mesh config: they are usually typos.
import { readFile } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import YAML from "yaml";
import { DEFAULT_MESH, type MeshConfig } from "@vmpilot/registry";
import type { ConsulSourceOptions } from "@vmpilot/registry/consul/index";
import { parseDuration } from "@vmpilot/registry/duration";

export const DEFAULT_XDS_ADDR = "127.0.0.1:15010";
export const DEFAULT_SECURE_ADDR = "0.0.0.0:15012";
export const DEFAULT_HTTP_ADDR = "127.0.0.1:15014";

export interface ServerConfig {
  /** Watched GitOps directories (absolute). */
  configDirs: string[];
  mesh: MeshConfig;
  /** Plaintext xDS; loopback only unless `insecure`. */
  xdsAddr: string;
  /** mTLS xDS + CA. Served only when `stateDir` is set (that is where the CA keys live). */
  secureAddr: string;
  httpAddr: string;
  stateDir?: string;
  insecure: boolean;
  consul?: ServerConsulConfig;
  /** Push debounce: quiet period and cap, ms. */
  debounce: { quietMs: number; maxMs: number };
  /** Close client connections after about this long (GOAWAY, then 10 s grace), so proxies spread over new replicas. 0 = never. */
  maxConnectionAgeMs: number;
  /**
   * WorkloadGroup auto-registration: how long an entry outlives its workload's last xDS stream (Istio's
   * PILOT_WORKLOAD_ENTRY_GRACE_PERIOD), and, when Consul is configured, how entries are shared through it.
   */
  autoRegistration: { cleanupGracePeriodMs: number; consul?: AutoRegistrationConsulConfig };
}

/** What flags can set; undefined = not given (the file or the default applies). */
export interface ServerFlags {
  config?: string;
  configDir?: string[];
  consulAddr?: string;
  xdsAddr?: string;
  secureAddr?: string;
  httpAddr?: string;
  stateDir?: string;
  insecure?: boolean;
}

/** `autoRegistration.consul`: registering this replica's workloads in Consul so every replica serves them. */
export interface AutoRegistrationConsulConfig {
  /** Default true (whenever `consul:` is configured); false keeps entries in this replica only. */
  register?: boolean;
  /** TTL of the registrations' checks, renewed every third of it. Default 30 s. */
  ttlMs?: number;
  /** Prepended to `NAMESPACE--GROUP` to make the Consul service name (default `vmpilot-`; its ACL policy is the trust boundary). */
  servicePrefix?: string;
  /**
   * How long after its TTL expired Consul removes a dead or cut-off replica's registration
   * (DeregisterCriticalServiceAfter; Consul floors it at 1 m and reaps every 30 s). Default 10 m.
   */
  deregisterAfterMs?: number;
  /** This replica's name in Consul (default: host name plus a random suffix). Must differ between replicas. */
  replica?: string;
}

/** The `consul:` section: the source's options plus how the server treats the source. */
export interface ServerConsulConfig extends ConsulSourceOptions {
  /**
   * Whether /ready waits for the first full Consul sync (default true, as istiod waits for its registries): a replica
   * that cannot read Consul would hand reconnecting proxies a config without the Consul services, and those proxies
   * would drop them. False makes a replica ready on its files alone (/ready still names the unsynced source).
   */
  waitForSync?: boolean;
}

export class ServerConfigError extends Error {}

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function checkKeys(o: Obj, allowed: readonly string[], where: string): void {
  for (const k of Object.keys(o)) if (!allowed.includes(k)) throw new ServerConfigError(`${where}: unknown key "${k}" (known: ${allowed.join(", ")})`);
}

function str(o: Obj, k: string, where: string): string | undefined {
  const v = o[k];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string" || v === "") throw new ServerConfigError(`${where}.${k}: expected a non-empty string`);
  return v;
}

function bool(o: Obj, k: string, where: string): boolean | undefined {
  const v = o[k];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "boolean") throw new ServerConfigError(`${where}.${k}: expected true or false`);
  return v;
}

function duration(o: Obj, k: string, where: string): number | undefined {
  const v = o[k];
  if (v === undefined || v === null) return undefined;
  const ms = typeof v === "string" ? parseDuration(v) : undefined;
  if (ms === undefined) throw new ServerConfigError(`${where}.${k}: expected a duration like "100ms" or "5m"`);
  return ms;
}

/** `HOST:PORT` (IPv6 as `[::1]:PORT`) -> parts; throws with the flag/key name on anything else. */
export function parseHostPort(addr: string, what: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(addr);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new ServerConfigError(`${what}: "${addr}" is not HOST:PORT`);
  return { host: (m[1] ?? m[2])!, port };
}

export function isLoopbackHost(host: string): boolean {
  if (host === "localhost") return true;
  if (net.isIPv4(host)) return host.startsWith("127.");
  if (net.isIPv6(host)) return host === "::1";
  return false;
}

function parseMesh(v: unknown, where: string): Partial<MeshConfig> {
  if (v === undefined || v === null) return {};
  if (!isObj(v)) throw new ServerConfigError(`${where}: expected a mapping`);
  checkKeys(v, ["trustDomain", "outboundTrafficPolicy", "consulDomain"], where);
  const mesh: Partial<MeshConfig> = {};
  const td = str(v, "trustDomain", where);
  if (td) mesh.trustDomain = td;
  const cd = str(v, "consulDomain", where);
  if (cd) mesh.consulDomain = cd;
  const otp = v.outboundTrafficPolicy;
  if (otp !== undefined) {
    const mode = isObj(otp) ? otp.mode : otp; // Istio spells it `outboundTrafficPolicy: {mode: ...}`
    if (mode !== "ALLOW_ANY" && mode !== "REGISTRY_ONLY") throw new ServerConfigError(`${where}.outboundTrafficPolicy: expected ALLOW_ANY or REGISTRY_ONLY`);
    mesh.outboundTrafficPolicy = mode;
  }
  return mesh;
}

function parseConsul(v: unknown, where: string, base: string): ServerConsulConfig | undefined {
  if (v === undefined || v === null || v === false) return undefined;
  if (!isObj(v)) throw new ServerConfigError(`${where}: expected a mapping`);
  checkKeys(v, ["address", "datacenter", "tokenFile", "tls", "stale", "wait", "namespace", "domain", "waitForSync"], where);
  const address = str(v, "address", where);
  if (!address) throw new ServerConfigError(`${where}.address: required (e.g. http://127.0.0.1:8500)`);
  const o: ServerConsulConfig = { address };
  const waitForSync = bool(v, "waitForSync", where);
  if (waitForSync !== undefined) o.waitForSync = waitForSync;
  const dc = str(v, "datacenter", where);
  if (dc) o.datacenter = dc;
  const tf = str(v, "tokenFile", where);
  if (tf) o.tokenFile = path.resolve(base, tf);
  const stale = bool(v, "stale", where);
  if (stale !== undefined) o.stale = stale;
  const wait = duration(v, "wait", where);
  if (wait !== undefined) o.wait = wait;
  const ns = str(v, "namespace", where);
  if (ns) o.namespace = ns;
  const domain = str(v, "domain", where);
  if (domain) o.domain = domain;
  if (v.tls !== undefined) {
    const t = v.tls;
    if (!isObj(t)) throw new ServerConfigError(`${where}.tls: expected a mapping`);
    checkKeys(t, ["caFile", "certFile", "keyFile", "serverName"], `${where}.tls`);
    o.tls = {};
    for (const k of ["caFile", "certFile", "keyFile"] as const) {
      const f = str(t, k, `${where}.tls`);
      if (f) o.tls[k] = path.resolve(base, f);
    }
    const sn = str(t, "serverName", `${where}.tls`);
    if (sn) o.tls.serverName = sn;
  }
  return o;
}

const TOP_KEYS = ["configDirs", "mesh", "xdsAddr", "secureAddr", "httpAddr", "stateDir", "insecure", "consul", "debounce", "maxConnectionAge", "autoRegistration"] as const;

/** Istio's PILOT_WORKLOAD_ENTRY_GRACE_PERIOD default: a proxy restart or a move to another replica keeps the entry. */
export const DEFAULT_AUTO_REGISTRATION_GRACE_MS = 10_000;

function parseAutoRegistration(v: unknown, where: string): ServerConfig["autoRegistration"] {
  if (v === undefined || v === null) return { cleanupGracePeriodMs: DEFAULT_AUTO_REGISTRATION_GRACE_MS };
  if (!isObj(v)) throw new ServerConfigError(`${where}: expected a mapping`);
  checkKeys(v, ["cleanupGracePeriod", "consul"], where);
  const out: ServerConfig["autoRegistration"] = { cleanupGracePeriodMs: duration(v, "cleanupGracePeriod", where) ?? DEFAULT_AUTO_REGISTRATION_GRACE_MS };
  const c = v.consul;
  if (c !== undefined && c !== null) {
    const w = `${where}.consul`;
    if (!isObj(c)) throw new ServerConfigError(`${w}: expected a mapping`);
    checkKeys(c, ["register", "ttl", "deregisterAfter", "servicePrefix", "replica"], w);
    const consul: AutoRegistrationConsulConfig = {};
    const register = bool(c, "register", w);
    if (register !== undefined) consul.register = register;
    const ttl = duration(c, "ttl", w);
    if (ttl !== undefined) {
      // Consul's TTL timer is in its own units; under a second renewals would race their own expiry.
      if (ttl < 1000) throw new ServerConfigError(`${w}.ttl: at least 1s`);
      consul.ttlMs = ttl;
    }
    const deregisterAfter = duration(c, "deregisterAfter", w);
    if (deregisterAfter !== undefined) {
      if (deregisterAfter <= 0) throw new ServerConfigError(`${w}.deregisterAfter: must be positive`);
      consul.deregisterAfterMs = deregisterAfter;
    }
    const prefix = c.servicePrefix;
    if (prefix !== undefined && prefix !== null) {
      if (typeof prefix !== "string" || !/^[a-z0-9-]*$/.test(prefix)) throw new ServerConfigError(`${w}.servicePrefix: expected lower-case letters, digits and '-'`);
      consul.servicePrefix = prefix;
    }
    const replica = str(c, "replica", w);
    if (replica) consul.replica = replica;
    out.consul = consul;
  }
  return out;
}

/**
 * The config file's content (relative paths resolve against the file's directory), then the flags on top
 * (relative paths resolve against the working directory), then the defaults.
 */
export function resolveServerConfig(fileContent: unknown, fileDir: string, flags: ServerFlags, cwd = process.cwd()): ServerConfig {
  const where = flags.config ?? "config";
  const f: Obj = fileContent === undefined || fileContent === null ? {} : (fileContent as Obj);
  if (!isObj(f)) throw new ServerConfigError(`${where}: expected a mapping at the top level`);
  checkKeys(f, TOP_KEYS, where);

  let configDirs: string[];
  if (flags.configDir && flags.configDir.length > 0) configDirs = flags.configDir.map((d) => path.resolve(cwd, d));
  else {
    const dirs = f.configDirs ?? [];
    if (!Array.isArray(dirs) || !dirs.every((d) => typeof d === "string" && d !== "")) throw new ServerConfigError(`${where}.configDirs: expected a list of directories`);
    configDirs = (dirs as string[]).map((d) => path.resolve(fileDir, d));
  }

  let consul = parseConsul(f.consul, `${where}.consul`, fileDir);
  if (flags.consulAddr) consul = { ...(consul ?? {}), address: flags.consulAddr };

  const debounceObj = f.debounce ?? {};
  if (!isObj(debounceObj)) throw new ServerConfigError(`${where}.debounce: expected a mapping`);
  checkKeys(debounceObj, ["quiet", "max"], `${where}.debounce`);
  const debounce = { quietMs: duration(debounceObj, "quiet", `${where}.debounce`) ?? 100, maxMs: duration(debounceObj, "max", `${where}.debounce`) ?? 1000 };
  if (debounce.maxMs < debounce.quietMs) throw new ServerConfigError(`${where}.debounce: max must be at least quiet`);

  const stateDirFile = str(f, "stateDir", where);
  const stateDir = flags.stateDir ? path.resolve(cwd, flags.stateDir) : stateDirFile ? path.resolve(fileDir, stateDirFile) : process.env.VMPILOT_STATE_DIR || undefined;

  const cfg: ServerConfig = {
    configDirs,
    mesh: { ...DEFAULT_MESH, ...parseMesh(f.mesh, `${where}.mesh`) },
    xdsAddr: flags.xdsAddr ?? str(f, "xdsAddr", where) ?? DEFAULT_XDS_ADDR,
    secureAddr: flags.secureAddr ?? str(f, "secureAddr", where) ?? DEFAULT_SECURE_ADDR,
    httpAddr: flags.httpAddr ?? str(f, "httpAddr", where) ?? DEFAULT_HTTP_ADDR,
    insecure: flags.insecure ?? bool(f, "insecure", where) ?? false,
    debounce,
    maxConnectionAgeMs: duration(f, "maxConnectionAge", where) ?? 0,
    autoRegistration: parseAutoRegistration(f.autoRegistration, `${where}.autoRegistration`),
  };
  if (stateDir) cfg.stateDir = stateDir;
  if (consul) cfg.consul = consul;
  if (cfg.configDirs.length === 0 && !cfg.consul) throw new ServerConfigError(`${where}: nothing to serve: give configDirs (or --config-dir) and/or consul (or --consul-addr)`);
  const xds = parseHostPort(cfg.xdsAddr, "xdsAddr");
  parseHostPort(cfg.secureAddr, "secureAddr");
  parseHostPort(cfg.httpAddr, "httpAddr");
  if (!isLoopbackHost(xds.host) && !cfg.insecure) {
    throw new ServerConfigError(`xdsAddr ${cfg.xdsAddr} is not a loopback address: plaintext xDS hands out the mesh config to anyone who connects; use the secure port, or pass --insecure if this network is trusted`);
  }
  return cfg;
}

/** Reads the config file (if any) and applies the flags. */
export async function loadServerConfig(flags: ServerFlags): Promise<ServerConfig> {
  if (!flags.config) return resolveServerConfig(undefined, process.cwd(), flags);
  let text: string;
  try {
    text = await readFile(flags.config, "utf8");
  } catch (err) {
    throw new ServerConfigError(`cannot read ${flags.config}: ${(err as Error).message}`);
  }
  let doc: unknown;
  try {
    doc = YAML.parse(text);
  } catch (err) {
    throw new ServerConfigError(`${flags.config}: ${(err as Error).message}`);
  }
  return resolveServerConfig(doc, path.dirname(path.resolve(flags.config)), flags);
}
