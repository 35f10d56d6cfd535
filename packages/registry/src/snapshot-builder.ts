// The incremental snapshot build: the same answer as buildSnapshotFull (snapshot.ts), at a cost proportional to
// what changed rather than to the mesh.
//
// A builder keeps, from one build to the next, every source's last state, the definitions of every config key,
// and the indexes that say who depends on whom. A build then
//  1. diffs each source's state against the last one (by identity: sources hand over the same objects for
//     unchanged files and Consul services) and settles the winner of each config key whose definitions changed.
//     This relies on a source never mutating a state (or its arrays) once handed over; FileSource, ConsulSource
//     and the auto-registration source all build a new one for each change;
//  2. follows the dependencies of each changed object to the units of work it touches:
//     - a ServiceEntry: the services of each of its hosts (old and new), and the host+port claim groups of each;
//     - a WorkloadEntry: the hosts of the ServiceEntries whose selector matches its labels (old and new);
//     - a DestinationRule: the VirtualServices routing to a subset of a host it applies to;
//     - a VirtualService: its own dangling-subset check;
//     - a service a source provides (Consul): its hostname (decorating ServiceEntries of any namespace);
//  3. re-derives those units only: services, endpoints and problems of one hostname, conflicts of one claim group,
//     subset warnings of one VirtualService; VIPs move only for the keys whose allocation actually changes;
//  4. patches the previous snapshot's maps with what changed, without copying them (patched-map.ts).
// Problems are kept in buckets, one per unit, so a unit's re-check replaces exactly the problems it owns.
//
// Units partition the service keys: a service key is `namespace/hostname`, so it belongs to the unit of its hostname
// (as ConsulSource builds the keys of the services it provides; a source that did otherwise would need the full
// build). test/snapshot-equivalence.test.ts checks that random edit sequences give the full build's snapshots.
import type { ConfigObject, AnyConfig, ConfigProblem, Endpoint, MeshConfig, RegistrySnapshot, Service, SourceState } from "./model.js";
import { configKey } from "./model.js";
import { PatchedMap } from "./patched-map.js";
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
import {
  compareProblems,
  compareServiceEntryPrecedence,
  danglingSubsetsOf,
  hostClaimKeys,
  hostConflicts,
  hostMatches,
  subsetDestinationHosts,
} from "./validate.js";
import { VipAllocator, needsAutoVip } from "./vips.js";
import { WorkloadIndex, labelsMatch, selectedWorkloads, workloadLabels, type WorkloadEntryConfig } from "./workloads.js";

type DestinationRuleConfig = ConfigObject<"DestinationRule">;

interface Provided {
  service: Service;
  endpoints: readonly Endpoint[];
}

/** What the builder remembers of one source's last state. */
interface SourceMemo {
  state: SourceState | undefined;
  objects: readonly AnyConfig[];
  problems: readonly ConfigProblem[];
  services: readonly Service[] | undefined;
  endpoints: ReadonlyMap<string, readonly Endpoint[]> | undefined;
  /** Its services by key, first occurrence of a key winning (as the full build reads them). */
  provided: Map<string, Provided>;
}

/** The units one build has to look at again. */
interface Work {
  configKeys: Set<string>;
  providedKeys: Set<string>;
  hostnames: Set<string>;
  claims: Set<string>;
  virtualServices: Set<string>;
}

const NO_ENDPOINTS: readonly Endpoint[] = Object.freeze([]);
const NO_PROBLEMS: readonly ConfigProblem[] = Object.freeze([]);

export class SnapshotBuilder {
  private readonly meshKey: string;
  /** The snapshot the builder's state describes; undefined before the first build. */
  private last: RegistrySnapshot | undefined;
  private readonly sources: SourceMemo[] = [];

  /** Every definition of every config key (several when sources or files collide), and the one that wins. */
  private readonly defs = new Map<string, AnyConfig[]>();
  private readonly winners = new Map<string, AnyConfig>();

