// Pure: auto-registered workloads <-> Consul agent service registrations (see ../auto-registration.ts for why the
// catalog, and README.md "Auto-registered workloads" for the operator's view).
//
// One Consul service instance per (replica, workload):
// - ID `vmpilot~REPLICA~NAMESPACE~ENTRY`: unique even when several replicas share one Consul agent (a common small
//   setup, and every test); Name: `PREFIX` + namespace + `--` + WorkloadGroup name (default prefix `vmpilot-`), the
//   logical service a Consul operator expects to find the VMs under; Address: the entry's address; Port: the
//   template's first port.
// - Trust: anyone who may write a Consul service could attach the meta marker, so a record read back is taken
//   only when its service name, ID, entry name and address are exactly what vmpilot itself writes for that
//   (replica, namespace, group, address). The name then carries the namespace and the group, so the Consul ACL
//   policy on the prefix is the trust boundary: who may write `vmpilot-shop--*` may add endpoints to
//   WorkloadGroups of namespace shop, and nothing else. `--` cannot occur in a namespace vmpilot publishes
//   (publishableNamespace), so `service_prefix "vmpilot-shop--"` covers exactly namespace shop.
// - Tags: `vmpilot-auto-registered`, then the workload's own labels as `key=value` (the form the ConsulSource and
//   Consul-native tooling read). Only the node's labels: the group's come from the group on every replica.
// - Meta (keys [A-Za-z0-9_-], values up to 512 characters, Consul's limits): the marker `vmpilot-auto-registered`
//   (format version), `vmpilot-replica`, `vmpilot-incarnation`, `vmpilot-namespace`, `vmpilot-group`, `vmpilot-entry`, `vmpilot-proxy`,
//   `vmpilot-locality`, `vmpilot-ports` (for people) and `service-account` (the ConsulSource's key).
// - Two TTL checks, because they are two facts and Consul's aggregate of them is what Consul-native clients want:
//   `ID:replica` "held by a live replica": passing while a stream to the replica is open, warning during the
//   grace period, critical only when the TTL expires (the replica died or lost Consul); it carries
//   DeregisterCriticalServiceAfter = `autoRegistration.consul.deregisterAfter` (default 10 m), so Consul itself
//   removes a dead replica's registrations: the one place where an unreachable replica's workloads eventually
//   go. Deliberately not the cleanup grace period (seconds): a replica merely cut off from Consul for longer
//   would have its live workloads removed by every other replica, and a Consul outage must never remove
//   endpoints; UNHEALTHY endpoints meanwhile cost nothing (sent, not routed to).
//   `ID:health` "workload health": passing (reported healthy, or no probe and no report), critical (reported
//   unhealthy), warning (probed group, no report yet: nobody vouched). No deregistration on it: a workload that
//   is unhealthy for long must stay registered (UNHEALTHY), not be reaped and re-registered in a loop. Its TTL
//   is HEALTH_TTL_FACTOR times the liveness TTL (Consul requires one on a pushed check): the liveness check
//   already says when the replica is gone, so the health check is renewed ten times less often, which halves
//   the renewal traffic.
import net from "node:net";
import { autoRegisteredName, type PublishedWorkload, type RemoteWorkload } from "../auto-registration.js";
import type { AgentServiceRegistration } from "./client.js";
import { consulDuration } from "./config.js";
import type { ConsulHealthEntry } from "./convert.js";

export const AUTO_REGISTERED_TAG = "vmpilot-auto-registered";
/** Meta marker; its value is the registration format version. */
export const AUTO_REGISTERED_META = "vmpilot-auto-registered";
export const FORMAT_VERSION = "1";

export const META = {
  replica: "vmpilot-replica",
  incarnation: "vmpilot-incarnation",
  namespace: "vmpilot-namespace",
  group: "vmpilot-group",
  entry: "vmpilot-entry",
  proxy: "vmpilot-proxy",
  locality: "vmpilot-locality",
  ports: "vmpilot-ports",
  serviceAccount: "service-account",
} as const;

const META_VALUE_MAX = 512;

/** Node checks whose failure means the node's agent (and every registration on it) is gone or out of service. */
const NODE_GONE_CHECKS: ReadonlySet<string> = new Set(["serfHealth", "_node_maintenance"]);

/** The health check's TTL, as a multiple of the liveness check's (see the header). */
export const HEALTH_TTL_FACTOR = 10;

export type CheckStatus = "passing" | "warning" | "critical";

export interface CheckState {
  status: CheckStatus;
  output: string;
}

