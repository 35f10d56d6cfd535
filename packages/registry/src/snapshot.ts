// Source states -> one immutable RegistrySnapshot plus what changed since the previous one.
// Pure: no I/O, no clocks. Given the same previous snapshot and inputs it returns the same answer, and when
// nothing observable changed it returns the previous snapshot itself (no new version).
import type {
  AnyConfig,
  ChangeSet,
  ConfigProblem,
  Endpoint,
  MeshConfig,
  Origin,
  RegistrySnapshot,
  Service,
  Severity,
  SourceState,
} from "./model.js";
import { configKey } from "./model.js";
import { servicesOfServiceEntry, type ServiceEntryConfig } from "./services.js";
import { compareOrigins, compareProblems, compareServiceEntryPrecedence, crossValidate, formatOrigin } from "./validate.js";
import { normalizeExportTo } from "./visibility.js";
import { allocateVips } from "./vips.js";
import { WorkloadIndex, endpointsOfServiceEntry, selectedWorkloads, type WorkloadEntryConfig } from "./workloads.js";

/** Kinds whose edits only touch routing (listeners, routes, cluster policies), reported in `changes.routing`. */
const ROUTING_KINDS: ReadonlySet<string> = new Set(["VirtualService", "DestinationRule", "Gateway", "Sidecar"]);

export function buildSnapshot(
  prev: RegistrySnapshot | undefined,
  states: readonly SourceState[],
  mesh: MeshConfig,
): RegistrySnapshot {
  const problems: ConfigProblem[] = [];
  for (const s of states) problems.push(...s.problems);

  const configs = mergeConfigs(states, problems);
  const configList = [...configs.values()];
  problems.push(...crossValidate(configList));

  const derived = deriveServices(configList, states, mesh, problems);
  problems.sort(compareProblems);

  return assemble(prev, { mesh, configs, derived, problems, sources: states.map((s) => s.status) });
}

/** Distinct SPIFFE ids of a service's endpoints, sorted: the SANs a client verifies besides `subjectAltNames`. */
export function selectedWorkloadIdentities(snapshot: RegistrySnapshot, serviceKey: string): string[] {
  const ids = new Set<string>();
  for (const ep of snapshot.endpoints.get(serviceKey) ?? []) if (ep.spiffeId) ids.add(ep.spiffeId);
  return [...ids].sort();
}

// ---------------------------------------------------------------------------------------------------------
// Merging objects

/**
 * One object per configKey. When two sources (or two files) define the same key, the one whose origin sorts
 * first (validate's compareOrigins: files by path and position, then other origins) wins, whatever order the
 * sources happened to report them in, and every other definition is an error that names the winner.
 * crossValidate then sees the merged objects only, so it does not report the duplicates a second time.
 */