  // Who depends on whom, over the winners.
  private readonly seByHostname = new Map<string, Map<string, ServiceEntryConfig>>();
  private readonly seByClaim = new Map<string, Map<string, ServiceEntryConfig>>();
  /** ServiceEntries with a workloadSelector, by namespace and ONE of their selector's label pairs (see selectorBucket). */
  private readonly seBySelector = new Map<string, Map<string, ServiceEntryConfig>>();
  private readonly workloads = new WorkloadIndex();
  /** DestinationRules by lowercased host (`*.suffix` and `*` patterns included as written). */
  private readonly drByHost = new Map<string, Map<string, DestinationRuleConfig>>();
  /** VirtualService keys by the lowercased hosts they route to a subset of. */
  private readonly vsBySubsetHost = new Map<string, Set<string>>();
  private readonly provided = new Map<string, Provided>();
  private readonly providedByHostname = new Map<string, Set<string>>();

  // Derived state: services and endpoints before VIPs, by key, and the keys of each hostname unit.
  private readonly derived = new Map<string, Service>();
  private readonly derivedEndpoints = new Map<string, readonly Endpoint[]>();
  private readonly keysByHostname = new Map<string, Set<string>>();
  private readonly vips = new VipAllocator();

  /** Problems by bucket (a source, a config key's duplicates, a claim group, a VirtualService, a hostname). */
  private readonly buckets = new Map<string, readonly ConfigProblem[]>();
  /** Old contents of the buckets this build changed. */
  private bucketChanges = new Map<string, readonly ConfigProblem[]>();
  /** Every bucket's problems, sorted. */
  private problems: readonly ConfigProblem[] = NO_PROBLEMS;

  constructor(private readonly mesh: MeshConfig) {
    this.meshKey = canonical(mesh);
  }

  /** Whether this builder's state describes `prev` built with `mesh` (else a fresh builder must start over). */
  continues(prev: RegistrySnapshot | undefined, mesh: MeshConfig): boolean {
    return this.last !== undefined && prev === this.last && canonical(mesh) === this.meshKey;
  }

  build(prev: RegistrySnapshot | undefined, states: readonly SourceState[]): RegistrySnapshot {
    // A builder that has not built yet compares everything with `prev`, wherever that came from.
    const fresh = this.last === undefined;
    this.bucketChanges = new Map();
    const work: Work = { configKeys: new Set(), providedKeys: new Set(), hostnames: new Set(), claims: new Set(), virtualServices: new Set() };

    const count = Math.max(states.length, this.sources.length);
    for (let i = 0; i < count; i++) this.diffSource(i, states[i], work);
    this.sources.length = states.length;

    const changedConfigs = new Set<string>();
    for (const key of work.configKeys) if (this.settleKey(key, work)) changedConfigs.add(key);
    for (const key of work.providedKeys) this.settleProvided(key, work);

    for (const claim of work.claims) {
      const entries = this.seByClaim.get(claim);
      this.setBucket(`claim\u0000${claim}`, entries ? hostConflicts(claim, [...entries.values()]) : NO_PROBLEMS);
    }
    for (const key of work.virtualServices) {
      const vs = this.winners.get(key);
      const problems = vs?.kind === "VirtualService" ? danglingSubsetsOf(vs, (host) => this.rulesFor(host)) : NO_PROBLEMS;
      this.setBucket(`vs\u0000${key}`, problems);
    }

    const changedServices = new Set<string>();
    const changedEndpoints = new Set<string>();
    for (const hostname of work.hostnames) this.deriveHostname(hostname, changedServices, changedEndpoints);

    const vipAdd: string[] = [];
    const vipRemove: string[] = [];
    for (const key of changedServices) {
      const s = this.derived.get(key);
      const needs = s !== undefined && needsAutoVip(s);
      if (needs && !this.vips.has(key)) vipAdd.push(key);
      else if (!needs && this.vips.has(key)) vipRemove.push(key);
    }
    for (const key of this.vips.update(vipAdd, vipRemove)) changedServices.add(key);

    const problemsChanged = this.bucketChanges.size > 0;
    if (problemsChanged) this.problems = this.patchProblems();

    const next = fresh
      ? this.assemble(prev, union(this.winners.keys(), prev?.configs.keys()), union(this.derived.keys(), prev?.services.keys()), union(this.derived.keys(), prev?.endpoints.keys()), true, true, states)
      : this.assemble(prev, changedConfigs, changedServices, union(changedEndpoints, changedServices), false, problemsChanged, states);
    this.last = next;
    return next;
  }

