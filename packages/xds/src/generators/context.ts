// What the generators read besides the snapshot itself: indexes over the routing objects (DestinationRules,
// VirtualServices, Sidecars), the per-proxy "scope" (which services a proxy sees and how unknown traffic is
// treated), and which services a proxy's own workload serves (its inbound side).
//
// Precedence follows Istio where DESIGN.md is silent:
// - DestinationRule for (proxy namespace, host): a rule in the proxy's namespace, then one in the service's
//   namespace, then one in the root namespace; within a namespace an exact host beats the most specific wildcard.
//   Only rules exported to the proxy's namespace count; a rule with a workloadSelector applies only to the
//   selected workloads of its own namespace.
// - VirtualService for a host: same namespace order, exact host first; only those bound to the `mesh` gateway
//   (no `gateways`, or `gateways` including `mesh`) apply to sidecars and gRPC clients.
// - Sidecar: one in the proxy's namespace whose workloadSelector matches the proxy's labels, else the namespace's
//   selector-less one, else the root namespace's selector-less one.
import type { ConfigObject, Endpoint, RegistrySnapshot, Service } from "@vmpilot/registry";
import { isExportedTo, normalizeExportTo } from "@vmpilot/registry";
import { canonicalAddress } from "../ip.js";
import type { ProxyKind, ProxyView } from "../proxy-view.js";
import type { SdsPaths } from "./tls.js";

/** Istio's default root namespace: mesh-wide Sidecar and DestinationRule defaults live here. */
export const ROOT_NAMESPACE = "istio-system";

export type DestinationRuleConfig = ConfigObject<"DestinationRule">;
export type VirtualServiceConfig = ConfigObject<"VirtualService">;
export type SidecarConfig = ConfigObject<"Sidecar">;

export function labelsMatch(labels: Readonly<Record<string, string>>, selector: Readonly<Record<string, string>> | undefined): boolean {
  if (!selector) return true;
  for (const [k, v] of Object.entries(selector)) if (labels[k] !== v) return false;
  return true;
}

/** Istio host matching: exact, `*`, or `*.suffix` (matching any host ending in `.suffix`). */
export function hostMatches(pattern: string, host: string): boolean {
  if (pattern === host || pattern === "*") return true;
  if (pattern.startsWith("*.")) {
    const suffix = pattern.slice(1);
    if (host.startsWith("*.")) return host.endsWith(suffix) && host.length >= pattern.length;
    return host.endsWith(suffix) && host.length > suffix.length;
  }
  return false;
}

/** Higher is more specific: exact host, then longer wildcards. */
function hostSpecificity(pattern: string, host: string): number {
  if (pattern === host) return Number.MAX_SAFE_INTEGER;
  return pattern.length;
}

function exportToOf(o: { spec: { exportTo?: string[] }; metadata: { namespace: string } }): string[] {
  return normalizeExportTo(o.spec.exportTo, o.metadata.namespace);
}

function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function keyOf(o: ConfigObject): string {
  return `${o.kind}/${o.metadata.namespace}/${o.metadata.name}`;
}

const NO_LABELS: Readonly<Record<string, string>> = Object.freeze({});

/**
 * The rules that may match a host: those naming it exactly plus those with a wildcard pattern, in the rules' own
 * (sorted) order, so a caller that keeps the first of equally good matches picks what a walk over all rules picks.
 */
class HostIndex<T> {
  private readonly exact = new Map<string, number[]>();
  private readonly wildcard: number[] = [];
  private readonly memo = new Map<string, readonly T[]>();

  constructor(
    private readonly rules: readonly T[],
    hostsOf: (rule: T) => readonly string[],
  ) {
    rules.forEach((rule, i) => {
      let wild = false;
      for (const h of hostsOf(rule)) {
        if (h === "*" || h.startsWith("*.")) wild = true;
        else {
          const list = this.exact.get(h) ?? [];
          if (list[list.length - 1] !== i) list.push(i);
          this.exact.set(h, list);
        }
      }
      if (wild) this.wildcard.push(i);
    });
  }

  candidates(host: string): readonly T[] {
    let out = this.memo.get(host);
    if (!out) {
      const idx = [...new Set([...(this.exact.get(host) ?? []), ...this.wildcard])].sort((a, b) => a - b);
      this.memo.set(host, (out = idx.map((i) => this.rules[i]!)));
    }
    return out;
  }
}

