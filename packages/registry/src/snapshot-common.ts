// Pieces shared by the two ways of building a snapshot (snapshot.ts: the full rebuild, the reference;
// snapshot-builder.ts: the incremental one): how a service group merges, how a decorating ServiceEntry applies,
// and the fingerprints that decide whether something changed. Keeping one copy of each is what makes the two
// builds agree by construction on everything but the bookkeeping of what to recompute.
import type { AnyConfig, ConfigProblem, Endpoint, MeshConfig, Origin, Service, Severity } from "./model.js";
import { configKey } from "./model.js";
import { servicesOfServiceEntry, type ServiceEntryConfig } from "./services.js";
import { compareOrigins, compareServiceEntryPrecedence, formatOrigin } from "./validate.js";
import { normalizeExportTo } from "./visibility.js";
import { endpointsOfServiceEntry, type WorkloadEntryConfig } from "./workloads.js";

/** Kinds whose edits only touch routing (listeners, routes, cluster policies), reported in `changes.routing`. */
export const ROUTING_KINDS: ReadonlySet<string> = new Set(["VirtualService", "DestinationRule", "Gateway", "Sidecar"]);

// Derivations memoised per ServiceEntry object. Sources hand over the very same object while its file is
// unchanged, so a rebuild after one WorkloadEntry edit re-derives (and re-fingerprints) only what that edit
// touches: unchanged services and endpoint lists keep their identity and their cached fingerprints.
// Everything memoised here ends up frozen in a snapshot, so sharing it across snapshots is safe.
const servicesMemo = new WeakMap<ServiceEntryConfig, Service[]>();
const endpointsMemo = new WeakMap<ServiceEntryConfig, { trustDomain: string; selected: readonly WorkloadEntryConfig[]; endpoints: Endpoint[] }>();

export function memoServices(se: ServiceEntryConfig): Service[] {
  let services = servicesMemo.get(se);
  if (!services) servicesMemo.set(se, (services = servicesOfServiceEntry(se)));
  return services;
}

export function memoEndpoints(se: ServiceEntryConfig, selected: readonly WorkloadEntryConfig[], mesh: MeshConfig): Endpoint[] {
  const hit = endpointsMemo.get(se);
  if (hit && hit.trustDomain === mesh.trustDomain && sameItems(hit.selected, selected)) return hit.endpoints;
  const endpoints = endpointsOfServiceEntry(se, selected, mesh);
  endpointsMemo.set(se, { trustDomain: mesh.trustDomain, selected, endpoints });
  return endpoints;
}

