// Source states -> one immutable RegistrySnapshot plus what changed since the previous one.
// Pure as seen from outside: no I/O, no clocks. Given the same previous snapshot and inputs it returns the same
// answer, and when nothing observable changed it returns the previous snapshot itself (no new version).
//
// Two builds give that answer. `buildSnapshotFull` (this file) derives everything from all the inputs: simple,
// obviously complete, O(mesh) per change. `buildSnapshot` hands the work to the incremental SnapshotBuilder
// (snapshot-builder.ts), which keeps the indexes of the last build and recomputes only what the changed objects
// reach: a WorkloadEntry edit costs the services selecting it, not the mesh. The full build stays as the
// reference the incremental one is tested against (test/snapshot-equivalence.test.ts) and as an escape hatch.
import type {
  AnyConfig,
  ChangeSet,
  ConfigProblem,
  Endpoint,
  MeshConfig,
  RegistrySnapshot,
  Service,
  SourceState,
} from "./model.js";
import { configKey } from "./model.js";
import { SnapshotBuilder } from "./snapshot-builder.js";
import {
  ROUTING_KINDS,
  canonical,
  compareDefinitions,
  decorate,
  deepFreeze,
  duplicateProblem,
  fingerprint,
  listFingerprint,
  memoEndpoints,
  memoServices,
  mergeEndpoints,
  mergeServiceGroup,
  rememberFingerprint,
  rememberListFingerprint,
  withAutoAddresses,
} from "./snapshot-common.js";
import type { ServiceEntryConfig } from "./services.js";
import { compareProblems, compareServiceEntryPrecedence, crossValidate } from "./validate.js";
import { allocateVips } from "./vips.js";
import { WorkloadIndex, selectedWorkloads, type WorkloadEntryConfig } from "./workloads.js";

export interface BuildOptions {
  /** Derive everything from scratch (the reference build) instead of from the previous build's indexes. */
  full?: boolean;
}

/**
 * The builder whose indexes describe each snapshot it produced. A build takes the builder over from `prev`
 * (and mutates it), so building twice from the same snapshot, or from one the builder did not produce, starts a
 * fresh builder: always correct, merely not incremental. A build that throws leaves no builder behind either.
 */
const builders = new WeakMap<RegistrySnapshot, SnapshotBuilder>();

export function buildSnapshot(
  prev: RegistrySnapshot | undefined,
  states: readonly SourceState[],
  mesh: MeshConfig,
  opts: BuildOptions = {},
): RegistrySnapshot {
  if (opts.full) return buildSnapshotFull(prev, states, mesh);
  let builder = prev && builders.get(prev);
  if (prev) builders.delete(prev);
  if (!builder || !builder.continues(prev, mesh)) builder = new SnapshotBuilder(mesh);
  const next = builder.build(prev, states);
  builders.set(next, builder);
  return next;
}

/** The reference build: everything derived again from every input. */
export function buildSnapshotFull(
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
 * first (compareDefinitions: files by path and position, then other origins) wins, whatever order the
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
    if (defs.length > 1) defs.sort(compareDefinitions);
    const [winner, ...losers] = defs as [AnyConfig, ...AnyConfig[]];
    out.set(key, winner);
    for (const l of losers) problems.push(duplicateProblem(l, winner));
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
    rememberFingerprint(s, fp);
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
    rememberListFingerprint(frozen, fp);
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

function pushTo<K, V>(m: Map<K, V[]>, k: K, v: V): void {
  const list = m.get(k);
  if (list) list.push(v);
  else m.set(k, [v]);
}