/** Indexes over the routing kinds. Depends only on `snapshot.configs`, so it is rebuilt only when routing changed. */
export class RoutingIndex {
  readonly destinationRules: readonly DestinationRuleConfig[];
  readonly virtualServices: readonly VirtualServiceConfig[];
  private readonly sidecarsByNamespace = new Map<string, SidecarConfig[]>();
  /** Label selectors that look at a proxy of one namespace only: Sidecar and DestinationRule workloadSelectors. */
  private readonly namespaceSelectors = new Map<string, Readonly<Record<string, string>>[]>();
  /** Label selectors that look at proxies of any namespace: VirtualService sourceLabels. */
  private readonly meshSelectors: Readonly<Record<string, string>>[] = [];
  /** Gateway selectors: they look at gateway proxies of any namespace. */
  private readonly gatewaySelectors: Readonly<Record<string, string>>[] = [];
  /** Which rules can match a host (asked per scope and service: thousands of times per scope). */
  private readonly drByHost: HostIndex<DestinationRuleConfig>;
  private readonly vsByHost: HostIndex<VirtualServiceConfig>;

  constructor(configs: RegistrySnapshot["configs"]) {
    const drs: DestinationRuleConfig[] = [];
    const vss: VirtualServiceConfig[] = [];
    const nsSelector = (ns: string, labels: Readonly<Record<string, string>> | undefined): void => {
      if (!labels || Object.keys(labels).length === 0) return;
      const list = this.namespaceSelectors.get(ns) ?? [];
      list.push(labels);
      this.namespaceSelectors.set(ns, list);
    };
    for (const c of configs.values()) {
      if (c.kind === "DestinationRule") {
        drs.push(c);
        nsSelector(c.metadata.namespace, c.spec.workloadSelector?.labels);
      } else if (c.kind === "VirtualService") {
        vss.push(c);
        for (const r of [...(c.spec.http ?? []), ...(c.spec.tcp ?? []), ...(c.spec.tls ?? [])])
          for (const m of r.match ?? []) if (m.sourceLabels && Object.keys(m.sourceLabels).length > 0) this.meshSelectors.push(m.sourceLabels);
      } else if (c.kind === "Sidecar") {
        const list = this.sidecarsByNamespace.get(c.metadata.namespace) ?? [];
        list.push(c);
        this.sidecarsByNamespace.set(c.metadata.namespace, list);
        nsSelector(c.metadata.namespace, c.spec.workloadSelector?.labels);
      } else if (c.kind === "Gateway" && c.spec.selector && Object.keys(c.spec.selector).length > 0) this.gatewaySelectors.push(c.spec.selector);
    }
    const byKey = (a: ConfigObject, b: ConfigObject): number => compareStrings(keyOf(a), keyOf(b));
    this.destinationRules = drs.sort(byKey);
    this.virtualServices = vss.sort(byKey);
    this.drByHost = new HostIndex(this.destinationRules, (dr) => [dr.spec.host]);
    this.vsByHost = new HostIndex(this.virtualServices, (vs) => vs.spec.hosts ?? []);
    for (const list of this.sidecarsByNamespace.values()) list.sort(byKey);
  }

  /** The DestinationRule that applies to `host` (declared in `serviceNamespace`) for a proxy in `namespace` with `labels`. */
  destinationRule(namespace: string, labels: Readonly<Record<string, string>>, host: string, serviceNamespace: string): DestinationRuleConfig | undefined {
    const order = [namespace, serviceNamespace, ROOT_NAMESPACE];
    for (const ns of order) {
      let best: DestinationRuleConfig | undefined;
      let bestScore = -1;
      for (const dr of this.drByHost.candidates(host)) {
        if (dr.metadata.namespace !== ns || !hostMatches(dr.spec.host, host)) continue;
        if (dr.spec.workloadSelector && (ns !== namespace || !labelsMatch(labels, dr.spec.workloadSelector.labels))) continue;
        if (!isExportedTo(exportToOf(dr), namespace)) continue;
        // A selector-bearing rule is more specific than a namespace-wide one for the same host.
        const score = hostSpecificity(dr.spec.host, host) * 2 + (dr.spec.workloadSelector ? 1 : 0);
        if (score > bestScore) {
          best = dr;
          bestScore = score;
        }
      }
      if (best) return best;
    }
    return undefined;
  }

