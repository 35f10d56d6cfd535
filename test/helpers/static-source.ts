// A ResourceSource whose content a protocol test sets directly: real Envoy resources encoded with the real
// protos, versioned by content hash like the cache does, optionally different per proxy namespace.
import { createHash } from "node:crypto";
import { encodeJson } from "@vmpilot/xds/protojson";
import { typeNameOfUrl, TypeUrl } from "@vmpilot/xds/protos";
import type { ProxyView } from "@vmpilot/xds/proxy-view";
import type { EncodedResource, ResourceSource } from "@vmpilot/xds/server/resources";

const EMPTY: ReadonlyMap<string, EncodedResource> = new Map();

export function encodeResource(typeUrl: string, json: Record<string, unknown>): EncodedResource {
  const bytes = encodeJson(typeNameOfUrl(typeUrl), json);
  const name = String(json.name ?? json.cluster_name);
  return { name, typeUrl, version: createHash("sha256").update(bytes).digest("hex").slice(0, 12), bytes };
}

export class StaticSource implements ResourceSource {
  /** namespace ("*" = every namespace) -> typeUrl -> name -> resource. Replaced, never mutated, on change. */
  private content = new Map<string, Map<string, ReadonlyMap<string, EncodedResource>>>();

  resources(view: ProxyView, typeUrl: string): ReadonlyMap<string, EncodedResource> {
    return this.content.get(view.namespace)?.get(typeUrl) ?? this.content.get("*")?.get(typeUrl) ?? EMPTY;
  }

  /** Sets the complete set of one type (for `namespace`, default every namespace). */
  set(typeUrl: string, resources: Record<string, unknown>[], namespace = "*"): EncodedResource[] {
    const encoded = resources.map((r) => encodeResource(typeUrl, r));
    let byType = this.content.get(namespace);
    if (!byType) this.content.set(namespace, (byType = new Map()));
    byType.set(typeUrl, new Map(encoded.map((e) => [e.name, e])));
    return encoded;
  }
}

// Minimal valid resources of each type.

export function cluster(name: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { name, type: "EDS", eds_cluster_config: { eds_config: { ads: {} } }, connect_timeout: "1s", ...extra };
}

export function cla(name: string, ips: string[] = [], port = 8080): Record<string, unknown> {
  return {
    cluster_name: name,
    endpoints:
      ips.length === 0
        ? []
        : [{ locality: { region: "r1" }, load_balancing_weight: 1, lb_endpoints: ips.map((ip) => ({ endpoint: { address: { socket_address: { address: ip, port_value: port } } } })) }],
  };
}

export function listener(name: string, routeConfigName: string): Record<string, unknown> {
  return {
    name,
    api_listener: {
      api_listener: {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        rds: { route_config_name: routeConfigName, config_source: { ads: {} } },
        http_filters: [{ name: "router", typed_config: { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" } }],
      },
    },
  };
}

export function routeConfig(name: string, clusterName: string): Record<string, unknown> {
  return { name, virtual_hosts: [{ name: "vh", domains: ["*"], routes: [{ match: { prefix: "" }, route: { cluster: clusterName } }] }] };
}

export { TypeUrl };
