// The proxies a config change is judged against. A diff cannot know the fleet, so it takes one representative
// per kind of proxy that the config itself distinguishes: any sidecar and any gRPC client of each namespace,
// the sidecar of each distinct WorkloadEntry label set (with its address, so its inbound side shows), the VMs a
// WorkloadGroup would auto-register, gateways the Gateways select, plus whatever `--proxy` names.
import type { AnyConfig, ConfigObject, RegistrySnapshot } from "@vmpilot/registry";
import type { ProxyKind, ProxyView } from "../proxy-view.js";

export interface DiffView {
  view: ProxyView;
  /** One line naming what this view stands for, e.g. `sidecar in shop {app=catalog,version=v1}`. */
  label: string;
  /** The config objects it represents (WorkloadEntries, a WorkloadGroup, Gateways), `Kind ns/name`; empty for a namespace's stand-in. */
  represents: string[];
}

export function formatLabels(labels: Readonly<Record<string, string>>): string {
  const keys = Object.keys(labels).sort();
  return keys.length === 0 ? "" : `{${keys.map((k) => `${k}=${labels[k]}`).join(",")}}`;
}

const KIND_WORDS: Record<ProxyKind, string> = { sidecar: "sidecar", grpc: "gRPC client", gateway: "gateway" };

function describe(kind: ProxyKind, namespace: string, labels: Readonly<Record<string, string>>): string {
  const l = formatLabels(labels);
  return `${KIND_WORDS[kind]} in ${namespace}${l ? ` ${l}` : ""}`;
}

/** Views with the same identity (kind, namespace, labels, service account, addresses) get the same outcome. */
function viewKey(v: ProxyView): string {
  return [v.kind, v.namespace, formatLabels(v.labels), v.serviceAccount ?? "", v.ips.join(","), v.workloadName ?? ""].join("|");
}

function makeView(kind: ProxyKind, namespace: string, labels: Record<string, string>, extra: { ip?: string; serviceAccount?: string; workloadName?: string } = {}): ProxyView {
  const name = extra.workloadName ?? `vmpilot-diff-${kind}`;
  const id = kind === "grpc" ? `${name}.${namespace}` : `${kind === "gateway" ? "router" : "sidecar"}~${extra.ip ?? "0.0.0.0"}~${name}.${namespace}~${namespace}.svc.cluster.local`;
  const view: ProxyView = {
    id,
    kind,
    namespace,
    labels,
    ips: extra.ip ? [extra.ip] : [],
    interceptionMode: kind === "sidecar" ? "REDIRECT" : "NONE",
  };
  if (extra.serviceAccount) view.serviceAccount = extra.serviceAccount;
  if (extra.workloadName) view.workloadName = extra.workloadName;
  return view;
}