  /** The VirtualService bound to the mesh that routes `host` for a proxy in `namespace`. */
  virtualService(namespace: string, host: string, serviceNamespace: string): VirtualServiceConfig | undefined {
    let best: VirtualServiceConfig | undefined;
    let bestScore = -1;
    for (const vs of this.vsByHost.candidates(host)) {
      if (!isExportedTo(exportToOf(vs), namespace)) continue;
      const gateways = vs.spec.gateways;
      if (gateways && gateways.length > 0 && !gateways.includes("mesh")) continue;
      for (const pattern of vs.spec.hosts ?? []) {
        if (!hostMatches(pattern, host)) continue;
        const nsRank = vs.metadata.namespace === namespace ? 2 : vs.metadata.namespace === serviceNamespace ? 1 : 0;
        const score = hostSpecificity(pattern, host) * 4 + nsRank;
        if (score > bestScore) {
          best = vs;
          bestScore = score;
        }
      }
    }
    return best;
  }

  /**
   * The part of a proxy's labels that config looks at: the union of the selectors that select it (Sidecar and
   * DestinationRule workloadSelectors of its namespace, VirtualService sourceLabels, and for gateways the Gateway
   * selectors). These are the only label matches the generators make, and each gives the same answer on the
   * effective labels as on all of them: a selector that matches has all its pairs in the union; one that does
   * not has a pair (k, v) with labels[k] !== v, and the union, a subset of the labels, has no such pair either.
   * So proxies with equal effective labels (and equal other scope facts) get equal config, and proxies that no
   * selector tells apart share one scope whatever their labels.
   */
  effectiveLabels(kind: ProxyKind, namespace: string, labels: Readonly<Record<string, string>>): Readonly<Record<string, string>> {
    let out: Record<string, string> | undefined;
    const take = (selectors: readonly Readonly<Record<string, string>>[] | undefined): void => {
      for (const sel of selectors ?? []) if (labelsMatch(labels, sel)) out = Object.assign(out ?? {}, sel);
    };
    take(this.namespaceSelectors.get(namespace));
    take(this.meshSelectors);
    if (kind === "gateway") take(this.gatewaySelectors);
    return out ?? NO_LABELS;
  }

  sidecar(namespace: string, labels: Readonly<Record<string, string>>): SidecarConfig | undefined {
    const local = this.sidecarsByNamespace.get(namespace) ?? [];
    const selected = local.find((s) => s.spec.workloadSelector && labelsMatch(labels, s.spec.workloadSelector.labels));
    if (selected) return selected;
    const nsDefault = local.find((s) => !s.spec.workloadSelector);
    if (nsDefault) return nsDefault;
    return (this.sidecarsByNamespace.get(ROOT_NAMESPACE) ?? []).find((s) => !s.spec.workloadSelector);
  }
}

/** `ns/host` egress hosts of a Sidecar: `*` / `.` / `~` namespaces, `*`, `*.suffix` or exact hosts. */
export function sidecarAllows(sidecar: SidecarConfig, service: Service): boolean {
  const egress = sidecar.spec.egress;
  if (!egress || egress.length === 0) return true;
  for (const listener of egress) {
    for (const entry of listener.hosts) {
      const slash = entry.indexOf("/");
      const ns = slash >= 0 ? entry.slice(0, slash) : "*";
      const host = slash >= 0 ? entry.slice(slash + 1) : entry;
      if (ns === "~") continue;
      const nsOk = ns === "*" || (ns === "." ? sidecar.metadata.namespace : ns) === service.namespace;
      if (nsOk && hostMatches(host, service.hostname)) return true;
    }
  }
  return false;
}

/** The facts of a proxy view that decide its outbound config; proxies with equal scope keys share it. */
export interface Scope {
  key: string;
  kind: ProxyKind;
  namespace: string;
  labels: Readonly<Record<string, string>>;
  interceptionMode: ProxyView["interceptionMode"];
  sidecar?: SidecarConfig;
  outboundPolicy: "ALLOW_ANY" | "REGISTRY_ONLY";
  /** Visible services, one per hostname, sorted by hostname. */
  services: readonly Service[];
  serviceKeys: ReadonlySet<string>;
  /** Envoy: the agent's file-based SDS paths (node metadata SDS_PATHS), when it announced them. */
  sdsPaths?: SdsPaths;
  /** Gateways: the bootstrap cluster of the agent's SDS server for credentialName secrets (CREDENTIAL_SDS_CLUSTER). */
  credentialSdsCluster?: string;
}

