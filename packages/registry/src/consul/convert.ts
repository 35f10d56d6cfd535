// Pure conversion of Consul's /v1/health/service/NAME entries into the registry's Service and Endpoints.
// Choices that Consul leaves open are documented here and in the README:
// - one ServicePort per distinct instance port, named `PROTOCOL-PORT` in lower case (`http-8080`), protocol from the
//   instance's service meta `protocol` (Consul's own convention: tcp, http, http2, grpc), default TCP;
// - labels: bare tags `NAME` -> `tag.consul/NAME: "true"`, then `key|value` / `key=value` tags, then service meta
//   (later ones win, so an explicit meta value beats a tag);
// - health: any critical check (including maintenance and node checks such as serfHealth) -> UNHEALTHY, else any
//   warning -> DEGRADED, else HEALTHY; a warning instance whose Weights.Warning is 0 is UNHEALTHY (Consul's own
//   meaning of that weight: no traffic while warning);
// - locality: `DATACENTER/ZONE` with zone from the node meta `zone`, else `DATACENTER`.
import { isIP } from "node:net";
import type { Protocol } from "../api.js";
import type { ConfigProblem, Endpoint, HealthStatus, Origin, Service, ServicePort } from "../model.js";
import { spiffeId } from "../spiffe.js";

/** The parts of a `/v1/health/service/NAME` entry the conversion reads (Consul's field names). */
export interface ConsulHealthEntry {
  Node: { Node: string; Address: string; Datacenter?: string; Meta?: Record<string, string> | null };
  Service: {
    ID: string;
    Service: string;
    Kind?: string;
    Tags?: string[] | null;
    Address?: string;
    Port: number;
    Meta?: Record<string, string> | null;
    Weights?: { Passing?: number; Warning?: number } | null;
    ModifyIndex?: number;
  };
  Checks?: { CheckID: string; Status: string; ServiceID?: string; Name?: string; Output?: string; ModifyIndex?: number }[] | null;
}

export interface ConvertContext {
  domain: string;
  namespace: string;
  trustDomain: string;
  datacenter: string;
  /** X-Consul-Index of the response the entries came from. */
  index: number;
  /** Where problems point (the Consul address). */
  problemFile: string;
}

export interface ConvertedService {
  service: Service;
  endpoints: Endpoint[];
  problems: ConfigProblem[];
}

const PROTOCOLS: Record<string, Protocol> = {
  http: "HTTP",
  http2: "HTTP2",
  grpc: "GRPC",
  tcp: "TCP",
  https: "HTTPS",
  tls: "TLS",
  mongo: "MONGO",
  udp: "UDP",
};

/** Consul's service meta `protocol` -> Istio protocol; undefined when unknown. Absent means TCP. */
export function consulProtocol(meta: string | undefined): Protocol | undefined {
  if (meta === undefined || meta === "") return "TCP";
  return PROTOCOLS[meta.toLowerCase()];
}

export function consulHostname(name: string, domain: string): string {
  return `${name}.service.${domain}`;
}

export function consulPortName(protocol: Protocol, port: number): string {
  return `${protocol.toLowerCase()}-${port}`;
}

/** Tags then meta -> labels (meta wins over tags, `key|value` / `key=value` tags over bare tags). */
export function consulLabels(tags: readonly string[] | null | undefined, meta: Record<string, string> | null | undefined): Record<string, string> {
  const bare: Record<string, string> = {};
  const pairs: Record<string, string> = {};
  for (const tag of tags ?? []) {
    const sep = tag.search(/[|=]/);
    if (sep > 0) pairs[tag.slice(0, sep)] = tag.slice(sep + 1);
    else if (sep < 0 && tag !== "") bare[`tag.consul/${tag}`] = "true";
    // A tag starting with a separator has no key: nothing to select on, ignored.
  }
  return sortKeys({ ...bare, ...pairs, ...(meta ?? {}) });
}

/** Worst check status of one instance (service checks and its node's checks). */
export function consulHealth(checks: ConsulHealthEntry["Checks"]): HealthStatus {
  let worst: HealthStatus = "HEALTHY";
  for (const c of checks ?? []) {
    if (c.Status === "critical") return "UNHEALTHY";
    if (c.Status === "warning") worst = "DEGRADED";
    else if (c.Status !== "passing") worst = worst === "HEALTHY" ? "UNKNOWN" : worst;
  }
  return worst;
}

function sortKeys<T>(o: Record<string, T>): Record<string, T> {
  const out: Record<string, T> = {};
  for (const k of Object.keys(o).sort()) out[k] = o[k]!;
  return out;
}

function problem(ctx: ConvertContext, name: string, message: string): ConfigProblem {
  return { severity: "warning", message, file: ctx.problemFile, line: 0, column: 0, kind: "ConsulService", name, namespace: ctx.namespace };
}