function ofKind<K extends AnyConfig["kind"]>(snaps: readonly RegistrySnapshot[], kind: K): ConfigObject<K>[] {
  const byKey = new Map<string, ConfigObject<K>>();
  // The newer snapshot's version of an object wins (it is the one a reviewer is judging).
  for (const s of snaps) for (const [k, o] of s.configs) if (o.kind === kind) byKey.set(k, o as ConfigObject<K>);
  return [...byKey.values()].sort((a, b) => cmp(a.metadata.namespace, b.metadata.namespace) || cmp(a.metadata.name, b.metadata.name));
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Every namespace either config mentions: objects' own, services', and those named in exportTo. */
export function namespacesOf(snaps: readonly RegistrySnapshot[]): string[] {
  const out = new Set<string>();
  for (const s of snaps) {
    for (const o of s.configs.values()) out.add(o.metadata.namespace);
    for (const svc of s.services.values()) {
      out.add(svc.namespace);
      for (const e of svc.exportTo) if (e !== "*") out.add(e);
    }
  }
  return [...out].sort();
}

/**
 * The default views for comparing `before` and `after`, in a stable order: per namespace a sidecar and a gRPC
 * client without labels, then one sidecar per (namespace, labels, service account) of the WorkloadEntries, one per
 * WorkloadGroup whose VMs no WorkloadEntry already stands for, and one gateway per Gateway selector.
 */
export function defaultViews(before: RegistrySnapshot, after: RegistrySnapshot): DiffView[] {
  const snaps = [before, after];
  const out: DiffView[] = [];
  for (const ns of namespacesOf(snaps)) {
    out.push({ view: makeView("sidecar", ns, {}), label: describe("sidecar", ns, {}), represents: [] });
    out.push({ view: makeView("grpc", ns, {}), label: describe("grpc", ns, {}), represents: [] });
  }

  // One sidecar per label set. Its address and name are those of the first such WorkloadEntry present in both
  // configs (else in the new one, else the old one), so the inbound side it shows is one that exists.
  const inBoth = (key: string) => before.configs.has(key) && after.configs.has(key);
  const groups = new Map<string, ConfigObject<"WorkloadEntry">[]>();
  for (const we of ofKind(snaps, "WorkloadEntry")) {
    const k = `${we.metadata.namespace}|${formatLabels(we.spec.labels ?? {})}|${we.spec.serviceAccount ?? ""}`;
    const list = groups.get(k);
    if (list) list.push(we);
    else groups.set(k, [we]);
  }
  const covered = new Map<string, DiffView>();
  for (const [k, list] of groups) {
    const rep =
      list.find((w) => inBoth(`WorkloadEntry/${w.metadata.namespace}/${w.metadata.name}`)) ??
      list.find((w) => after.configs.has(`WorkloadEntry/${w.metadata.namespace}/${w.metadata.name}`)) ??
      list[0]!;
    const labels = { ...(rep.spec.labels ?? {}) };
    const view = makeView("sidecar", rep.metadata.namespace, labels, {
      ...(rep.spec.address ? { ip: rep.spec.address } : {}),
      ...(rep.spec.serviceAccount ? { serviceAccount: rep.spec.serviceAccount } : {}),
      workloadName: rep.metadata.name,
    });
    const d: DiffView = {
      view,
      label: describe("sidecar", rep.metadata.namespace, labels),
      represents: list.map((w) => `WorkloadEntry ${w.metadata.namespace}/${w.metadata.name}`),
    };
    covered.set(k, d);
    out.push(d);
  }

  // Auto-registered VMs: no address yet, but their labels and service account pick DestinationRules and Sidecars.
  for (const wg of ofKind(snaps, "WorkloadGroup")) {
    const labels = { ...(wg.spec.metadata?.labels ?? {}) };
    const sa = wg.spec.template.serviceAccount;
    const k = `${wg.metadata.namespace}|${formatLabels(labels)}|${sa ?? ""}`;
    const ref = `WorkloadGroup ${wg.metadata.namespace}/${wg.metadata.name}`;
    const existing = covered.get(k);
    if (existing) {
      existing.represents.push(ref);
      continue;
    }
    const d: DiffView = {
      view: makeView("sidecar", wg.metadata.namespace, labels, sa ? { serviceAccount: sa } : {}),
      label: describe("sidecar", wg.metadata.namespace, labels),
      represents: [ref],
    };
    covered.set(k, d);
    out.push(d);
  }

  const gateways = new Map<string, DiffView>();
  for (const gw of ofKind(snaps, "Gateway")) {
    const labels = { ...(gw.spec.selector ?? {}) };
    const k = `${gw.metadata.namespace}|${formatLabels(labels)}`;
    const ref = `Gateway ${gw.metadata.namespace}/${gw.metadata.name}`;
    const existing = gateways.get(k);
    if (existing) existing.represents.push(ref);
    else gateways.set(k, { view: makeView("gateway", gw.metadata.namespace, labels), label: describe("gateway", gw.metadata.namespace, labels), represents: [ref] });
  }
  out.push(...gateways.values());
  return disambiguate(out);
}

/** Two label sets that differ only in service account would print alike: name the account then. */
function disambiguate(views: DiffView[]): DiffView[] {
  const count = new Map<string, number>();
  for (const v of views) count.set(v.label, (count.get(v.label) ?? 0) + 1);
  for (const v of views) if (count.get(v.label)! > 1 && v.view.serviceAccount) v.label += ` as ${v.view.serviceAccount}`;
  return views;
}

export class ProxySpecError extends Error {}

const NAME = /^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$/;

/**
 * `--proxy [KIND:]NAMESPACE[/KEY=VALUE,...]`: KIND is sidecar (default), grpc or gateway.
 * e.g. `shop`, `grpc:shop`, `shop/app=catalog,version=v2`.
 */
export function parseProxySpec(spec: string): DiffView {
  let rest = spec.trim();
  let kind: ProxyKind = "sidecar";
  const colon = /^(sidecar|grpc|gateway):/.exec(rest);
  if (colon) {
    kind = colon[1] as ProxyKind;
    rest = rest.slice(colon[0].length);
  }
  const slash = rest.indexOf("/");
  const ns = slash < 0 ? rest : rest.slice(0, slash);
  if (!NAME.test(ns)) throw new ProxySpecError(`--proxy ${spec}: expected [sidecar:|grpc:|gateway:]NAMESPACE[/KEY=VALUE,...], and '${ns}' is not a namespace name`);
  const labels: Record<string, string> = {};
  if (slash >= 0) {
    for (const pair of rest.slice(slash + 1).split(",")) {
      const eq = pair.indexOf("=");
      const key = eq < 0 ? "" : pair.slice(0, eq).trim();
      if (!key) throw new ProxySpecError(`--proxy ${spec}: label '${pair}' is not KEY=VALUE`);
      labels[key] = pair.slice(eq + 1).trim();
    }
  }
  return { view: makeView(kind, ns, labels), label: describe(kind, ns, labels), represents: ["--proxy"] };
}

/** Default and explicit views without duplicates (an explicit one equal to a default one only marks it). */
export function mergeViews(views: readonly DiffView[]): DiffView[] {
  const byKey = new Map<string, DiffView>();
  for (const v of views) {
    const k = viewKey(v.view);
    const existing = byKey.get(k);
    if (existing) existing.represents.push(...v.represents.filter((r) => !existing.represents.includes(r)));
    else byKey.set(k, { ...v, represents: [...v.represents] });
  }
  return [...byKey.values()];
}