function mergeConfigs(states: readonly SourceState[], problems: ConfigProblem[]): Map<string, AnyConfig> {
  const byKey = new Map<string, AnyConfig[]>();
  for (const s of states) {
    for (const o of s.objects) {
      const key = configKey(o);
      const list = byKey.get(key);
      if (list) list.push(o);
      else byKey.set(key, [o]);
    }
  }
  const out = new Map<string, AnyConfig>();
  for (const key of [...byKey.keys()].sort()) {
    const defs = byKey.get(key)!;
    if (defs.length > 1) defs.sort((a, b) => compareOrigins(a.origin, b.origin));
    const [winner, ...losers] = defs as [AnyConfig, ...AnyConfig[]];
    out.set(key, winner);
    for (const l of losers) {
      problems.push(
        problemAt(l, "error", `duplicate ${key}: also defined at ${formatOrigin(winner.origin)}, which takes effect; this definition is ignored`),
      );
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Services and endpoints

interface Derived {
  services: Map<string, Service>;
  endpoints: Map<string, Endpoint[]>;
}

function deriveServices(configs: readonly AnyConfig[], states: readonly SourceState[], mesh: MeshConfig, problems: ConfigProblem[]): Derived {
  const serviceEntries: ServiceEntryConfig[] = [];
  const workloads: WorkloadEntryConfig[] = [];
  for (const c of configs) {
    if (c.kind === "ServiceEntry") serviceEntries.push(c);
    else if (c.kind === "WorkloadEntry") workloads.push(c);
  }
  const index = new WorkloadIndex(workloads);

  // Services that sources provide directly (Consul), first source wins a key.
  const provided = new Map<string, { service: Service; endpoints: readonly Endpoint[] }>();
  const providedByHost = new Map<string, string[]>();
  for (const s of states) {
    for (const service of s.services ?? []) {
      if (provided.has(service.key)) continue;
      provided.set(service.key, { service, endpoints: s.endpoints?.get(service.key) ?? [] });
      const keys = providedByHost.get(service.hostname) ?? [];
      keys.push(service.key);
      providedByHost.set(service.hostname, keys);
    }
  }

  // File ServiceEntry hosts: either decorate a provided service of the same hostname, or group by service key.
  const decorators = new Map<string, ServiceEntryConfig[]>();
  const groups = new Map<string, { se: ServiceEntryConfig; service: Service }[]>();
  for (const se of serviceEntries) {
    for (const service of memoServices(se)) {
      const decorated = providedByHost.get(service.hostname);
      if (decorated) {
        for (const key of decorated) pushTo(decorators, key, se);
        continue;
      }
      pushTo(groups, service.key, { se, service });
    }
  }

  const services = new Map<string, Service>();
  const endpoints = new Map<string, Endpoint[]>();
  const endpointsOf = (se: ServiceEntryConfig): Endpoint[] => memoEndpoints(se, selectedWorkloads(se, index), mesh);

  for (const [key, group] of groups) {
    group.sort((a, b) => compareServiceEntryPrecedence(a.se, b.se));
    services.set(key, mergeServiceGroup(group));
    endpoints.set(key, mergeEndpoints(group.map((g) => endpointsOf(g.se))));
  }

  for (const [key, { service, endpoints: eps }] of provided) {
    const decs = decorators.get(key);
    services.set(key, decs ? decorate(service, decs, problems) : service);
    // The source's own list: unchanged state keeps its identity, so it is not fingerprinted again.
    endpoints.set(key, eps as Endpoint[]);
  }

  return { services, endpoints };
}

// Derivations memoised per ServiceEntry object. Sources hand over the very same object while its file is
// unchanged, so a rebuild after one WorkloadEntry edit re-derives (and re-fingerprints) only what that edit
// touches: thousands of unchanged services and endpoint lists keep their identity and their cached fingerprints.
// Everything memoised here ends up frozen in a snapshot, so sharing it across snapshots is safe.
const servicesMemo = new WeakMap<ServiceEntryConfig, Service[]>();
const endpointsMemo = new WeakMap<ServiceEntryConfig, { trustDomain: string; selected: readonly WorkloadEntryConfig[]; endpoints: Endpoint[] }>();

function memoServices(se: ServiceEntryConfig): Service[] {
  let services = servicesMemo.get(se);
  if (!services) servicesMemo.set(se, (services = servicesOfServiceEntry(se)));
  return services;
}

function memoEndpoints(se: ServiceEntryConfig, selected: readonly WorkloadEntryConfig[], mesh: MeshConfig): Endpoint[] {
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
 * reported by crossValidate, so they are not reported again here.
 */
function mergeServiceGroup(group: readonly { se: ServiceEntryConfig; service: Service }[]): Service {
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
function mergeEndpoints(lists: readonly Endpoint[][]): Endpoint[] {
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
function decorate(service: Service, decorators: ServiceEntryConfig[], problems: ConfigProblem[]): Service {
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

// ---------------------------------------------------------------------------------------------------------
// Diffing against the previous snapshot

interface Inputs {
  mesh: MeshConfig;
  configs: Map<string, AnyConfig>;
  derived: Derived;
  problems: ConfigProblem[];
  sources: SourceState["status"][];
}

function assemble(prev: RegistrySnapshot | undefined, next: Inputs): RegistrySnapshot {
  const meshChanged = !prev || canonical(prev.mesh) !== canonical(next.mesh);
  let contentChanged = meshChanged;

  // Configs: any difference, origins included (/debug/configz shows file:line), is a new snapshot; only
  // differences that matter to proxies count as routing changes.
  const routing = new Set<string>();
  const configs = new Map<string, AnyConfig>();
  for (const [key, obj] of next.configs) {
    const old = prev?.configs.get(key);
    const kept = old !== undefined && (old === obj || fingerprint(old).full === fingerprint(obj).full);
    configs.set(key, kept ? old : deepFreeze(obj));
    if (kept) continue;
    contentChanged = true;
    if (ROUTING_KINDS.has(obj.kind) && (old === undefined || fingerprint(old).content !== fingerprint(obj).content)) routing.add(key);
  }
  for (const [key, old] of prev?.configs ?? []) {
    if (next.configs.has(key)) continue;
    contentChanged = true;
    if (ROUTING_KINDS.has(old.kind)) routing.add(key);
  }

  const services = new Map<string, Service>();
  const changedServices = new Set<string>();
  const vips = allocateVips(next.derived.services.values());
  for (const key of [...next.derived.services.keys()].sort()) {
    const s = withAutoAddresses(next.derived.services.get(key)!, vips.get(key));
    const old = prev?.services.get(key);
    if (old === s) {
      services.set(key, old);
      continue;
    }
    const fp = fingerprint(s);
    if (old && fingerprint(old).full === fp.full) {
      services.set(key, old);
      continue;
    }
    services.set(key, deepFreeze(s));
    fingerprints.set(s, fp);
    contentChanged = true;
    if (!old || fingerprint(old).content !== fp.content) changedServices.add(key);
  }
  for (const key of prev?.services.keys() ?? []) {
    if (!services.has(key)) {
      changedServices.add(key);
      contentChanged = true;
    }
  }

  const endpoints = new Map<string, readonly Endpoint[]>();
  const changedEndpoints = new Set<string>();
  for (const key of services.keys()) {
    const eps = next.derived.endpoints.get(key) ?? [];
    const old = prev?.endpoints.get(key);
    if (old === eps) {
      endpoints.set(key, old);
      continue;
    }
    const fp = listFingerprint(eps);
    if (old && listFingerprint(old).full === fp.full) {
      endpoints.set(key, old);
      continue;
    }
    const frozen = deepFreeze(eps);
    listFingerprints.set(frozen, fp);
    endpoints.set(key, frozen);
    contentChanged = true;
    if (!old || listFingerprint(old).content !== fp.content) changedEndpoints.add(key);
  }
  for (const key of prev?.endpoints.keys() ?? []) {
    if (!endpoints.has(key)) {
      changedEndpoints.add(key);
      contentChanged = true;
    }
  }

  const problems = prev && canonical(prev.problems) === canonical(next.problems) ? prev.problems : deepFreeze(next.problems);
  const sources = prev && canonical(prev.sources) === canonical(next.sources) ? prev.sources : deepFreeze(next.sources.map((s) => ({ ...s })));
  if (prev && (problems !== prev.problems || sources !== prev.sources)) contentChanged = true;

  if (prev && !contentChanged) return prev;

  const changes: ChangeSet = Object.freeze({
    services: changedServices,
    endpoints: changedEndpoints,
    routing,
    full: meshChanged,
  });
  return Object.freeze({
    version: (prev?.version ?? 0) + 1,
    mesh: prev && !meshChanged ? prev.mesh : deepFreeze({ ...next.mesh }),
    services,
    endpoints,
    configs,
    problems,
    sources,
    changes,
  });
}

interface Fingerprint {
  /** What consumers act on: everything but the origin. */
  content: string;
  /** Including the origin. */
  full: string;
}

// Derived services are memoised across rebuilds; so is their VIP-carrying copy, so that an unchanged service
// keeps its identity (and its cached fingerprint) from one snapshot to the next.
const vipCopies = new WeakMap<Service, { vip: string; service: Service }>();

function withAutoAddresses(derived: Service, vip: string[] | undefined): Service {
  if (!vip) return derived;
  const key = vip.join(",");
  const hit = vipCopies.get(derived);
  if (hit && hit.vip === key) return hit.service;
  const service = { ...derived, autoAddresses: vip };
  vipCopies.set(derived, { vip: key, service });
  return service;
}

// Snapshot contents are frozen, so a fingerprint computed once stays valid for the object's lifetime.
const fingerprints = new WeakMap<object, Fingerprint>();
const listFingerprints = new WeakMap<readonly Endpoint[], Fingerprint>();

function fingerprint(o: { origin: Origin }): Fingerprint {
  let fp = fingerprints.get(o);
  if (!fp) {
    const content = canonical({ ...o, origin: undefined });
    fp = { content, full: `${content}@${canonical(o.origin)}` };
    if (Object.isFrozen(o)) fingerprints.set(o, fp);
  }
  return fp;
}

/** Endpoint lists compare as sets: a reordering alone is not a change. */
function listFingerprint(list: readonly Endpoint[]): Fingerprint {
  const cached = listFingerprints.get(list);
  if (cached) return cached;
  const fps = list.map(fingerprint);
  return {
    content: fps.map((f) => f.content).sort().join("\n"),
    full: fps.map((f) => f.full).sort().join("\n"),
  };
}

/** JSON with object keys sorted, so equal values give equal strings whatever order fields were set in. */
function canonical(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) => {
    if (v === null || typeof v !== "object" || Array.isArray(v)) return v;
    const sorted: Record<string, unknown> = {};
    for (const k of Object.keys(v).sort()) sorted[k] = (v as Record<string, unknown>)[k];
    return sorted;
  });
}

function deepFreeze<T>(value: T): T {
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
function problemAt(o: AnyConfig, severity: Severity, message: string): ConfigProblem {
  const where =
    o.origin.type === "file"
      ? { file: o.origin.file, line: o.origin.line, column: o.origin.column }
      : { file: formatOrigin(o.origin), line: 0, column: 0 };
  return { severity, message, ...where, kind: o.kind, name: o.metadata.name, namespace: o.metadata.namespace };
}

function pushTo<K, V>(m: Map<K, V[]>, k: K, v: V): void {
  const list = m.get(k);
  if (list) list.push(v);
  else m.set(k, [v]);
}
