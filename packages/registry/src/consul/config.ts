// Settings of the Consul catalog source. Durations are milliseconds; the server config maps its own syntax onto these.

export interface ConsulTlsOptions {
  /** PEM file of the CA that signed the Consul agent's HTTPS certificate (default: the system roots). */
  caFile?: string;
  /** PEM client certificate and key, for agents that verify incoming HTTPS (`verify_incoming`). */
  certFile?: string;
  keyFile?: string;
  /** TLS server name to verify, when the address is an IP the certificate does not name. */
  serverName?: string;
}

export interface ConsulSourceOptions {
  /** Agent HTTP(S) address, e.g. `http://127.0.0.1:8500` or `https://consul.example:8501`. */
  address: string;
  /** Datacenter to read (default: the agent's own). */
  datacenter?: string;
  /** File holding the ACL token; re-read when it changes and after every 403. */
  tokenFile?: string;
  tls?: ConsulTlsOptions;
  /** Allow any server to answer (`?stale`): spreads read load, may lag the leader slightly. */
  stale?: boolean;
  /** Maximum blocking-query wait (Consul caps it at 10 minutes). Default 5 minutes. */
  wait?: number;
  /** Consul DNS domain for hosts `NAME.service.DOMAIN`. Default `consul`. */
  domain?: string;
  /** Mesh namespace Consul services appear in. Default `default`. */
  namespace?: string;
  /** SPIFFE trust domain for endpoints that carry a `service-account` meta. Default `cluster.local`. */
  trustDomain?: string;
  /** Minimum time between two successive queries on one key (Consul's docs ask clients to rate limit). Default 100 ms. */
  minInterval?: number;
  /** Random extra delay on top of `minInterval`, as a fraction of it, so many watchers do not wake in step. Default 0.5. */
  jitter?: number;
  /** Backoff after errors: exponential from `initial` to `max`, with jitter. Defaults 500 ms and 30 s. */
  backoff?: { initial?: number; max?: number };
  /** Time allowed for a query beyond its blocking wait (connect, transfer). Default 10 s. */
  requestTimeout?: number;
  /** How often the token file's metadata is checked for changes. Default 2 s. */
  tokenFilePollInterval?: number;
  /**
   * The service name prefix of auto-registered workloads' registrations (`autoRegistration.consul.servicePrefix`):
   * only instances named exactly as vmpilot names them under it are read back. Default `vmpilot-`.
   */
  workloadServicePrefix?: string;
}

export interface ResolvedConsulOptions {
  address: string;
  datacenter: string | undefined;
  tokenFile: string | undefined;
  tls: ConsulTlsOptions | undefined;
  stale: boolean;
  wait: number;
  domain: string;
  namespace: string;
  trustDomain: string;
  minInterval: number;
  jitter: number;
  backoff: { initial: number; max: number };
  requestTimeout: number;
  tokenFilePollInterval: number;
  workloadServicePrefix: string;
}

/**
 * Default Consul service name prefix of auto-registered workloads' registrations. The Consul ACL policy on it is
 * the trust boundary: a token allowed to write `vmpilot-NS--GROUP` can add endpoints to that WorkloadGroup's entries
 * (consul/README.md "ACL").
 */
export const DEFAULT_WORKLOAD_SERVICE_PREFIX = "vmpilot-";

/** Consul refuses waits above 10 minutes. */
export const MAX_CONSUL_WAIT_MS = 10 * 60_000;

export function resolveConsulOptions(o: ConsulSourceOptions): ResolvedConsulOptions {
  const url = new URL(o.address); // throws on a malformed address: a config error, reported at startup
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new Error(`consul address ${o.address}: scheme must be http or https`);
  }
  const positive = (v: number | undefined, d: number, what: string): number => {
    if (v === undefined) return d;
    if (!Number.isFinite(v) || v < 0) throw new Error(`consul ${what} must be a non-negative number of milliseconds, got ${v}`);
    return v;
  };
  const wait = Math.min(positive(o.wait, 5 * 60_000, "wait"), MAX_CONSUL_WAIT_MS);
  const initial = positive(o.backoff?.initial, 500, "backoff.initial");
  return {
    address: o.address.replace(/\/+$/, ""),
    datacenter: o.datacenter || undefined,
    tokenFile: o.tokenFile || undefined,
    tls: o.tls,
    stale: o.stale ?? false,
    // A zero wait would make every blocking query return at once: a tight loop by configuration.
    wait: Math.max(wait, 1000),
    domain: (o.domain ?? "consul").replace(/^\.+|\.+$/g, ""),
    namespace: o.namespace ?? "default",
    trustDomain: o.trustDomain ?? "cluster.local",
    minInterval: positive(o.minInterval, 100, "minInterval"),
    jitter: positive(o.jitter, 0.5, "jitter"),
    backoff: { initial: Math.max(initial, 10), max: Math.max(positive(o.backoff?.max, 30_000, "backoff.max"), initial) },
    requestTimeout: positive(o.requestTimeout, 10_000, "requestTimeout"),
    tokenFilePollInterval: Math.max(positive(o.tokenFilePollInterval, 2000, "tokenFilePollInterval"), 20),
    workloadServicePrefix: o.workloadServicePrefix ?? DEFAULT_WORKLOAD_SERVICE_PREFIX,
  };
}

/** Milliseconds -> Consul's duration syntax for `?wait=`. */
export function consulDuration(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${Math.round(ms)}ms`;
}