  // -------------------------------------------------------------------------------------------------------
  // 1. Sources

  private diffSource(i: number, state: SourceState | undefined, work: Work): void {
    let memo = this.sources[i];
    if (!memo) {
      memo = { state: undefined, objects: [], problems: NO_PROBLEMS, services: undefined, endpoints: undefined, provided: new Map() };
      this.sources[i] = memo;
    }
    if (state === memo.state) return;
    const objects = state?.objects ?? [];
    if (objects !== memo.objects) this.diffObjects(memo.objects, objects, work);
    const problems = state?.problems ?? NO_PROBLEMS;
    if (!sameItems(problems, memo.problems)) this.setBucket(`source\u0000${i}`, problems);
    if (state?.services !== memo.services || state?.endpoints !== memo.endpoints) {
      const provided = new Map<string, Provided>();
      for (const service of state?.services ?? []) {
        if (provided.has(service.key)) continue;
        provided.set(service.key, { service, endpoints: state?.endpoints?.get(service.key) ?? NO_ENDPOINTS });
      }
      for (const key of union(provided.keys(), memo.provided.keys())) {
        const a = memo.provided.get(key);
        const b = provided.get(key);
        if (a?.service !== b?.service || a?.endpoints !== b?.endpoints) work.providedKeys.add(key);
      }
      memo.provided = provided;
    }
    memo.state = state;
    memo.objects = objects;
    memo.problems = problems;
    memo.services = state?.services;
    memo.endpoints = state?.endpoints;
  }

  /**
   * Objects added and removed between two lists, as multisets (a source may list one object twice; the full
   * build then reports a duplicate). FileSource lists files in order and keeps the objects of unchanged files, so
   * trimming the common prefix and suffix leaves just the edited file's objects to hash.
   */
  private diffObjects(before: readonly AnyConfig[], after: readonly AnyConfig[], work: Work): void {
    let start = 0;
    while (start < before.length && start < after.length && before[start] === after[start]) start++;
    let endBefore = before.length;
    let endAfter = after.length;
    while (endBefore > start && endAfter > start && before[endBefore - 1] === after[endAfter - 1]) {
      endBefore--;
      endAfter--;
    }
    const added = new Map<AnyConfig, number>();
    for (let j = start; j < endAfter; j++) added.set(after[j]!, (added.get(after[j]!) ?? 0) + 1);
    for (let j = start; j < endBefore; j++) {
      const o = before[j]!;
      const n = added.get(o);
      if (n) added.set(o, n - 1);
      else this.removeDefinition(o, work);
    }
    for (const [o, n] of added) for (let k = 0; k < n; k++) this.addDefinition(o, work);
  }

  private addDefinition(o: AnyConfig, work: Work): void {
    const key = configKey(o);
    const list = this.defs.get(key);
    if (list) list.push(o);
    else this.defs.set(key, [o]);
    work.configKeys.add(key);
  }

  private removeDefinition(o: AnyConfig, work: Work): void {
    const key = configKey(o);
    const list = this.defs.get(key);
    const at = list?.indexOf(o) ?? -1;
    if (!list || at < 0) return;
    list.splice(at, 1);
    if (list.length === 0) this.defs.delete(key);
    work.configKeys.add(key);
  }

  /** Picks the winner of a key whose definitions changed; true if the winner is another object. */
  private settleKey(key: string, work: Work): boolean {
    const defs = this.defs.get(key) ?? [];
    let winner: AnyConfig | undefined = defs[0];
    let duplicates: ConfigProblem[] = [];
    if (defs.length > 1) {
      const sorted = [...defs].sort(compareDefinitions);
      const first = sorted[0]!;
      winner = first;
      duplicates = sorted.slice(1).map((loser) => duplicateProblem(loser, first));
    }
    this.setBucket(`dup\u0000${key}`, duplicates);
    const old = this.winners.get(key);
    if (old === winner) return false;
    if (winner) this.winners.set(key, winner);
    else this.winners.delete(key);
    if (old) this.unindex(key, old, work);
    if (winner) this.index(key, winner, work);
    return true;
  }

