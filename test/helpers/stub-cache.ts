// A deliberately tiny stand-in for the resource cache, for tests of the control plane's plumbing (pushes,
// debounce, HTTP views, reload, drain) that must not depend on what the generators emit: one EDS cluster
// and one assignment per service port, encoded with the real protos. The real ResourceCache is exercised by
// the end-to-end suites with grpc-js-xds.
import type { RegistrySnapshot } from "@vmpilot/registry";
import { TypeUrl } from "@vmpilot/xds/protos";
import type { ProxyView } from "@vmpilot/xds/proxy-view";
import type { SnapshotCache } from "@vmpilot/xds/server/control-plane";
import type { EncodedResource } from "@vmpilot/xds/server/resources";
import { cla, cluster, encodeResource } from "./static-source.js";

const EMPTY: ReadonlyMap<string, EncodedResource> = new Map();

export class StubCache implements SnapshotCache {
  private byType = new Map<string, ReadonlyMap<string, EncodedResource>>();
  updates = 0;

  update(snap: RegistrySnapshot): void {
    this.updates++;
    const clusters = new Map<string, EncodedResource>();
    const assignments = new Map<string, EncodedResource>();
    for (const s of snap.services.values()) {
      for (const p of s.ports) {
        const name = `outbound|${p.number}||${s.hostname}`;
        const ips = (snap.endpoints.get(s.key) ?? []).map((e) => e.address);
        clusters.set(name, encodeResource(TypeUrl.Cluster, cluster(name)));
        assignments.set(name, encodeResource(TypeUrl.ClusterLoadAssignment, cla(name, ips, p.number)));
      }
    }
    this.byType = new Map([
      [TypeUrl.Cluster, clusters],
      [TypeUrl.ClusterLoadAssignment, assignments],
    ]);
  }

  resources(_view: ProxyView, typeUrl: string): ReadonlyMap<string, EncodedResource> {
    return this.byType.get(typeUrl) ?? EMPTY;
  }
}
