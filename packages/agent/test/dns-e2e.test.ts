// File -> registry -> control plane -> ADS (vmpilot.dns.v1.NameTable) -> agent subscription -> DNS proxy ->
// a real resolver: a ServiceEntry edit in a watched directory changes the answer an application gets.
import { expect } from "chai";
import dns from "node:dns";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type { RegistrySnapshot } from "@vmpilot/registry";
import { setLogLevel } from "@vmpilot/registry/logger";
import { withNameTables } from "@vmpilot/xds/dns/nametable-cache";
import type { ProxyView } from "@vmpilot/xds/proxy-view";
import { ControlPlane, type SnapshotCache } from "@vmpilot/xds/server/control-plane";
import { resolveServerConfig } from "@vmpilot/xds/server/config";
import type { EncodedResource } from "@vmpilot/xds/server/resources";
import { DnsProxy } from "../src/dns/index.js";
import { subscribeNameTable, type NameTableSubscription } from "../src/dns/subscribe.js";
import { memoryLogger } from "../src/log.js";
import { until } from "./helpers.js";

if (!process.env.VMPILOT_LOG_LEVEL) setLogLevel("warn");

/** The DNS type does not depend on the Envoy resources: an empty inner cache keeps this test about names. */
class NoEnvoyResources implements SnapshotCache {
  update(_snapshot: RegistrySnapshot): void {}
  resources(_view: ProxyView, _typeUrl: string): ReadonlyMap<string, EncodedResource> {
    return new Map();
  }
}

function mesh(declared: string): string {
  return `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: declared, namespace: apps }
spec:
  hosts: [declared.internal]
  addresses: [${declared}]
  ports: [{ number: 5432, name: tcp, protocol: TCP }]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: private, namespace: other }
spec:
  hosts: [private.other]
  exportTo: ["."]
  addresses: [192.0.2.99]
  ports: [{ number: 5432, name: tcp, protocol: TCP }]
  resolution: DNS
`;
}

async function resolve4(r: dns.promises.Resolver, name: string): Promise<string> {
  try {
    return (await r.resolve4(name)).join(",");
  } catch (e) {
    return (e as NodeJS.ErrnoException).code ?? "error";
  }
}

describe("agent DNS proxy fed by the control plane", function () {
  this.timeout(60_000);
  let dir: string;
  let cp: ControlPlane;
  let proxy: DnsProxy;
  let sub: NameTableSubscription;
  let resolver: dns.promises.Resolver;
  let tables = 0;

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "vmpilot-dns-e2e-"));
    await writeFile(path.join(dir, "mesh.yaml"), mesh("192.0.2.10"));
    const config = resolveServerConfig({ configDirs: [dir], xdsAddr: "127.0.0.1:0", httpAddr: "127.0.0.1:0" }, dir, {});
    cp = new ControlPlane({ config, createCache: () => withNameTables(new NoEnvoyResources()) });
    await cp.start();
    proxy = new DnsProxy({ address: "127.0.0.46", port: 0, upstreams: [], log: memoryLogger() });
    await proxy.start();
    sub = subscribeNameTable({
      address: cp.addresses.xds!,
      node: { id: "sidecar~10.0.0.5~vm-1.apps~apps.svc.cluster.local", metadata: { NAMESPACE: "apps" } },
      onTable: (t) => {
        tables++;
        proxy.setNameTable(t);
      },
      log: memoryLogger(),
    });
    resolver = new dns.promises.Resolver({ timeout: 2000, tries: 1 });
    resolver.setServers([`${proxy.address.address}:${proxy.address.port}`]);
  });

  after(async () => {
    sub?.close();
    await proxy?.stop();
    await cp?.stop(1000);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("answers what the control plane sends, refusing what is not exported to the proxy's namespace", async () => {
    await until("the first name table", () => tables > 0);
    expect(await resolve4(resolver, "declared.internal")).to.equal("192.0.2.10");
    expect(await resolve4(resolver, "private.other")).to.equal("EREFUSED"); // no upstream configured
  });

  it("changes the answer after a ServiceEntry edit", async () => {
    const t0 = Date.now();
    await writeFile(path.join(dir, "mesh.yaml"), mesh("192.0.2.11"));
    await until("the edited address", async () => (await resolve4(resolver, "declared.internal")) === "192.0.2.11", 20_000, 20);
    const ms = Date.now() - t0;
    console.log(`      (file write -> new DNS answer: ${ms} ms)`);
  });
});