export interface WorkloadRegistrationOptions {
  replica: string;
  /** Random per process start: tells this process's registrations from a predecessor's with the same name. */
  incarnation?: string;
  /** Prepended to `NAMESPACE--GROUP` to make the Consul service name (ACL policies can then use one service_prefix). */
  servicePrefix: string;
  ttlMs: number;
  /** The auto-registration cleanup grace period: when this replica deregisters a workload it lost (check output). */
  gracePeriodMs: number;
  /**
   * DeregisterCriticalServiceAfter of the liveness check: how long after its TTL expired Consul removes a dead
   * or cut-off replica's registration (Consul floors it at 1 m and reaps every 30 s).
   */
  deregisterAfterMs: number;
}

export function serviceIdOf(replica: string, namespace: string, entry: string): string {
  return `vmpilot~${replica}~${namespace}~${entry}`;
}

export const livenessCheckId = (serviceId: string): string => `${serviceId}:replica`;
export const healthCheckId = (serviceId: string): string => `${serviceId}:health`;

/**
 * The Consul service name of a group's registrations, one Consul DNS can serve: lower case, [a-z0-9-] (group
 * names may hold dots). Unambiguous as to the namespace when publishableNamespace(namespace) holds.
 */
export function consulServiceName(prefix: string, namespace: string, group: string): string {
  return `${prefix}${namespace}--${group}`.toLowerCase().replace(/[^a-z0-9-]/g, "-");
}

/**
 * A namespace whose registrations no other namespace's can be mistaken for: a DNS label without `--` (the
 * separator in the service name). Workloads of other namespaces are served locally but not published.
 */
export function publishableNamespace(namespace: string): boolean {
  return /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/.test(namespace) && !namespace.includes("--") && namespace.length <= 63;
}

/** A replica name safe in service IDs, URL paths and meta values. */
export function sanitizeReplicaName(name: string): string {
  return name.replace(/[^A-Za-z0-9_.-]/g, "-").slice(0, 128) || "replica";
}

export function livenessOf(p: PublishedWorkload, o: Pick<WorkloadRegistrationOptions, "replica" | "gracePeriodMs">): CheckState {
  if (p.connected) return { status: "passing", output: `xDS stream open to vmpilot replica ${o.replica}` };
  const since = new Date(p.disconnectedAt ?? Date.now());
  const until = new Date(since.getTime() + o.gracePeriodMs);
  return {
    status: "warning",
    output: `no xDS stream to vmpilot replica ${o.replica} since ${since.toISOString()}; deregistered at ${until.toISOString()} unless it reconnects`,
  };
}

export function healthCheckOf(p: PublishedWorkload): CheckState {
  if (p.health) {
    return p.health.healthy
      ? { status: "passing", output: "healthy (agent probe report)" }
      : { status: "critical", output: p.health.message ? `unhealthy: ${p.health.message}` : "unhealthy (agent probe report)" };
  }
  if (p.probed) return { status: "warning", output: "WorkloadGroup has a probe; no health report yet" };
  return { status: "passing", output: "WorkloadGroup has no probe; healthy unless its agent reports otherwise" };
}

function metaValue(v: string): string {
  return v.length <= META_VALUE_MAX ? v : v.slice(0, META_VALUE_MAX);
}

function localityString(l: PublishedWorkload["locality"]): string | undefined {
  if (!l?.region) return undefined;
  return [l.region, l.zone ?? "", l.sub_zone ?? ""].join("/").replace(/\/+$/, "");
}

/** The agent registration of one local workload, with both checks at their current status. */
export function registrationOf(p: PublishedWorkload, o: WorkloadRegistrationOptions): AgentServiceRegistration {
  const id = serviceIdOf(o.replica, p.namespace, p.name);
  const meta: Record<string, string> = {
    [AUTO_REGISTERED_META]: FORMAT_VERSION,
    [META.replica]: o.replica,
    ...(o.incarnation ? { [META.incarnation]: o.incarnation } : {}),
    [META.namespace]: p.namespace,
    [META.group]: p.group,
    [META.entry]: p.name,
    [META.proxy]: metaValue(p.proxyId),
  };
  const locality = localityString(p.locality);
  if (locality) meta[META.locality] = metaValue(locality);
  if (p.serviceAccount) meta[META.serviceAccount] = metaValue(p.serviceAccount);
  const ports = Object.entries(p.ports);
  if (ports.length > 0) meta[META.ports] = metaValue(ports.map(([n, v]) => `${n}=${v}`).join(","));
  const tags = [AUTO_REGISTERED_TAG, ...Object.keys(p.labels).sort().map((k) => `${k}=${p.labels[k]}`)];
  const live = livenessOf(p, o);
  const health = healthCheckOf(p);
  const ttl = consulDuration(o.ttlMs);
  const healthTtl = consulDuration(o.ttlMs * HEALTH_TTL_FACTOR);
  return {
    ID: id,
    Name: consulServiceName(o.servicePrefix, p.namespace, p.group),
    Address: p.address,
    Port: ports[0]?.[1] ?? 0,
    Tags: tags,
    Meta: meta,
    Checks: [
      {
        CheckID: livenessCheckId(id),
        Name: "vmpilot replica holds this workload",
        Notes: `TTL renewed by vmpilot replica ${o.replica} while it holds the workload; Consul deregisters the instance when it stays critical (the replica died or lost Consul)`,
        TTL: ttl,
        Status: live.status,
        DeregisterCriticalServiceAfter: consulDuration(o.deregisterAfterMs),
      },
      { CheckID: healthCheckId(id), Name: "workload health (agent probe)", TTL: healthTtl, Status: health.status },
    ],
  };
}

