// exportTo semantics (Istio): `*` = every namespace, `.` = the owner's own namespace, else namespace names.
// An empty or absent exportTo means `*`.
import type { RegistrySnapshot, Service } from "./model.js";

/** Replaces `.` by the owner's namespace; absent/empty -> [`*`]. */
export function normalizeExportTo(exportTo: readonly string[] | undefined, ownerNamespace: string): string[] {
  if (!exportTo || exportTo.length === 0) return ["*"];
  return [...new Set(exportTo.map((e) => (e === "." ? ownerNamespace : e)))].sort();
}

/** `exportTo` must already be normalised. */
export function isExportedTo(exportTo: readonly string[], viewerNamespace: string): boolean {
  return exportTo.includes("*") || exportTo.includes(viewerNamespace);
}

/** Services a proxy in `namespace` may see, in a stable order (hostname, then namespace). */
export function visibleServices(snapshot: RegistrySnapshot, namespace: string): Service[] {
  const out: Service[] = [];
  for (const s of snapshot.services.values()) if (isExportedTo(s.exportTo, namespace)) out.push(s);
  return out.sort((a, b) => (a.hostname === b.hostname ? a.namespace.localeCompare(b.namespace) : a.hostname.localeCompare(b.hostname)));
}
