// Serves the DNS name table as one more xDS type next to whatever the resource cache serves: wrap the cache
// given to ControlPlane (`createCache: () => withNameTables(new ResourceCache())`). Every other type is
// passed through untouched.
//
// The table lists the services of the proxy's scope (the generators' buildScope: exportTo, then a Sidecar's
// egress hosts, one service per hostname), so DNS and the Envoy config agree on what a proxy can reach. It is
// built and encoded once per (snapshot, scope, IP family) and shared by every proxy with that key. VIPs are
// allocated once per snapshot, over all services.
import { createHash } from "node:crypto";
import { isIP } from "node:net";
import type { RegistrySnapshot } from "@vmpilot/registry";
import type { ProxyView } from "../proxy-view.js";
import type { SnapshotCache } from "../server/control-plane.js";
import type { EncodedResource } from "../server/resources.js";
import { buildScope, RoutingIndex, scopeKey } from "../generators/context.js";
import { encodeNameTable, nameTable, NAME_TABLE_RESOURCE_NAME, NAME_TABLE_TYPE_URL } from "../generators/nametable.js";

const EMPTY: ReadonlyMap<string, EncodedResource> = new Map();

export class NameTableCache {
  private snapshot: RegistrySnapshot | undefined;
  private routing: RoutingIndex | undefined;
  private vips: ReadonlyMap<string, readonly string[]> = new Map();
  private readonly byView = new Map<string, ReadonlyMap<string, EncodedResource>>();

  update(snapshot: RegistrySnapshot): void {
    const prev = this.snapshot;
    if (prev === snapshot) return;
    const routingKept = prev && this.routing && snapshot.version === prev.version + 1 && !snapshot.changes.full && snapshot.changes.routing.size === 0;
    if (!routingKept) this.routing = new RoutingIndex(snapshot.configs);
    this.snapshot = snapshot;
    // The snapshot carries each service's allocated VIPs; one allocation, one answer, everywhere.
    this.vips = new Map([...snapshot.services.values()].flatMap((s) => (s.autoAddresses ? [[s.key, s.autoAddresses] as const] : [])));
    this.byView.clear();
  }

  /** The current VIPs (service key -> [IPv4, IPv6]), e.g. for /debug/registryz. */
  get autoVips(): ReadonlyMap<string, readonly string[]> {
    return this.vips;
  }

  resources(view: ProxyView): ReadonlyMap<string, EncodedResource> {
    if (!this.snapshot || !this.routing) return EMPTY;
    const ipv6 = view.ips.some((ip) => isIP(ip) === 6);
    const key = `${scopeKey(view)}\0${ipv6 ? 6 : 4}`;
    let out = this.byView.get(key);
    if (!out) {
      const scope = buildScope(this.snapshot, this.routing, view);
      const bytes = encodeNameTable(nameTable(this.snapshot, view, this.vips, { services: scope.services }));
      const version = createHash("sha256").update(bytes).digest("hex").slice(0, 16);
      out = new Map([[NAME_TABLE_RESOURCE_NAME, { name: NAME_TABLE_RESOURCE_NAME, typeUrl: NAME_TABLE_TYPE_URL, version, bytes }]]);
      this.byView.set(key, out);
    }
    return out;
  }
}

/** `inner` plus the name table type. */
export function withNameTables(inner: SnapshotCache, tables = new NameTableCache()): SnapshotCache & { nameTables: NameTableCache } {
  return {
    nameTables: tables,
    update(snapshot: RegistrySnapshot): void {
      tables.update(snapshot);
      inner.update(snapshot);
    },
    resources(view: ProxyView, typeUrl: string): ReadonlyMap<string, EncodedResource> {
      return typeUrl === NAME_TABLE_TYPE_URL ? tables.resources(view) : inner.resources(view, typeUrl);
    },
  };
}