/** What decides whether a registration must be re-sent (everything but the check statuses). */
export function registrationFingerprint(r: AgentServiceRegistration): string {
  return JSON.stringify({ ...r, Checks: r.Checks.map(({ Status: _s, ...c }) => c) });
}

/** An instance vmpilot registered for an auto-registered workload (of any replica). */
export function isAutoRegisteredInstance(e: Pick<ConsulHealthEntry, "Service">): boolean {
  return e.Service.Meta?.[AUTO_REGISTERED_META] !== undefined;
}

/**
 * One vmpilot instance read back from `/v1/health/service/NAME`; a string saying why when it cannot be used
 * (another format version, missing fields, or not what vmpilot writes under `servicePrefix`: see the header).
 */
export function remoteWorkloadOf(e: ConsulHealthEntry, servicePrefix: string): RemoteWorkload | string {
  const s = e.Service;
  const meta = s.Meta ?? {};
  const version = meta[AUTO_REGISTERED_META];
  if (version !== FORMAT_VERSION) return `instance ${s.ID}: auto-registration format "${version}" is not one this replica reads (${FORMAT_VERSION}); ignored`;
  const replica = meta[META.replica];
  const namespace = meta[META.namespace];
  const group = meta[META.group];
  const name = meta[META.entry];
  // Never the node's address: a registration names its workload's own address, or it is not one of ours.
  const address = s.Address;
  if (!replica || !namespace || !group || !name || !address) return `instance ${s.ID}: auto-registration meta incomplete (replica, namespace, group, entry, service address); ignored`;
  const expectedName = consulServiceName(servicePrefix, namespace, group);
  const expectedId = serviceIdOf(replica, namespace, name);
  if (
    net.isIP(address) === 0 ||
    replica !== sanitizeReplicaName(replica) ||
    !publishableNamespace(namespace) ||
    name !== autoRegisteredName(group, address) ||
    s.Service !== expectedName ||
    s.ID !== expectedId
  ) {
    return `instance ${s.ID} of Consul service ${s.Service}: not a registration vmpilot writes for ${namespace}/${group} at ${address} (expected service ${expectedName}, ID ${expectedId}, entry ${autoRegisteredName(group, address)}); ignored`;
  }
  const checks = e.Checks ?? [];
  const live = checks.find((c) => c.CheckID === livenessCheckId(s.ID));
  const health = checks.find((c) => c.CheckID === healthCheckId(s.ID));
  // The agent holding the registration is gone (serfHealth) or its node is in maintenance: nobody renews it
  // either. Other node checks (disk space, an operator's script) say nothing about the replica's liveness.
  const nodeDown = checks.some((c) => !c.ServiceID && NODE_GONE_CHECKS.has(c.CheckID) && c.Status === "critical");
  const state: RemoteWorkload["state"] = !live || nodeDown || live.Status === "critical" ? "gone" : live.Status === "warning" ? "lingering" : "connected";
  const labels: Record<string, string> = {};
  for (const t of s.Tags ?? []) {
    const i = t.indexOf("=");
    if (i > 0) labels[t.slice(0, i)] = t.slice(i + 1);
  }
  const r: RemoteWorkload = {
    replica,
    registration: `${e.Node.Node}/${s.ID}`,
    namespace,
    group,
    name,
    address,
    proxyId: meta[META.proxy] ?? s.ID,
    labels,
    state,
    healthIndex: (health as { ModifyIndex?: number } | undefined)?.ModifyIndex ?? 0,
  };
  if (meta[META.incarnation]) r.incarnation = meta[META.incarnation];
  if (meta[META.serviceAccount]) r.serviceAccount = meta[META.serviceAccount];
  const loc = meta[META.locality];
  if (loc) {
    const [region, zone, sub_zone] = loc.split("/");
    r.locality = { region, ...(zone ? { zone } : {}), ...(sub_zone ? { sub_zone } : {}) };
  }
  if (health?.Status === "passing") r.health = { healthy: true };
  else if (health?.Status === "critical") r.health = { healthy: false, message: (health as { Output?: string }).Output?.replace(/^unhealthy: /, "") || undefined };
  if (r.health && r.health.message === undefined) delete r.health.message;
  return r;
}
