// ServiceEntry (networking.istio.io): structure plus the cross-field rules of Istio's own validation.
import type { Port, ServiceEntrySpec, WorkloadEntrySpec } from "../../api.js";
import { list, obj, req, str, type RuleContext } from "../schema.js";
import * as syn from "../syntax.js";
import { checkExportTo, checkWeights, exportTo, port, workloadEntryFields, workloadSelector } from "./common.js";

export const LOCATIONS = ["MESH_EXTERNAL", "MESH_INTERNAL"] as const;
export const RESOLUTIONS = ["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN", "DYNAMIC_DNS"] as const;

/** Protocols whose traffic is matched by Host header; any other port under resolution NONE is matched by port alone. */
const HOST_MATCHED = new Set(["HTTP", "HTTP2", "GRPC"]);
/** Protocols whose connections name their host in the TLS SNI. */
const SNI_MATCHED = new Set(["HTTPS", "TLS"]);

export const serviceEntrySpec = () =>
  obj(
    {
      hosts: req(list(str({ check: (h) => syn.wildcardHost(h) }), { nonEmpty: true })),
      addresses: list(str({ check: syn.ipOrCidr }), { unique: true }),
      ports: list(port()),
      location: str({ enum: LOCATIONS }),
      resolution: str({ enum: RESOLUTIONS }),
      endpoints: list(obj(workloadEntryFields(), { rule: checkEndpointShape })),
      workloadSelector: workloadSelector(),
      exportTo: exportTo(),
      subjectAltNames: list(str({ nonEmpty: true })),
    },
    { rule: (spec, r) => checkServiceEntry(spec as ServiceEntrySpec, r) },
  );

function checkEndpointShape(e: Record<string, any>, r: RuleContext): void {
  const ep = e as WorkloadEntrySpec;
  if (ep.address === undefined && ep.network === undefined) {
    r.error(e, undefined, "endpoint needs an 'address' (only endpoints reached through a network gateway may omit it, and they need 'network')");
  }
  if (ep.address !== undefined && syn.isUnixAddress(ep.address) && ep.ports) {
    r.error(e, "ports", "a unix socket endpoint has no ports");
  }
}

function checkServiceEntry(se: ServiceEntrySpec, r: RuleContext): void {
  const resolution = se.resolution ?? "NONE";
  const location = se.location ?? "MESH_EXTERNAL";
  const ports: Port[] = se.ports ?? [];
  const endpoints = se.endpoints ?? [];

  const seenHosts = new Map<string, number>();
  se.hosts.forEach((h, i) => {
    const key = h.toLowerCase();
    if (seenHosts.has(key)) r.error(se.hosts, i, `spec.hosts[${i}]: duplicate host '${h}'`);
    seenHosts.set(key, i);
  });

  if (ports.length === 0) r.error(se, se.ports ? "ports" : undefined, "spec.ports: a ServiceEntry needs at least one port", { key: true });
  const numbers = new Map<number, number>();
  const names = new Map<string, number>();
  ports.forEach((p, i) => {
    if (numbers.has(p.number)) r.error(p, "number", `spec.ports[${i}].number: port ${p.number} is already declared by spec.ports[${numbers.get(p.number)}]`);
    else numbers.set(p.number, i);
    if (names.has(p.name)) r.error(p, "name", `spec.ports[${i}].name: port name '${p.name}' is already used by spec.ports[${names.get(p.name)}]`);
    else names.set(p.name, i);
  });

  if (se.endpoints && se.workloadSelector) {
    r.error(se, "workloadSelector", "spec: only one of 'endpoints' or 'workloadSelector' can be set", { key: true });
  }
  if (se.workloadSelector && location !== "MESH_INTERNAL") {
    r.error(se, "workloadSelector", "spec.workloadSelector: only applies to MESH_INTERNAL services (set location: MESH_INTERNAL)", { key: true });
  }

  const unix = endpoints.map((e, i) => [e, i] as const).filter(([e]) => e.address !== undefined && syn.isUnixAddress(e.address));
  if (unix.length > 0) {
    const [first, i] = unix[0]!;
    if (resolution !== "STATIC") {
      r.error(first, "address", `spec.endpoints[${i}].address: unix socket endpoints need resolution STATIC (resolution is ${resolution})`);
    }
    if (ports.length !== 1) {
      r.error(se, "ports", `spec.ports: a ServiceEntry with unix socket endpoints must declare exactly one port (it declares ${ports.length})`, { key: true });
    }
  }

  endpoints.forEach((e, i) => {
    for (const name of Object.keys(e.ports ?? {})) {
      if (!names.has(name)) {
        const close = syn.suggest(name, [...names.keys()]);
        r.error(e.ports!, name, `spec.endpoints[${i}].ports: '${name}' is not the name of a declared port${close ? ` (did you mean '${close}'?)` : ` (declared: ${[...names.keys()].join(", ") || "none"})`}`, { key: true });
      }
    }
  });
  checkWeights(endpoints, r);

  switch (resolution) {
    case "STATIC":
      endpoints.forEach((e, i) => {
        if (e.address !== undefined && !syn.isUnixAddress(e.address) && syn.ipAddress(e.address)) {
          r.error(e, "address", `spec.endpoints[${i}].address: resolution STATIC needs an IP address or unix socket, not host name '${e.address}' (use resolution DNS)`);
        }
      });
      break;
    case "NONE":
      if (endpoints.length > 0) r.error(se, "endpoints", "spec.endpoints: resolution NONE takes no endpoints (connections go to the address the client dialled)", { key: true });
      if (!se.addresses || se.addresses.length === 0) {
        for (const p of ports) {
          if (!HOST_MATCHED.has(p.protocol)) {
            r.warning(p, "number", `resolution NONE on ${p.protocol} port ${p.number} without 'addresses' opens port ${p.number} to any IP (0.0.0.0:${p.number}); add addresses or use resolution DNS/STATIC`);
          }
        }
      }
      break;
    case "DNS":
    case "DNS_ROUND_ROBIN":
      if (resolution === "DNS_ROUND_ROBIN" && endpoints.length > 1) {
        r.error(se, "endpoints", `spec.endpoints: resolution DNS_ROUND_ROBIN takes at most one endpoint (found ${endpoints.length})`, { key: true });
      }
      if (endpoints.length === 0 && !se.workloadSelector) {
        se.hosts.forEach((h, i) => {
          if (h.startsWith("*.")) r.error(se.hosts, i, `spec.hosts[${i}]: resolution ${resolution} without endpoints resolves the hosts themselves, so '${h}' cannot be a wildcard`);
        });
      }
      break;
    case "DYNAMIC_DNS":
      if (endpoints.length > 0) r.error(se, "endpoints", "spec.endpoints: resolution DYNAMIC_DNS takes no endpoints (it resolves each request's host)", { key: true });
      se.hosts.forEach((h, i) => {
        if (!h.startsWith("*.")) r.error(se.hosts, i, `spec.hosts[${i}]: resolution DYNAMIC_DNS requires wildcard hosts ('*.example.com'), not '${h}'`);
      });
      // The name to resolve comes from the Host header or the TLS SNI; other protocols carry neither.
      for (const p of ports) {
        if (!HOST_MATCHED.has(p.protocol) && !SNI_MATCHED.has(p.protocol)) {
          r.warning(p, "protocol", `resolution DYNAMIC_DNS resolves each request's Host header (HTTP) or TLS SNI; ${p.protocol} port ${p.number} carries neither, so it is not served (use HTTP, HTTPS or TLS, or a DNS/STATIC ServiceEntry for it)`);
        }
      }
      break;
  }
  checkExportTo(se, r);
}