  private settleProvided(key: string, work: Work): void {
    let winner: Provided | undefined;
    for (const memo of this.sources) {
      winner = memo.provided.get(key);
      if (winner) break;
    }
    const old = this.provided.get(key);
    if (old?.service === winner?.service && old?.endpoints === winner?.endpoints) return;
    if (old) {
      removeFromSet(this.providedByHostname, old.service.hostname, key);
      work.hostnames.add(old.service.hostname);
    }
    if (winner) {
      this.provided.set(key, winner);
      addToSet(this.providedByHostname, winner.service.hostname, key);
      work.hostnames.add(winner.service.hostname);
    } else {
      this.provided.delete(key);
    }
  }

  // -------------------------------------------------------------------------------------------------------
  // 2. Dependencies

  private index(key: string, o: AnyConfig, work: Work): void {
    switch (o.kind) {
      case "ServiceEntry":
        for (const h of new Set(o.spec.hosts)) {
          addToMap(this.seByHostname, h, key, o);
          work.hostnames.add(h);
        }
        for (const claim of hostClaimKeys(o)) {
          addToMap(this.seByClaim, claim, key, o);
          work.claims.add(claim);
        }
        if (o.spec.workloadSelector) addToMap(this.seBySelector, selectorBucket(o), key, o);
        return;
      case "WorkloadEntry":
        this.workloads.add(o);
        this.touchSelecting(o, work);
        return;
      case "DestinationRule": {
        const host = o.spec.host.toLowerCase();
        addToMap(this.drByHost, host, key, o);
        this.touchRoutingTo(host, work);
        return;
      }
      case "VirtualService":
        for (const h of subsetDestinationHosts(o)) addToSet(this.vsBySubsetHost, h, key);
        work.virtualServices.add(key);
        return;
      default:
        return;
    }
  }

  private unindex(key: string, o: AnyConfig, work: Work): void {
    switch (o.kind) {
      case "ServiceEntry":
        for (const h of new Set(o.spec.hosts)) {
          removeFromMap(this.seByHostname, h, key);
          work.hostnames.add(h);
        }
        for (const claim of hostClaimKeys(o)) {
          removeFromMap(this.seByClaim, claim, key);
          work.claims.add(claim);
        }
        if (o.spec.workloadSelector) removeFromMap(this.seBySelector, selectorBucket(o), key);
        return;
      case "WorkloadEntry":
        this.workloads.remove(o);
        this.touchSelecting(o, work);
        return;
      case "DestinationRule": {
        const host = o.spec.host.toLowerCase();
        removeFromMap(this.drByHost, host, key);
        this.touchRoutingTo(host, work);
        return;
      }
      case "VirtualService":
        for (const h of subsetDestinationHosts(o)) removeFromSet(this.vsBySubsetHost, h, key);
        work.virtualServices.add(key);
        return;
      default:
        return;
    }
  }

  /**
   * The hosts of every ServiceEntry whose selector matches a workload's labels. A selector matches only if the
   * workload carries each of its pairs, so looking in the buckets of the workload's own pairs (and the bucket of
   * empty selectors) finds every candidate. A ServiceEntry that changed in the same build touches its own hosts.
   */
  private touchSelecting(we: WorkloadEntryConfig, work: Work): void {
    const ns = we.metadata.namespace;
    const labels = workloadLabels(we);
    const buckets = [`${ns}\u0000`, ...Object.entries(labels).map(([k, v]) => `${ns}\u0000${k}\u0000${v}`)];
    for (const b of buckets) {
      for (const se of this.seBySelector.get(b)?.values() ?? []) {
        if (!labelsMatch(labels, se.spec.workloadSelector?.labels ?? {})) continue;
        for (const h of se.spec.hosts) work.hostnames.add(h);
      }
    }
  }

