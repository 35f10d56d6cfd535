// Endpoints of a ServiceEntry: its inline `endpoints`, or the WorkloadEntries its `workloadSelector` picks.
// Istio semantics: a selector only sees WorkloadEntries in the ServiceEntry's own namespace, and matches
// when every selector label is present with the same value (an empty selector matches every workload).
import type { WorkloadEntrySpec } from "./api.js";
import type { ConfigObject, Endpoint, MeshConfig, Origin } from "./model.js";
import { configKey } from "./model.js";
import type { ServiceEntryConfig } from "./services.js";
import { spiffeId } from "./spiffe.js";

export type WorkloadEntryConfig = ConfigObject<"WorkloadEntry">;

/**
 * WorkloadEntries by namespace and by label pair, so a selector looks at the workloads carrying one of its
 * labels rather than at every workload of the namespace (thousands of VMs behind hundreds of services).
 * Lists are kept sorted by config key, so endpoint order is deterministic; `add` and `remove` keep them so,
 * for the incremental snapshot build (one WorkloadEntry edit is two binary searches per label, not a re-index).
 */
export class WorkloadIndex {
  private readonly byNamespace = new Map<string, Indexed[]>();
  private readonly byLabel = new Map<string, Indexed[]>();

  constructor(workloads: Iterable<WorkloadEntryConfig> = []) {
    const all: Indexed[] = [];
    for (const we of workloads) all.push(indexed(we));
    all.sort((a, b) => compareStrings(a.key, b.key));
    for (const entry of all) {
      const ns = entry.we.metadata.namespace;
      push(this.byNamespace, ns, entry);
      for (const [k, v] of Object.entries(entry.labels)) push(this.byLabel, labelKey(ns, k, v), entry);
    }
  }

  /** Adds a workload (its config key must not be in the index already). */
  add(we: WorkloadEntryConfig): void {
    const entry = indexed(we);
    const ns = we.metadata.namespace;
    insertSorted(this.byNamespace, ns, entry);
    for (const [k, v] of Object.entries(entry.labels)) insertSorted(this.byLabel, labelKey(ns, k, v), entry);
  }

  /** Removes a workload added earlier (the same object). */
  remove(we: WorkloadEntryConfig): void {
    const key = configKey(we);
    const ns = we.metadata.namespace;
    removeSorted(this.byNamespace, ns, key, we);
    for (const [k, v] of Object.entries(workloadLabels(we))) removeSorted(this.byLabel, labelKey(ns, k, v), key, we);
  }

  select(namespace: string, selector: Readonly<Record<string, string>>): WorkloadEntryConfig[] {
    let candidates = this.byNamespace.get(namespace) ?? [];
    for (const [k, v] of Object.entries(selector)) {
      const withLabel = this.byLabel.get(labelKey(namespace, k, v)) ?? [];
      if (withLabel.length < candidates.length) candidates = withLabel;
    }
    return candidates.filter((e) => labelsMatch(e.labels, selector)).map((e) => e.we);
  }
}

function indexed(we: WorkloadEntryConfig): Indexed {
  return { we, key: configKey(we), labels: workloadLabels(we) };
}

/** First position whose key is not below `key`. */
function lowerBound(list: readonly Indexed[], key: string): number {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (list[mid]!.key < key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function insertSorted(m: Map<string, Indexed[]>, k: string, entry: Indexed): void {
  const list = m.get(k);
  if (!list) {
    m.set(k, [entry]);
    return;
  }
  list.splice(lowerBound(list, entry.key), 0, entry);
}

function removeSorted(m: Map<string, Indexed[]>, k: string, key: string, we: WorkloadEntryConfig): void {
  const list = m.get(k);
  if (!list) return;
  for (let i = lowerBound(list, key); i < list.length && list[i]!.key === key; i++) {
    if (list[i]!.we !== we) continue;
    list.splice(i, 1);
    if (list.length === 0) m.delete(k);
    return;
  }
}

interface Indexed {
  we: WorkloadEntryConfig;
  key: string;
  labels: Record<string, string>;
}

function labelKey(namespace: string, key: string, value: string): string {
  return `${namespace}\u0000${key}\u0000${value}`;
}

function push<K, V>(m: Map<K, V[]>, k: K, v: V): void {
  const list = m.get(k);
  if (list) list.push(v);
  else m.set(k, [v]);
}

/** Istio merges metadata labels over spec labels; the selector matches against the result. */
export function workloadLabels(we: WorkloadEntryConfig): Record<string, string> {
  return { ...(we.spec.labels ?? {}), ...(we.metadata.labels ?? {}) };
}

export function labelsMatch(labels: Readonly<Record<string, string>>, selector: Readonly<Record<string, string>>): boolean {
  for (const [k, v] of Object.entries(selector)) if (labels[k] !== v) return false;
  return true;
}

/** The WorkloadEntries a ServiceEntry's workloadSelector picks (none without a selector). */
export function selectedWorkloads(se: ServiceEntryConfig, workloads: WorkloadIndex): WorkloadEntryConfig[] {
  const selector = se.spec.workloadSelector;
  return selector ? workloads.select(se.metadata.namespace, selector.labels ?? {}) : [];
}

/** Endpoints for one ServiceEntry: inline ones in declared order, then the selected workloads in the given order. */
export function endpointsOfServiceEntry(se: ServiceEntryConfig, selected: readonly WorkloadEntryConfig[], mesh: MeshConfig): Endpoint[] {
  const namespace = se.metadata.namespace;
  const out: Endpoint[] = [];
  for (const spec of se.spec.endpoints ?? []) {
    out.push(toEndpoint(spec, spec.labels ?? {}, namespace, se.origin, mesh));
  }
  for (const we of selected) out.push(endpointOfWorkload(we, mesh));
  return out;
}

export function endpointOfWorkload(we: WorkloadEntryConfig, mesh: MeshConfig): Endpoint {
  const ep = toEndpoint(we.spec, workloadLabels(we), we.metadata.namespace, we.origin, mesh);
  ep.workload = configKey(we);
  if (we.status?.health) ep.health = we.status.health;
  return ep;
}

function toEndpoint(
  spec: WorkloadEntrySpec,
  labels: Record<string, string>,
  namespace: string,
  origin: Origin,
  mesh: MeshConfig,
): Endpoint {
  const ep: Endpoint = {
    address: spec.address ?? "",
    ports: { ...(spec.ports ?? {}) },
    labels: { ...labels },
    health: "HEALTHY",
    namespace,
    origin,
  };
  if (spec.network !== undefined) ep.network = spec.network;
  if (spec.locality !== undefined) ep.locality = spec.locality;
  if (spec.weight !== undefined) ep.weight = spec.weight;
  if (spec.serviceAccount) {
    ep.serviceAccount = spec.serviceAccount;
    ep.spiffeId = spiffeId(mesh.trustDomain, namespace, spec.serviceAccount);
  }
  return ep;
}

function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
