// Which Gateways a gateway proxy serves, and which VirtualServices (and which of their rules) are bound to them.
//
// Istio's rules, kept so that configs written for Istio mean the same here:
// - A gateway proxy serves every Gateway, in any namespace, whose `spec.selector` labels are all among the proxy's
//   labels (Istio's default; PILOT_SCOPE_GATEWAY_TO_NAMESPACE=false). A Gateway without a selector matches every
//   gateway proxy, as in Istio.
// - A VirtualService names gateways in `gateways` (and per match in `match[].gateways`) as `ns/name`, `./name`
//   (its own namespace), a bare `name` (its own namespace, NOT the Gateway's: the ServiceEntry reference's
//   egress example, a VirtualService in `egress` naming `istio-egressgateway` from `istio-system`, does not bind
//   in Istio either), or the legacy `name.ns[.svc.cluster.local]`. `mesh` is the sidecars; a VirtualService
//   without `gateways` is bound to `mesh` only.
// - A gateway proxy sees only VirtualServices exported to its own namespace.
import type { ConfigObject, Server } from "@vmpilot/registry";
import { isExportedTo, normalizeExportTo } from "@vmpilot/registry";
import type { GenContext, Scope, VirtualServiceConfig } from "./context.js";
import { hostMatches, labelsMatch } from "./context.js";

export type GatewayConfig = ConfigObject<"Gateway">;

/** The reserved gateway name of the sidecars. */
export const MESH_GATEWAY = "mesh";

/** `ns/name` of a gateway reference written in an object of `namespace` (Istio's resolveGatewayName). */
export function resolveGatewayName(ref: string, namespace: string): string {
  if (ref === MESH_GATEWAY) return ref;
  const slash = ref.indexOf("/");
  if (slash >= 0) return ref.slice(0, slash) === "." ? `${namespace}/${ref.slice(slash + 1)}` : ref;
  const dot = ref.indexOf(".");
  if (dot < 0) return `${namespace}/${ref}`;
  // Legacy FQDN form name.ns.svc.cluster.local (or name.ns).
  const rest = ref.slice(dot + 1);
  const nsEnd = rest.indexOf(".");
  return `${nsEnd < 0 ? rest : rest.slice(0, nsEnd)}/${ref.slice(0, dot)}`;
}

/** Whether a `gateways` list written in `namespace` names `gateway` (`mesh` or `ns/name`). Empty/absent = mesh. */
export function namesGateway(refs: readonly string[] | undefined, namespace: string, gateway: string): boolean {
  if (!refs || refs.length === 0) return gateway === MESH_GATEWAY;
  return refs.some((r) => resolveGatewayName(r, namespace) === gateway);
}

export function gatewayKey(gw: GatewayConfig): string {
  return `${gw.metadata.namespace}/${gw.metadata.name}`;
}

/** One server of one selected Gateway. */
export interface BoundServer {
  gateway: GatewayConfig;
  /** `ns/name` of the Gateway. */
  key: string;
  server: Server;
  /** Position of the server in the Gateway (stable names when a server has no name). */
  index: number;
}

const selectedMemo = new WeakMap<Scope, BoundServer[]>();

/** The servers of every Gateway selecting this gateway proxy, by Gateway key then server order. */
export function selectedServers(ctx: GenContext, scope: Scope): BoundServer[] {
  const memo = selectedMemo.get(scope);
  if (memo) return memo;
  const gateways: GatewayConfig[] = [];
  for (const c of ctx.snapshot.configs.values()) {
    if (c.kind === "Gateway" && labelsMatch(scope.labels, c.spec.selector)) gateways.push(c);
  }
  gateways.sort((a, b) => (gatewayKey(a) < gatewayKey(b) ? -1 : gatewayKey(a) > gatewayKey(b) ? 1 : 0));
  const out: BoundServer[] = [];
  for (const gateway of gateways) gateway.spec.servers.forEach((server, index) => out.push({ gateway, key: gatewayKey(gateway), server, index }));
  selectedMemo.set(scope, out);
  return out;
}

/** VirtualServices bound to `gateway` (`ns/name`) and exported to the proxy's namespace, in key order. */
export function virtualServicesFor(ctx: GenContext, scope: Scope, gateway: string): VirtualServiceConfig[] {
  return ctx.routing.virtualServices.filter(
    (vs) => isExportedTo(normalizeExportTo(vs.spec.exportTo, vs.metadata.namespace), scope.namespace) && namesGateway(vs.spec.gateways, vs.metadata.namespace, gateway),
  );
}

/** A server host `ns/host`, `./host`, `*\/host` or bare `host` (= any namespace), split. */
function splitServerHost(entry: string, gatewayNamespace: string): { namespace: string; host: string } {
  const slash = entry.indexOf("/");
  if (slash < 0) return { namespace: "*", host: entry };
  const ns = entry.slice(0, slash);
  return { namespace: ns === "." ? gatewayNamespace : ns, host: entry.slice(slash + 1) };
}

/** The hostnames (without namespace) a server answers for: its SNI names when it terminates or passes TLS. */
export function serverHostnames(server: Server): string[] {
  return [...new Set(server.hosts.map((h) => (h.includes("/") ? h.slice(h.indexOf("/") + 1) : h)))];
}

/**
 * Istio's pickMatchingGatewayHosts: the hosts of `vs` that a server with `serverHosts` exposes. When a VirtualService
 * host and a server host overlap, the narrower one is the virtual host's domain (`*` server + `a.com` VS -> `a.com`;
 * `*.a.com` server + `*` VS -> `*.a.com`).
 */