  /** The VirtualServices whose subset check depends on DestinationRules of this (lowercased) host or pattern. */
  private touchRoutingTo(drHost: string, work: Work): void {
    if (!drHost.startsWith("*")) {
      for (const key of this.vsBySubsetHost.get(drHost) ?? []) work.virtualServices.add(key);
      return;
    }
    // A wildcard rule may apply to any destination host: look at each distinct one (rare edits).
    for (const [host, keys] of this.vsBySubsetHost) {
      if (hostMatches(drHost, host)) for (const key of keys) work.virtualServices.add(key);
    }
  }

  /** In config key order, every DestinationRule whose host may match `host`: the exact one, `*`, and `*.suffix`es. */
  private rulesFor(host: string): DestinationRuleConfig[] {
    const h = host.toLowerCase();
    const patterns = new Set([h, "*"]);
    for (let i = h.indexOf("."); i >= 0; i = h.indexOf(".", i + 1)) patterns.add(`*${h.slice(i)}`);
    const found = new Map<string, DestinationRuleConfig>();
    for (const p of patterns) for (const [key, dr] of this.drByHost.get(p) ?? []) found.set(key, dr);
    return [...found.keys()].sort(compareStrings).map((k) => found.get(k)!);
  }

  // -------------------------------------------------------------------------------------------------------
  // 3. Services and endpoints of one hostname

  /** Re-derives every service of one hostname (as the full build's deriveServices does for all of them). */
  private deriveHostname(hostname: string, changedServices: Set<string>, changedEndpoints: Set<string>): void {
    const next = new Map<string, Provided>();
    const problems: ConfigProblem[] = [];
    const entries = this.seByHostname.get(hostname);
    const providedKeys = this.providedByHostname.get(hostname);
    if (providedKeys && providedKeys.size > 0) {
      for (const key of providedKeys) {
        const p = this.provided.get(key)!;
        const decorators = entries ? [...entries.values()] : [];
        next.set(key, { service: decorators.length > 0 ? decorate(p.service, decorators, problems) : p.service, endpoints: p.endpoints });
      }
    } else if (entries) {
      const groups = new Map<string, { se: ServiceEntryConfig; service: Service }[]>();
      for (const se of entries.values()) {
        const service = memoServices(se).find((s) => s.hostname === hostname)!;
        const group = groups.get(service.key);
        if (group) group.push({ se, service });
        else groups.set(service.key, [{ se, service }]);
      }
      for (const [key, group] of groups) {
        group.sort((a, b) => compareServiceEntryPrecedence(a.se, b.se));
        const endpoints = mergeEndpoints(group.map((g) => memoEndpoints(g.se, selectedWorkloads(g.se, this.workloads), this.mesh)));
        next.set(key, { service: mergeServiceGroup(group), endpoints });
      }
    }
    this.setBucket(`host\u0000${hostname}`, problems);

    for (const key of this.keysByHostname.get(hostname) ?? []) {
      if (next.has(key)) continue;
      this.derived.delete(key);
      this.derivedEndpoints.delete(key);
      changedServices.add(key);
      changedEndpoints.add(key);
    }
    for (const [key, d] of next) {
      if (this.derived.get(key) !== d.service) {
        this.derived.set(key, d.service);
        changedServices.add(key);
      }
      if (this.derivedEndpoints.get(key) !== d.endpoints) {
        this.derivedEndpoints.set(key, d.endpoints);
        changedEndpoints.add(key);
      }
    }
    if (next.size > 0) this.keysByHostname.set(hostname, new Set(next.keys()));
    else this.keysByHostname.delete(hostname);
  }

  // -------------------------------------------------------------------------------------------------------
  // Problems

  private setBucket(name: string, problems: readonly ConfigProblem[]): void {
    const old = this.buckets.get(name) ?? NO_PROBLEMS;
    if (sameProblems(old, problems)) return;
    if (!this.bucketChanges.has(name)) this.bucketChanges.set(name, old);
    if (problems.length > 0) this.buckets.set(name, problems);
    else this.buckets.delete(name);
  }

