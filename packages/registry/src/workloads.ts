// Endpoints of a ServiceEntry: its inline `endpoints`, or the WorkloadEntries its `workloadSelector` picks.
// Istio semantics: a selector only sees WorkloadEntries in the ServiceEntry's own namespace, and matches
// when every selector label is present with the same value (an empty selector matches every workload).
import type { WorkloadEntrySpec } from "./api.js";
import type { ConfigObject, Endpoint, MeshConfig, Origin } from "./model.js";
import { configKey } from "./model.js";
import type { ServiceEntryConfig } from "./services.js";
import { spiffeId } from "./spiffe.js";

export type WorkloadEntryConfig = ConfigObject<"WorkloadEntry">;

/** WorkloadEntries by namespace, each list sorted by config key so endpoint order is deterministic. */
export class WorkloadIndex {
  private readonly byNamespace = new Map<string, WorkloadEntryConfig[]>();

  constructor(workloads: Iterable<WorkloadEntryConfig>) {
    for (const we of workloads) {
      const list = this.byNamespace.get(we.metadata.namespace) ?? [];
      list.push(we);
      this.byNamespace.set(we.metadata.namespace, list);
    }
    for (const list of this.byNamespace.values()) list.sort((a, b) => compareStrings(configKey(a), configKey(b)));
  }

  select(namespace: string, selector: Readonly<Record<string, string>>): WorkloadEntryConfig[] {
    const candidates = this.byNamespace.get(namespace) ?? [];
    return candidates.filter((we) => labelsMatch(workloadLabels(we), selector));
  }
}

/** Istio merges metadata labels over spec labels; the selector matches against the result. */
export function workloadLabels(we: WorkloadEntryConfig): Record<string, string> {
  return { ...(we.spec.labels ?? {}), ...(we.metadata.labels ?? {}) };
}

export function labelsMatch(labels: Readonly<Record<string, string>>, selector: Readonly<Record<string, string>>): boolean {
  for (const [k, v] of Object.entries(selector)) if (labels[k] !== v) return false;
  return true;
}

/** Endpoints for one ServiceEntry: inline ones in declared order, then selected workloads by config key. */
export function endpointsOfServiceEntry(se: ServiceEntryConfig, workloads: WorkloadIndex, mesh: MeshConfig): Endpoint[] {
  const namespace = se.metadata.namespace;
  const out: Endpoint[] = [];
  for (const spec of se.spec.endpoints ?? []) {
    out.push(toEndpoint(spec, spec.labels ?? {}, namespace, se.origin, mesh));
  }
  if (se.spec.workloadSelector) {
    for (const we of workloads.select(namespace, se.spec.workloadSelector.labels ?? {})) {
      out.push(endpointOfWorkload(we, mesh));
    }
  }
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