export function matchingHosts(server: Server, gatewayNamespace: string, vs: VirtualServiceConfig): string[] {
  const out: string[] = [];
  for (const entry of server.hosts) {
    const { namespace, host } = splitServerHost(entry, gatewayNamespace);
    if (namespace !== "*" && namespace !== vs.metadata.namespace) continue;
    for (const vsHost of vs.spec.hosts ?? []) {
      let picked: string | undefined;
      if (hostMatches(host, vsHost)) picked = vsHost;
      else if (hostMatches(vsHost, host)) picked = host;
      if (picked !== undefined && !out.includes(picked)) out.push(picked);
    }
  }
  return out;
}

/** Whether an L4 (tcp/tls) or HTTP match block applies on this gateway and server port. */
export function matchBoundTo(m: { port?: number; gateways?: string[] }, vsNamespace: string, gateway: string, port: number): boolean {
  if (m.port !== undefined && m.port !== port) return false;
  return !m.gateways || m.gateways.length === 0 || namesGateway(m.gateways, vsNamespace, gateway);
}

/**
 * How a server handles its traffic: plaintext HTTP; HTTPS terminated into HTTP; TLS terminated into TCP routes;
 * TLS passed through by SNI to `tls` routes; or plain TCP routes.
 */
export type ServerHandling = "http" | "https" | "tls-terminate" | "passthrough" | "tcp";

export interface PlannedServer extends BoundServer {
  handling: ServerHandling;
  /** RDS route config of `http` and `https` servers. */
  routeName?: string;
  /** Servers terminating TLS: the SNI names their filter chain matches (`*` = any), none claimed by an earlier server. */
  sniNames?: string[];
}

/** One listener: the servers on one bind address and port, all of one family (HTTP, TLS or TCP). */
export interface GatewayPort {
  bind: string;
  port: number;
  servers: PlannedServer[];
}

function handlingOf(s: Server): ServerHandling | undefined {
  const mode = s.tls?.mode ?? "SIMPLE";
  const passthrough = mode === "PASSTHROUGH";
  switch (s.port.protocol) {
    case "HTTP":
    case "HTTP2":
    case "GRPC":
      return "http";
    case "HTTPS":
      return passthrough ? "passthrough" : mode === "AUTO_PASSTHROUGH" ? undefined : "https";
    case "TLS":
      return passthrough ? "passthrough" : mode === "AUTO_PASSTHROUGH" ? undefined : "tls-terminate";
    case "TCP":
    case "MONGO":
      return "tcp";
    default:
      // UDP: Envoy gateways here carry no UDP.
      return undefined;
  }
}

function familyOf(h: ServerHandling): string {
  return h === "http" ? "http" : h === "tcp" ? "tcp" : "tls";
}

/** Istio's RDS names: `http.PORT` shared by the plaintext servers of a port, `https.PORT.PORTNAME.GW.NS` per HTTPS server. */
export function httpRouteName(port: number): string {
  return `http.${port}`;
}

export function httpsRouteName(s: BoundServer): string {
  return `https.${s.server.port.number}.${s.server.port.name}.${s.gateway.metadata.name}.${s.gateway.metadata.namespace}`;
}

const portsMemo = new WeakMap<Scope, GatewayPort[]>();

/**
 * The listeners of a gateway proxy, by bind address and port. AUTO_PASSTHROUGH (multi-network SNI routing),
 * unix-socket binds and UDP servers are not served. Servers of another family than the port's first one (say plaintext HTTP on a port
 * already serving HTTPS) are left out, as Istio rejects such conflicts.
 */
export function gatewayPorts(ctx: GenContext, scope: Scope): GatewayPort[] {
  const memo = portsMemo.get(scope);
  if (memo) return memo;
  const byListener = new Map<string, { port: GatewayPort; family: string; claimed: Set<string> }>();
  const routeNames = new Set<string>();
  for (const bs of selectedServers(ctx, scope)) {
    const handling = handlingOf(bs.server);
    // Unix-socket binds serve a local client only, which a VM gateway has no use for; they are not served.
    if (!handling || bs.server.bind?.startsWith("unix://")) continue;
    const bind = bs.server.bind ?? "0.0.0.0";
    const id = `${bind}_${bs.server.port.number}`;
    let entry = byListener.get(id);
    if (!entry) byListener.set(id, (entry = { port: { bind, port: bs.server.port.number, servers: [] }, family: familyOf(handling), claimed: new Set() }));
    if (entry.family !== familyOf(handling)) continue;
    const planned: PlannedServer = { ...bs, handling };
    if (handling === "https" || handling === "tls-terminate") {
      // Envoy rejects two chains matching one SNI: the first server (Gateway key order) keeps it, as in Istio.
      const all = serverHostnames(bs.server);
      const names = (all.includes("*") ? ["*"] : all.sort()).filter((n) => !entry!.claimed.has(n));
      if (names.length === 0) continue;
      for (const n of names) entry.claimed.add(n);
      planned.sniNames = names;
    }
    if (handling === "http") planned.routeName = httpRouteName(bs.server.port.number);
    if (handling === "https") {
      let name = httpsRouteName(bs);
      // Two servers with the same port name in one Gateway would share a name; keep them apart.
      if (routeNames.has(name)) name = `${name}.${bs.index}`;
      routeNames.add(name);
      planned.routeName = name;
    }
    entry.port.servers.push(planned);
  }
  const out = [...byListener.values()].map((e) => e.port).sort((a, b) => a.port - b.port || (a.bind < b.bind ? -1 : a.bind > b.bind ? 1 : 0));
  portsMemo.set(scope, out);
  return out;
}