function sameItems<T>(a: readonly T[], b: readonly T[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/**
 * ServiceEntries declaring the same host in the same namespace make one service (Istio merges them): the
 * highest-precedence entry gives resolution, location, addresses, exportTo and SANs, the others add ports it
 * does not have; on a port number both declare, the winner's definition is kept. Host+port conflicts are
 * reported by crossValidate, so they are not reported again here. `group` must be sorted by precedence.
 */
export function mergeServiceGroup(group: readonly { se: ServiceEntryConfig; service: Service }[]): Service {
  const first = group[0]!;
  const rest = group.slice(1);
  if (rest.length === 0) return first.service;
  const ports = [...first.service.ports];
  const taken = new Set(ports.map((p) => p.number));
  for (const { service } of rest) {
    for (const p of service.ports) {
      if (taken.has(p.number)) continue;
      taken.add(p.number);
      ports.push(p);
    }
  }
  return { ...first.service, ports };
}

/** Endpoints of several ServiceEntries for one service; a workload selected by two of them counts once. */
export function mergeEndpoints(lists: readonly Endpoint[][]): Endpoint[] {
  if (lists.length === 1) return lists[0]!;
  const seen = new Set<string>();
  const out: Endpoint[] = [];
  for (const list of lists) {
    for (const ep of list) {
      if (ep.workload) {
        if (seen.has(ep.workload)) continue;
        seen.add(ep.workload);
      }
      out.push(ep);
    }
  }
  return out;
}

/**
 * A file ServiceEntry whose host is a Consul service's hostname decorates it, as Istio lets a ServiceEntry
 * decorate a Kubernetes service: the provided service keeps its endpoints and takes the entry's SANs,
 * exportTo and location. Endpoints or a workloadSelector on the decorating entry are ignored, with a warning.
 */
export function decorate(service: Service, decorators: ServiceEntryConfig[], problems: ConfigProblem[]): Service {
  decorators.sort(compareServiceEntryPrecedence);
  const [d, ...others] = decorators as [ServiceEntryConfig, ...ServiceEntryConfig[]];
  const dKey = configKey(d);
  if ((d.spec.endpoints?.length ?? 0) > 0 || d.spec.workloadSelector) {
    problems.push(
      problemAt(
        d,
        "warning",
        `host ${service.hostname} is a ${originKind(service.origin)} service (${service.key}); this ServiceEntry decorates it, and its endpoints/workloadSelector are ignored in favour of the ${originKind(service.origin)} endpoints`,
      ),
    );
  }
  for (const o of others) {
    problems.push(problemAt(o, "warning", `host ${service.hostname} (${service.key}) is already decorated by ${dKey}; this ServiceEntry does not apply to it`));
  }
  return {
    ...service,
    subjectAltNames: [...(d.spec.subjectAltNames ?? [])],
    exportTo: normalizeExportTo(d.spec.exportTo, d.metadata.namespace),
    location: d.spec.location ?? service.location,
    decoratedBy: dKey,
  };
}

/**
 * The definition of a config key that takes effect when several sources or files define it: the first by
 * origin (files by path and position). Equal origins (only a misbehaving source produces them) fall back to
 * the content, so the winner never depends on the order sources or objects were listed in.
 */
export function compareDefinitions(a: AnyConfig, b: AnyConfig): number {
  const byOrigin = compareOrigins(a.origin, b.origin);
  if (byOrigin !== 0 || a === b) return byOrigin;
  const fa = fingerprint(a).full;
  const fb = fingerprint(b).full;
  return fa < fb ? -1 : fa > fb ? 1 : 0;
}

/** The error on a definition that lost to `winner` (see compareDefinitions). */
export function duplicateProblem(loser: AnyConfig, winner: AnyConfig): ConfigProblem {
  return problemAt(
    loser,
    "error",
    `duplicate ${configKey(loser)}: also defined at ${formatOrigin(winner.origin)}, which takes effect; this definition is ignored`,
  );
}

// ---------------------------------------------------------------------------------------------------------
// Fingerprints: what decides that a rebuilt thing equals the one already published

export interface Fingerprint {
  /** What consumers act on: everything but the origin. */
  content: string;
  /** Including the origin. */
  full: string;
}

// Derived services are memoised across rebuilds; so is their VIP-carrying copy, so that an unchanged service
// keeps its identity (and its cached fingerprint) from one snapshot to the next.
const vipCopies = new WeakMap<Service, { vip: string; service: Service }>();

export function withAutoAddresses(derived: Service, vip: readonly string[] | undefined): Service {
  if (!vip) return derived;
  const key = vip.join(",");
  const hit = vipCopies.get(derived);
  if (hit && hit.vip === key) return hit.service;
  const service = { ...derived, autoAddresses: [...vip] };
  vipCopies.set(derived, { vip: key, service });
  return service;
}

// Snapshot contents are frozen, so a fingerprint computed once stays valid for the object's lifetime.
const fingerprints = new WeakMap<object, Fingerprint>();
const listFingerprints = new WeakMap<readonly Endpoint[], Fingerprint>();

export function fingerprint(o: { origin: Origin }): Fingerprint {
  let fp = fingerprints.get(o);
  if (!fp) {
    const content = canonical({ ...o, origin: undefined });
    fp = { content, full: `${content}@${canonical(o.origin)}` };
    if (Object.isFrozen(o)) fingerprints.set(o, fp);
  }
  return fp;
}

/** Records the fingerprint of an object about to be frozen (saves computing it again). */
export function rememberFingerprint(o: object, fp: Fingerprint): void {
  fingerprints.set(o, fp);
}

/** Endpoint lists compare as sets: a reordering alone is not a change. */
export function listFingerprint(list: readonly Endpoint[]): Fingerprint {
  const cached = listFingerprints.get(list);
  if (cached) return cached;
  const fps = list.map(fingerprint);
  const fp = {
    content: fps.map((f) => f.content).sort().join("\n"),
    full: fps.map((f) => f.full).sort().join("\n"),
  };
  if (Object.isFrozen(list)) listFingerprints.set(list, fp);
  return fp;
}

export function rememberListFingerprint(list: readonly Endpoint[], fp: Fingerprint): void {
  listFingerprints.set(list, fp);
}

/** JSON with object keys sorted, so equal values give equal strings whatever order fields were set in. */
export function canonical(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) => {
    if (v === null || typeof v !== "object" || Array.isArray(v)) return v;
    const sorted: Record<string, unknown> = {};
    for (const k of Object.keys(v).sort()) sorted[k] = (v as Record<string, unknown>)[k];
    return sorted;
  });
}

export function deepFreeze<T>(value: T): T {
  if (value === null || typeof value !== "object" || Object.isFrozen(value)) return value;
  Object.freeze(value);
  for (const v of Object.values(value as object)) deepFreeze(v);
  return value;
}

// ---------------------------------------------------------------------------------------------------------
// Problems and origins

function originKind(o: Origin): string {
  return o.type === "file" ? "file" : o.type === "consul" ? "Consul" : "auto-registered";
}

/** A problem about a whole object, located at its origin (non-file origins have no line: 0:0). */
export function problemAt(o: AnyConfig, severity: Severity, message: string): ConfigProblem {
  const where =
    o.origin.type === "file"
      ? { file: o.origin.file, line: o.origin.line, column: o.origin.column }
      : { file: formatOrigin(o.origin), line: 0, column: 0 };
  return { severity, message, ...where, kind: o.kind, name: o.metadata.name, namespace: o.metadata.namespace };
}
