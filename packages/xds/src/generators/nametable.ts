// The DNS name table of one proxy: every mesh host its namespace may see -> the addresses an application on
// that VM should get. The agent's DNS proxy answers from it and forwards every other name upstream.
//
// Which hosts, with which addresses (Istio's DNS proxying rules, pilot's BuildNameTable):
// - declared `addresses`: the IP literals among them (a CIDR names a range, not an answer);
// - else the automatically allocated VIP (see @vmpilot/registry vips.ts); its IPv6 twin only for a proxy that
//   has an IPv6 instance address, so a v4-only VM is never handed an AAAA it cannot reach;
// - else, for resolution NONE (passthrough: Envoy forwards to whatever IP the app dialled), the IP literals of
//   the service's endpoints that are not UNHEALTHY, like Istio's headless services;
// - else nothing: the host is left out and its name goes to the upstream resolvers (a DNS-resolution
//   ServiceEntry names a real DNS name; DYNAMIC_DNS hosts are resolved per request).
// Wildcard hosts (`*.example.com`) are in the table only when they have declared addresses; the agent answers
// a name below example.com from the most specific wildcard entry when it has no exact entry (Istio's agent
// does the same). The bare `*` host is never in the table: it would swallow every lookup.
// Consul services (`NAME.service.consul`) are services like any other; they also answer under Consul's
// datacenter-qualified name `NAME.service.DC.consul` (an alt host).
import { fileURLToPath } from "node:url";
import { isIP } from "node:net";
import protobuf from "protobufjs";
import type { RegistrySnapshot, Service } from "@vmpilot/registry";
import { visibleServices } from "@vmpilot/registry";
import type { ProxyView } from "../proxy-view.js";

export const NAME_TABLE_TYPE_URL = "type.googleapis.com/vmpilot.dns.v1.NameTable";
/** One table per proxy, named "" as Istio's NDS resource; clients subscribe to it with the wildcard `*`. */
export const NAME_TABLE_RESOURCE_NAME = "";

/** src/generators/ (tsx) and dist/generators/ (built) are both two levels below the package root. */
export const NAME_TABLE_PROTO_FILE = fileURLToPath(new URL("../../proto/vmpilot/dns/v1/nametable.proto", import.meta.url));

export interface NameInfo {
  ips: string[];
  registry: string;
  shortname: string;
  namespace: string;
  alt_hosts: string[];
}

/** Field names as in the proto (snake_case), like every other message in this package. */
export interface NameTable {
  table: Record<string, NameInfo>;
}

export interface NameTableOptions {
  /**
   * The services in the proxy's scope, one per hostname (the generators' scope, which also applies Sidecar
   * egress hosts). Default: `visibleServices` (exportTo) with Istio's per-host precedence.
   */
  services?: readonly Service[];
}

function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Same host in two namespaces: the proxy's own namespace wins, else the first namespace in lexical order. */
function oneServicePerHost(services: readonly Service[], namespace: string): Service[] {
  const byHost = new Map<string, Service>();
  for (const s of services) {
    const other = byHost.get(s.hostname);
    if (!other || (other.namespace !== namespace && (s.namespace === namespace || compareStrings(s.namespace, other.namespace) < 0))) {
      byHost.set(s.hostname, s);
    }
  }
  return [...byHost.values()];
}

function addressesFor(
  snapshot: RegistrySnapshot,
  service: Service,
  vips: ReadonlyMap<string, readonly string[]>,
  ipv6Capable: boolean,
): string[] {
  const declared = service.addresses.filter((a) => isIP(a) !== 0);
  if (declared.length > 0) return [...new Set(declared)];
  if (service.addresses.length > 0) return []; // CIDRs only: a range has no single answer
  const auto = vips.get(service.key);
  if (auto && auto.length > 0) return auto.filter((a) => isIP(a) === 4 || (ipv6Capable && isIP(a) === 6));
  if (service.resolution === "NONE" && !service.hostname.startsWith("*")) {
    const ips = (snapshot.endpoints.get(service.key) ?? [])
      .filter((e) => e.health !== "UNHEALTHY" && isIP(e.address) !== 0)
      .map((e) => e.address);
    return [...new Set(ips)].sort();
  }
  return [];
}

function consulAltHosts(service: Service, consulDomain: string): string[] {
  if (service.origin.type !== "consul") return [];
  const suffix = `.service.${consulDomain}`;
  const host = service.hostname.toLowerCase();
  if (!host.endsWith(suffix) || !service.origin.datacenter) return [];
  const name = host.slice(0, -suffix.length);
  return [`${name}.service.${service.origin.datacenter.toLowerCase()}.${consulDomain}`];
}

/** The name table for one proxy view. Pure: depends only on the snapshot, the view and the VIPs. */
export function nameTable(
  snapshot: RegistrySnapshot,
  view: ProxyView,
  vips: ReadonlyMap<string, readonly string[]>,
  options: NameTableOptions = {},
): NameTable {
  const ipv6Capable = view.ips.some((ip) => isIP(ip) === 6);
  const services = oneServicePerHost(options.services ?? visibleServices(snapshot, view.namespace), view.namespace);
  const consulDomain = snapshot.mesh.consulDomain.toLowerCase();
  const entries: [string, NameInfo][] = [];
  for (const service of services) {
    const host = service.hostname.toLowerCase().replace(/\.$/, "");
    if (host === "*" || host === "") continue;
    const ips = addressesFor(snapshot, service, vips, ipv6Capable);
    if (ips.length === 0) continue;
    entries.push([
      host,
      {
        ips,
        registry: service.origin.type === "consul" ? "Consul" : "ServiceEntry",
        shortname: "",
        namespace: "",
        alt_hosts: consulAltHosts(service, consulDomain),
      },
    ]);
  }
  entries.sort((a, b) => compareStrings(a[0], b[0]));
  return { table: Object.fromEntries(entries) };
}

let nameTableType: protobuf.Type | undefined;

/** The protobufjs type of vmpilot.dns.v1.NameTable (loaded once). */
export function nameTableMessageType(): protobuf.Type {
  if (nameTableType) return nameTableType;
  const root = protobuf.loadSync(NAME_TABLE_PROTO_FILE);
  root.resolveAll();
  nameTableType = root.lookupType("vmpilot.dns.v1.NameTable");
  return nameTableType;
}

/** Deterministic bytes: map entries in key order, so equal tables encode (and hash) equally. */
export function encodeNameTable(table: NameTable): Uint8Array {
  const type = nameTableMessageType();
  const sorted = Object.fromEntries(
    Object.keys(table.table)
      .sort(compareStrings)
      .map((k) => {
        const info = table.table[k]!;
        return [k, { ips: info.ips, registry: info.registry, shortname: info.shortname, namespace: info.namespace, altHosts: info.alt_hosts }];
      }),
  );
  const err = type.verify({ table: sorted });
  if (err) throw new Error(`invalid NameTable: ${err}`);
  return type.encode(type.fromObject({ table: sorted })).finish();
}

export function decodeNameTable(bytes: Uint8Array): NameTable {
  const type = nameTableMessageType();
  const obj = type.toObject(type.decode(bytes), { arrays: true, objects: true, defaults: true }) as {
    table: Record<string, { ips: string[]; registry: string; shortname: string; namespace: string; altHosts: string[] }>;
  };
  const table: Record<string, NameInfo> = {};
  for (const [host, info] of Object.entries(obj.table)) {
    table[host] = { ips: info.ips, registry: info.registry, shortname: info.shortname, namespace: info.namespace, alt_hosts: info.altHosts };
  }
  return { table };
}