/** The agent's file-based SDS paths, for Envoy views that announced them (else secrets come over ADS). */
export function sdsPathsOf(view: ProxyView): SdsPaths | undefined {
  return view.kind === "grpc" ? undefined : view.sdsPaths;
}

export function canonicalLabels(labels: Readonly<Record<string, string>>): string {
  return Object.keys(labels)
    .sort()
    .map((k) => `${k}=${labels[k]}`)
    .join(",");
}

/**
 * Proxies with equal scope keys get equal outbound config. With `routing`, only the labels some selector looks at
 * count (RoutingIndex.effectiveLabels), so a namespace's proxies share one scope unless a Sidecar, DestinationRule,
 * VirtualService or Gateway tells them apart; without it every label counts (finer, equally correct).
 */
export function scopeKey(view: ProxyView, routing?: RoutingIndex): string {
  const mode = view.kind === "sidecar" ? view.interceptionMode : "";
  const sds = sdsPathsOf(view);
  const creds = view.kind === "gateway" ? (view.credentialSdsCluster ?? "") : "";
  const labels = routing ? routing.effectiveLabels(view.kind, view.namespace, view.labels) : view.labels;
  return `${view.kind}|${view.namespace}|${mode}|${canonicalLabels(labels)}|${sds ? `${sds.default}|${sds.ROOTCA}` : ""}|${creds}`;
}

/**
 * Whether a proxy of this scope may see `service`: exported to its namespace and, when a Sidecar applies,
 * listed in its egress hosts. (gRPC clients additionally never see DYNAMIC_DNS services: see buildScope.)
 */
export function serviceInScope(service: Service, namespace: string, sidecar: SidecarConfig | undefined): boolean {
  if (!isExportedTo(service.exportTo, namespace)) return false;
  return !sidecar || sidecarAllows(sidecar, service);
}

/**
 * When two visible services share a hostname (same host declared in two namespaces), one wins, as in Istio:
 * the proxy's own namespace, else the first namespace in lexical order. Cluster and virtual host names carry
 * only the hostname, so two would collide.
 */
function preferred(a: Service, b: Service, namespace: string): Service {
  if (a.namespace === namespace) return a;
  if (b.namespace === namespace) return b;
  return compareStrings(a.namespace, b.namespace) <= 0 ? a : b;
}

export function buildScope(snapshot: RegistrySnapshot, routing: RoutingIndex, view: ProxyView): Scope {
  // The scope carries only the labels config looks at: it is shared by every proxy with the same ones.
  const labels = routing.effectiveLabels(view.kind, view.namespace, view.labels);
  const sidecar = routing.sidecar(view.namespace, labels);
  const byHost = new Map<string, Service>();
  for (const s of snapshot.services.values()) {
    if (!serviceInScope(s, view.namespace, sidecar)) continue;
    // @grpc/grpc-js-xds NACKs dynamic forward proxy clusters (it takes EDS, LOGICAL_DNS and aggregate only).
    if (view.kind === "grpc" && s.resolution === "DYNAMIC_DNS") continue;
    const other = byHost.get(s.hostname);
    byHost.set(s.hostname, other ? preferred(other, s, view.namespace) : s);
  }
  const services = [...byHost.values()].sort((a, b) => compareStrings(a.hostname, b.hostname));
  const scope: Scope = {
    key: scopeKey(view, routing),
    kind: view.kind,
    namespace: view.namespace,
    labels,
    interceptionMode: view.interceptionMode,
    outboundPolicy: sidecar?.spec.outboundTrafficPolicy?.mode ?? snapshot.mesh.outboundTrafficPolicy,
    services,
    serviceKeys: new Set(services.map((s) => s.key)),
  };
  if (sidecar) scope.sidecar = sidecar;
  const sds = sdsPathsOf(view);
  if (sds) scope.sdsPaths = sds;
  if (view.kind === "gateway" && view.credentialSdsCluster) scope.credentialSdsCluster = view.credentialSdsCluster;
  return scope;
}

// ---------------------------------------------------------------------------------------------------------
// Inbound: which services the proxy's own workload serves.