/**
 * One Consul service (all of its instances, healthy or not: health travels with the endpoint) -> one Service and its
 * endpoints. Instances are ordered by address, port and ID so equal catalogs convert to equal values.
 * Undefined for services that are not destinations: `consul` itself, and services whose instances are all
 * Connect proxies or gateways.
 */
export function convertConsulService(name: string, entries: readonly ConsulHealthEntry[], ctx: ConvertContext): ConvertedService | undefined {
  if (!isRoutableConsulService(name)) return undefined;
  const typical = entries.filter((e) => isRoutableConsulService(name, e.Service.Kind));
  // Connect sidecar proxies and gateways are registered as services of their own; they are not destinations.
  if (entries.length > 0 && typical.length === 0) return undefined;
  const problems: ConfigProblem[] = [];
  const hostname = consulHostname(name, ctx.domain);
  const sorted = typical.sort(
    (a, b) =>
      addressOf(a).localeCompare(addressOf(b)) || a.Service.Port - b.Service.Port || a.Service.ID.localeCompare(b.Service.ID),
  );

  const ports = new Map<number, ServicePort>();
  const endpoints: Endpoint[] = [];
  let maxModify = 0;
  for (const e of sorted) {
    const s = e.Service;
    maxModify = Math.max(maxModify, s.ModifyIndex ?? 0);
    const address = addressOf(e);
    if (isIP(address) === 0) {
      // STATIC resolution (EDS) needs IP literals; a hostname here would be NACKed by every proxy.
      problems.push(problem(ctx, name, `instance ${s.ID} on node ${e.Node.Node}: address "${address}" is not an IP address; instance skipped`));
      continue;
    }
    if (!Number.isInteger(s.Port) || s.Port < 1 || s.Port > 65535) {
      problems.push(problem(ctx, name, `instance ${s.ID} on node ${e.Node.Node}: port ${s.Port} is not a valid port; instance skipped`));
      continue;
    }
    let protocol = consulProtocol(s.Meta?.protocol);
    if (!protocol) {
      problems.push(problem(ctx, name, `instance ${s.ID}: unknown protocol "${s.Meta?.protocol}" in service meta; using TCP`));
      protocol = "TCP";
    }
    let port = ports.get(s.Port);
    if (!port) {
      port = { number: s.Port, protocol, name: consulPortName(protocol, s.Port) };
      ports.set(s.Port, port);
    } else if (port.protocol !== protocol) {
      problems.push(
        problem(ctx, name, `instance ${s.ID}: protocol ${protocol} on port ${s.Port} conflicts with ${port.protocol} of another instance; using ${port.protocol}`),
      );
    }

    let health = consulHealth(e.Checks);
    const passingWeight = positiveInt(s.Weights?.Passing, 1);
    const warningWeight = s.Weights?.Warning ?? 1;
    let weight = passingWeight;
    if (health === "DEGRADED") {
      if (warningWeight === 0) health = "UNHEALTHY";
      else weight = positiveInt(warningWeight, 1);
    }

    const datacenter = e.Node.Datacenter || ctx.datacenter;
    const zone = e.Node.Meta?.zone;
    const serviceAccount = s.Meta?.["service-account"] || undefined;
    const endpoint: Endpoint = {
      address,
      ports: { [port.name]: s.Port },
      labels: consulLabels(s.Tags, s.Meta),
      locality: zone ? `${datacenter}/${zone}` : datacenter,
      weight,
      health,
      namespace: ctx.namespace,
      origin: { type: "consul", datacenter, service: name, index: s.ModifyIndex ?? ctx.index },
    };
    if (serviceAccount) {
      endpoint.serviceAccount = serviceAccount;
      endpoint.spiffeId = spiffeId(ctx.trustDomain, ctx.namespace, serviceAccount);
    }
    endpoints.push(endpoint);
  }

  // The service's origin index is its newest registration, not the response index: the latter moves on every
  // health change and would make an unchanged definition look new.
  const origin: Origin = { type: "consul", datacenter: ctx.datacenter, service: name, index: maxModify };
  const service: Service = {
    key: `${ctx.namespace}/${hostname}`,
    hostname,
    namespace: ctx.namespace,
    addresses: [],
    ports: [...ports.values()].sort((a, b) => a.number - b.number),
    resolution: "STATIC",
    location: "MESH_INTERNAL",
    exportTo: ["*"],
    subjectAltNames: [],
    configKey: `ConsulService/${ctx.namespace}/${name}`,
    origin,
  };
  return { service, endpoints, problems };
}

function addressOf(e: ConsulHealthEntry): string {
  return e.Service.Address || e.Node.Address;
}

function positiveInt(v: number | undefined, d: number): number {
  return v !== undefined && Number.isInteger(v) && v >= 1 ? v : d;
}

/** Services the mesh must not route to as ordinary services: Consul itself and Consul-Connect infrastructure kinds. */
export function isRoutableConsulService(name: string, kind?: string): boolean {
  return name !== "consul" && (kind === undefined || kind === "" || kind === "typical");
}
