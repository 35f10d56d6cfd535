// File -> registry -> control plane (the real ResourceCache, wrapped by withNameTables as `vmpilot server`
// should) -> ADS (vmpilot.dns.v1.NameTable) -> agent subscription -> DNS proxy -> a real resolver: a
// ServiceEntry edit in a watched directory changes the answer an application gets.
import { expect } from "chai";
import dns from "node:dns";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { setLogLevel } from "@vmpilot/registry/logger";
import { withNameTables } from "@vmpilot/xds/dns/nametable-cache";
import { ResourceCache } from "@vmpilot/xds/cache";
import { ControlPlane } from "@vmpilot/xds/server/control-plane";
import { resolveServerConfig } from "@vmpilot/xds/server/config";
import { DnsProxy } from "../src/dns/index.js";
import { subscribeNameTable, type NameTableSubscription } from "../src/dns/subscribe.js";
import { memoryLogger } from "../src/log.js";
import { until } from "./helpers.js";

if (!process.env.VMPILOT_LOG_LEVEL) setLogLevel("warn");

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

/** ServiceEntries without addresses: they get automatically allocated VIPs. */
function autoEntry(name: string, host: string): string {
  return `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: ${name}, namespace: apps }
spec:
  hosts: [${host}]
  ports: [{ number: 6379, name: tcp, protocol: TCP }]
  resolution: DNS
---
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
    await writeFile(path.join(dir, "auto.yaml"), autoEntry("cache", "cache.internal") + autoEntry("queue", "queue.internal"));
    await startControlPlane("127.0.0.1:0");
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

  async function startControlPlane(xdsAddr: string): Promise<void> {
    const config = resolveServerConfig({ configDirs: [dir], xdsAddr, httpAddr: "127.0.0.1:0" }, dir, {});
    cp = new ControlPlane({ config, createCache: () => withNameTables(new ResourceCache()) });
    await cp.start();
  }

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

  it("keeps auto VIPs across a control plane restart with the files renamed and reordered", async () => {
    const cacheVip = await resolve4(resolver, "cache.internal");
    const queueVip = await resolve4(resolver, "queue.internal");
    expect(cacheVip).to.match(/^240\.240\.\d+\.\d+$/);
    expect(queueVip).to.match(/^240\.240\.\d+\.\d+$/).and.not.equal(cacheVip);

    const xdsAddr = cp.addresses.xds!;
    await cp.stop(1000);
    await rm(path.join(dir, "auto.yaml"));
    await writeFile(path.join(dir, "00-queue-first.yaml"), autoEntry("queue", "queue.internal"));
    await writeFile(path.join(dir, "zz-cache.yaml"), autoEntry("cache", "cache.internal"));
    // The proxy must really learn from the new server: clear what it has, then wait for a fresh table.
    proxy.setNameTable({ table: {} });
    const before = tables;
    await startControlPlane(xdsAddr);
    await until("a table from the restarted control plane", () => tables > before, 30_000);
    expect(await resolve4(resolver, "cache.internal")).to.equal(cacheVip);
    expect(await resolve4(resolver, "queue.internal")).to.equal(queueVip);
  });
});
