// ServiceEntry -> Services: one Service per host, as Istio models it (a ServiceEntry with three hosts is three
// services sharing ports, resolution, location and endpoints).
import type { ConfigObject, Service } from "./model.js";
import { configKey } from "./model.js";
import { normalizeExportTo } from "./visibility.js";

export type ServiceEntryConfig = ConfigObject<"ServiceEntry">;

export function serviceKey(namespace: string, hostname: string): string {
  return `${namespace}/${hostname}`;
}

/** The Services one ServiceEntry declares, in the order of its `hosts` (duplicates dropped). */
export function servicesOfServiceEntry(se: ServiceEntryConfig): Service[] {
  const { namespace } = se.metadata;
  const spec = se.spec;
  const out: Service[] = [];
  for (const hostname of new Set(spec.hosts)) {
    const service: Service = {
      key: serviceKey(namespace, hostname),
      hostname,
      namespace,
      addresses: [...(spec.addresses ?? [])],
      ports: (spec.ports ?? []).map((p) => ({ ...p })),
      // The parser applies Istio's defaults; these fallbacks only matter for hand-built objects.
      resolution: spec.resolution ?? "NONE",
      location: spec.location ?? "MESH_EXTERNAL",
      exportTo: normalizeExportTo(spec.exportTo, namespace),
      subjectAltNames: [...(spec.subjectAltNames ?? [])],
      configKey: configKey(se),
      origin: se.origin,
    };
    if (spec.workloadSelector) service.workloadSelector = { ...spec.workloadSelector.labels };
    out.push(service);
  }
  return out;
}