  /** The sorted list with the changed buckets' old problems taken out and their new ones merged in. */
  private patchProblems(): readonly ConfigProblem[] {
    const out = new Map<ConfigProblem, number>();
    const added: ConfigProblem[] = [];
    for (const [name, old] of this.bucketChanges) {
      for (const p of old) out.set(p, (out.get(p) ?? 0) + 1);
      added.push(...(this.buckets.get(name) ?? NO_PROBLEMS));
    }
    const kept = this.problems.filter((p) => {
      const n = out.get(p);
      if (!n) return true;
      out.set(p, n - 1);
      return false;
    });
    added.sort(compareProblems);
    const merged: ConfigProblem[] = [];
    let i = 0;
    let j = 0;
    while (i < kept.length && j < added.length) merged.push(compareProblems(added[j]!, kept[i]!) < 0 ? added[j++]! : kept[i++]!);
    while (i < kept.length) merged.push(kept[i++]!);
    while (j < added.length) merged.push(added[j++]!);
    return merged;
  }

  // -------------------------------------------------------------------------------------------------------
  // 4. The snapshot

  /**
   * Compares the given keys with `prev` as the full build compares every key, and patches `prev`'s maps with
   * the differences (the full build's maps, key-sorted, when `rebuild`).
   */
  private assemble(
    prev: RegistrySnapshot | undefined,
    configKeys: Iterable<string>,
    serviceKeys: Iterable<string>,
    endpointKeys: Iterable<string>,
    rebuild: boolean,
    problemsChanged: boolean,
    states: readonly SourceState[],
  ): RegistrySnapshot {
    const meshChanged = !prev || canonical(prev.mesh) !== this.meshKey;
    let contentChanged = meshChanged;

    const routing = new Set<string>();
    const configUpdates = new Map<string, AnyConfig | undefined>();
    for (const key of configKeys) {
      const obj = this.winners.get(key);
      const old = prev?.configs.get(key);
      if (!obj) {
        if (!old) continue;
        contentChanged = true;
        configUpdates.set(key, undefined);
        if (ROUTING_KINDS.has(old.kind)) routing.add(key);
        continue;
      }
      if (old !== undefined && (old === obj || fingerprint(old).full === fingerprint(obj).full)) {
        if (rebuild) configUpdates.set(key, old);
        continue;
      }
      contentChanged = true;
      configUpdates.set(key, deepFreeze(obj));
      if (ROUTING_KINDS.has(obj.kind) && (old === undefined || fingerprint(old).content !== fingerprint(obj).content)) routing.add(key);
    }

    const changedServices = new Set<string>();
    const serviceUpdates = new Map<string, Service | undefined>();
    for (const key of serviceKeys) {
      const d = this.derived.get(key);
      const old = prev?.services.get(key);
      if (!d) {
        if (!old) continue;
        contentChanged = true;
        changedServices.add(key);
        serviceUpdates.set(key, undefined);
        continue;
      }
      const s = withAutoAddresses(d, this.vips.get(key));
      if (old === s) {
        if (rebuild) serviceUpdates.set(key, old);
        continue;
      }
      const fp = fingerprint(s);
      if (old && fingerprint(old).full === fp.full) {
        if (rebuild) serviceUpdates.set(key, old);
        continue;
      }
      serviceUpdates.set(key, deepFreeze(s));
      rememberFingerprint(s, fp);
      contentChanged = true;
      if (!old || fingerprint(old).content !== fp.content) changedServices.add(key);
    }

    const changedEndpoints = new Set<string>();
    const endpointUpdates = new Map<string, readonly Endpoint[] | undefined>();
    for (const key of endpointKeys) {
      const old = prev?.endpoints.get(key);
      if (!this.derived.has(key)) {
        if (!old) continue;
        contentChanged = true;
        changedEndpoints.add(key);
        endpointUpdates.set(key, undefined);
        continue;
      }
      const eps = this.derivedEndpoints.get(key) ?? NO_ENDPOINTS;
      if (old === eps) {
        if (rebuild) endpointUpdates.set(key, old);
        continue;
      }
      const fp = listFingerprint(eps);
      if (old && listFingerprint(old).full === fp.full) {
        if (rebuild) endpointUpdates.set(key, old);
        continue;
      }
      const frozen = deepFreeze(eps);
      rememberListFingerprint(frozen, fp);
      endpointUpdates.set(key, frozen);
      contentChanged = true;
      if (!old || listFingerprint(old).content !== fp.content) changedEndpoints.add(key);
    }

    // The builder's list holds the buckets' own objects (patchProblems takes them out by identity); the snapshot
    // keeps the previous, equal, list when a re-check found the same problems again.
    const problems = prev && (!problemsChanged || sameProblems(prev.problems, this.problems)) ? prev.problems : deepFreeze(this.problems);
    const statuses = states.map((s) => s.status);
    const sources = prev && canonical(prev.sources) === canonical(statuses) ? prev.sources : deepFreeze(statuses.map((s) => ({ ...s })));
    if (prev && (problems !== prev.problems || sources !== prev.sources)) contentChanged = true;

    if (prev && !contentChanged) return prev;

    return Object.freeze({
      version: (prev?.version ?? 0) + 1,
      mesh: prev && !meshChanged ? prev.mesh : deepFreeze({ ...this.mesh }),
      services: PatchedMap.patch(rebuild ? undefined : prev?.services, serviceUpdates),
      endpoints: PatchedMap.patch(rebuild ? undefined : prev?.endpoints, endpointUpdates),
      configs: PatchedMap.patch(rebuild ? undefined : prev?.configs, configUpdates),
      problems,
      sources,
      changes: Object.freeze({ services: changedServices, endpoints: changedEndpoints, routing, full: meshChanged }),
    });
  }
}

