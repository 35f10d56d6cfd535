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
 * Results are sorted by config key, so endpoint order is deterministic.
 */
export class WorkloadIndex {
  private readonly byNamespace = new Map<string, Indexed[]>();
  private readonly byLabel = new Map<string, Indexed[]>();

  constructor(workloads: Iterable<WorkloadEntryConfig>) {
    const all: Indexed[] = [];
    for (const we of workloads) all.push({ we, key: configKey(we), labels: workloadLabels(we) });
    all.sort((a, b) => compareStrings(a.key, b.key));
    for (const entry of all) {
      const ns = entry.we.metadata.namespace;
      push(this.byNamespace, ns, entry);
      for (const [k, v] of Object.entries(entry.labels)) push(this.byLabel, labelKey(ns, k, v), entry);
    }
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