/** Endpoint addresses and workload keys -> service keys, maintained incrementally by the cache. */
export class InboundIndex {
  private readonly byAddress = new Map<string, Set<string>>();
  private readonly byWorkload = new Map<string, Set<string>>();
  private readonly indexed = new Map<string, readonly Endpoint[]>();

  constructor(endpoints?: RegistrySnapshot["endpoints"]) {
    if (endpoints) for (const [key, eps] of endpoints) this.set(key, eps);
  }

  /** Replaces what is indexed for one service (undefined: the service is gone). */
  set(serviceKey: string, eps: readonly Endpoint[] | undefined): void {
    const old = this.indexed.get(serviceKey);
    if (old === eps) return;
    if (old) {
      for (const ep of old) {
        this.byAddress.get(canonicalAddress(ep.address))?.delete(serviceKey);
        if (ep.workload) this.byWorkload.get(ep.workload)?.delete(serviceKey);
      }
    }
    if (!eps) {
      this.indexed.delete(serviceKey);
      return;
    }
    this.indexed.set(serviceKey, eps);
    for (const ep of eps) {
      add(this.byAddress, canonicalAddress(ep.address), serviceKey);
      if (ep.workload) add(this.byWorkload, ep.workload, serviceKey);
    }
  }

  /** Keys of the services with an endpoint at one of `ips` (canonical, as ProxyView has them) or backed by the named workload. */
  servicesOf(ips: readonly string[], workloadKey: string | undefined): string[] {
    const out = new Set<string>();
    for (const ip of ips) for (const k of this.byAddress.get(ip) ?? []) out.add(k);
    if (workloadKey) for (const k of this.byWorkload.get(workloadKey) ?? []) out.add(k);
    return [...out].sort();
  }
}

function add(m: Map<string, Set<string>>, k: string, v: string): void {
  let s = m.get(k);
  if (!s) m.set(k, (s = new Set()));
  s.add(v);
}

export function workloadKeyOf(view: ProxyView): string | undefined {
  return view.workloadName ? `WorkloadEntry/${view.namespace}/${view.workloadName}` : undefined;
}

/** An inbound port of the proxy's workload: the port traffic arrives on, and the service port it serves. */
export interface InboundPort {
  port: number;
  protocol: string;
  serviceKeys: string[];
}

/** The proxy's own endpoints in the services it serves, by the port they listen on. */
export function inboundPorts(snapshot: RegistrySnapshot, index: InboundIndex, view: ProxyView): InboundPort[] {
  if (view.kind !== "sidecar") return [];
  const wk = workloadKeyOf(view);
  const ips = new Set(view.ips);
  const byPort = new Map<number, InboundPort>();
  for (const key of index.servicesOf(view.ips, wk)) {
    const service = snapshot.services.get(key);
    if (!service) continue;
    for (const ep of snapshot.endpoints.get(key) ?? []) {
      if (!ips.has(canonicalAddress(ep.address)) && !(wk && ep.workload === wk)) continue;
      for (const p of service.ports) {
        const port = endpointPort(ep, p);
        if (port === undefined) continue;
        const entry = byPort.get(port) ?? { port, protocol: p.protocol, serviceKeys: [] };
        if (!entry.serviceKeys.includes(key)) entry.serviceKeys.push(key);
        byPort.set(port, entry);
      }
    }
  }
  return [...byPort.values()].sort((a, b) => a.port - b.port);
}

/**
 * An endpoint's port for a service port: its own mapping by port name, else targetPort, else the port number;
 * undefined when the endpoint does not serve that service port at all.
 */
export function endpointPort(ep: Endpoint, port: { name: string; number: number; targetPort?: number }): number | undefined {
  const own = ep.ports[port.name];
  if (own !== undefined) return own;
  // A Consul instance serves only the port it was registered with (the only name its map holds); the service's other
  // ports belong to other instances. WorkloadEntries and inline endpoints follow Istio: unmapped = the service port.
  if (ep.origin.type === "consul") return undefined;
  return port.targetPort ?? port.number;
}

/** Everything a generator reads: the snapshot plus its indexes. */
export interface GenContext {
  snapshot: RegistrySnapshot;
  routing: RoutingIndex;
  inbound: InboundIndex;
}

export function contextOf(snapshot: RegistrySnapshot): GenContext {
  return { snapshot, routing: new RoutingIndex(snapshot.configs), inbound: new InboundIndex(snapshot.endpoints) };
}