/** Where a selector is filed: its namespace and its first label pair in key order (or the namespace alone if empty). */
function selectorBucket(se: ServiceEntryConfig): string {
  const ns = se.metadata.namespace;
  const labels = se.spec.workloadSelector?.labels ?? {};
  const first = Object.keys(labels).sort(compareStrings)[0];
  return first === undefined ? `${ns}\u0000` : `${ns}\u0000${first}\u0000${labels[first]}`;
}

// Problems hold no origin object, so they get their own cache of canonical forms (they are frozen once published).
const problemForms = new WeakMap<ConfigProblem, string>();

function problemForm(p: ConfigProblem): string {
  let f = problemForms.get(p);
  if (f === undefined) {
    f = canonical(p);
    if (Object.isFrozen(p)) problemForms.set(p, f);
  }
  return f;
}

function sameProblems(a: readonly ConfigProblem[], b: readonly ConfigProblem[]): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i] && problemForm(a[i]!) !== problemForm(b[i]!)) return false;
  return true;
}

function sameItems<T>(a: readonly T[], b: readonly T[]): boolean {
  return a === b || (a.length === b.length && a.every((x, i) => x === b[i]));
}

function union<T>(a: Iterable<T>, b: Iterable<T> | undefined): Set<T> {
  const out = new Set(a);
  for (const x of b ?? []) out.add(x);
  return out;
}

function addToMap<V>(m: Map<string, Map<string, V>>, k: string, key: string, v: V): void {
  let inner = m.get(k);
  if (!inner) m.set(k, (inner = new Map()));
  inner.set(key, v);
}

function removeFromMap<V>(m: Map<string, Map<string, V>>, k: string, key: string): void {
  const inner = m.get(k);
  if (!inner) return;
  inner.delete(key);
  if (inner.size === 0) m.delete(k);
}

function addToSet(m: Map<string, Set<string>>, k: string, v: string): void {
  let set = m.get(k);
  if (!set) m.set(k, (set = new Set()));
  set.add(v);
}

function removeFromSet(m: Map<string, Set<string>>, k: string, v: string): void {
  const set = m.get(k);
  if (!set) return;
  set.delete(v);
  if (set.size === 0) m.delete(k);
}

function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
