// The agent's DNS proxy against real DNS clients: Node's resolver (c-ares) and `dig` (ISC BIND's dnsutils).
// The name table comes from the real generator over a real snapshot (YAML -> parser -> buildSnapshot ->
// allocateVips -> nameTable); "upstream" is a small DNS server built with dns-packet on another loopback
// address, which records what reached it so forwarding is proven, not assumed.
import { expect } from "chai";
import { execFile } from "node:child_process";
import dgram from "node:dgram";
import dns from "node:dns";
import net from "node:net";
import { once } from "node:events";
import * as dnsPacket from "dns-packet";
import { allocateVips, buildSnapshot, DEFAULT_MESH, parseDocuments, type AnyConfig, type RegistrySnapshot } from "@vmpilot/registry";
import { nameTable, type NameTable } from "@vmpilot/xds/generators/nametable";
import { proxyViewFromNode } from "@vmpilot/xds/proxy-view";
import { DnsProxy } from "../src/dns/index.js";
import { memoryLogger } from "../src/log.js";
import { until } from "./helpers.js";

// ---------------------------------------------------------------------------------------------------------
// Peers

/** A tiny authoritative upstream over UDP and TCP: fixed A records, NXDOMAIN for the rest; logs questions. */
class UpstreamDns {
  readonly seen: string[] = [];
  private udp!: dgram.Socket;
  private tcp!: net.Server;
  port = 0;
  constructor(
    readonly host: string,
    private readonly records: Record<string, string>,
  ) {}

  async start(): Promise<void> {
    this.udp = dgram.createSocket("udp4");
    this.udp.bind(0, this.host);
    await once(this.udp, "listening");
    this.port = this.udp.address().port;
    this.udp.on("message", (msg, rinfo) => this.udp.send(this.reply(msg), rinfo.port, rinfo.address));
    this.tcp = net.createServer((s) => {
      s.on("error", () => s.destroy());
      s.on("data", (chunk) => {
        const r = this.reply(chunk.subarray(2));
        const len = Buffer.alloc(2);
        len.writeUInt16BE(r.length);
        s.write(Buffer.concat([len, r]));
      });
    });
    this.tcp.listen(this.port, this.host);
    await once(this.tcp, "listening");
  }

  private reply(msg: Buffer): Buffer {
    const q = dnsPacket.decode(msg);
    const question = q.questions![0]!;
    this.seen.push(`${question.type} ${question.name.toLowerCase()}`);
    const ip = this.records[question.name.toLowerCase()];
    const answers: dnsPacket.Answer[] = ip && question.type === "A" ? [{ type: "A", name: question.name, ttl: 60, data: ip }] : [];
    const rcode = ip ? 0 : 3; // NXDOMAIN
    return dnsPacket.encode({ type: "response", id: q.id, flags: dnsPacket.RECURSION_AVAILABLE | rcode, questions: q.questions, answers });
  }

  async stop(): Promise<void> {
    await Promise.all([new Promise<void>((r) => this.udp.close(() => r())), new Promise<void>((r) => this.tcp.close(() => r()))]);
  }
}

function run(cmd: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: 20_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as NodeJS.ErrnoException).code === "number" ? Number((err as NodeJS.ErrnoException).code) : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

let digAvailable: boolean | undefined;
async function requireDig(ctx: Mocha.Context): Promise<void> {
  digAvailable ??= (await run("dig", ["-v"])).stderr.includes("DiG");
  if (digAvailable) return;
  if (process.env.CI) throw new Error("dig is required in CI (apt-get install dnsutils)");
  console.log("      (skipped: `dig` not installed; apt-get install dnsutils to run the dig cases)");
  ctx.skip();
}

interface DigResult {
  status: string;
  flags: string[];
  answers: string[];
}

/** `dig` with machine-readable output: the header's status and flags, and the answer section's data. */
async function dig(proxy: DnsProxy, name: string, type: string, ...extra: string[]): Promise<DigResult> {
  const { address, port } = proxy.address;
  const r = await run("dig", [`@${address}`, "-p", String(port), name, type, "+noall", "+comments", "+answer", "+time=3", "+tries=1", ...extra]);
  const header = /status: (\w+)/.exec(r.stdout);
  if (!header) throw new Error(`dig gave no header (exit ${r.code}): ${r.stdout}${r.stderr}`);
  const flags = (/;; flags: ([^;]*);/.exec(r.stdout)?.[1] ?? "").trim().split(/\s+/);
  const answers = r.stdout
    .split("\n")
    .filter((l) => l && !l.startsWith(";"))
    .map((l) => l.split(/\s+/).at(-1)!);
  return { status: header[1]!, flags, answers };
}

function resolverFor(proxy: DnsProxy): dns.promises.Resolver {
  const r = new dns.promises.Resolver({ timeout: 3000, tries: 1 });
  r.setServers([`${proxy.address.address}:${proxy.address.port}`]);
  return r;
}

async function errorCode(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code ?? String(e);
  }
  return "no error";
}

// ---------------------------------------------------------------------------------------------------------
// The mesh

function se(name: string, ns: string, body: string): string {
  return `apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: { name: ${name}, namespace: ${ns} }\nspec:\n${body}\n---\n`;
}
const PORTS = "  ports: [{ number: 5432, name: tcp, protocol: TCP }]";
const MESH = [
  se("db", "apps", `  hosts: [db.internal]\n${PORTS}\n  resolution: DNS`),
  se("declared", "apps", `  hosts: [declared.internal]\n  addresses: [192.0.2.10]\n${PORTS}\n  resolution: DNS`),
  se("dual", "apps", `  hosts: [dual.internal]\n  addresses: [192.0.2.20, "2001:db8::20"]\n${PORTS}\n  resolution: DNS`),
  se("corp", "apps", `  hosts: ["*.corp.example"]\n  addresses: [192.0.2.50]\n${PORTS}\n  resolution: NONE`),
  se("private", "other", `  hosts: [private.other]\n  exportTo: ["."]\n  addresses: [192.0.2.99]\n${PORTS}\n  resolution: DNS`),
].join("");

function snapshotOf(yaml: string, prev?: RegistrySnapshot): RegistrySnapshot {
  const r = parseDocuments("mesh.yaml", yaml);
  const errors = r.problems.filter((p) => p.severity === "error");
  if (errors.length > 0) throw new Error(`fixture invalid: ${JSON.stringify(errors)}`);
  return buildSnapshot(prev, [{ objects: r.objects as AnyConfig[], problems: [], status: { name: "files", synced: true, stale: false } }], DEFAULT_MESH);
}

const VIEW = proxyViewFromNode({ id: "sidecar~10.0.0.5~vm-1.apps~apps.svc.cluster.local", metadata: { NAMESPACE: "apps" } });

function tableOf(snapshot: RegistrySnapshot): NameTable {
  return nameTable(snapshot, VIEW, allocateVips(snapshot.services.values()));
}

// ---------------------------------------------------------------------------------------------------------

describe("agent DNS proxy", function () {
  this.timeout(30_000);
  const snapshot = snapshotOf(MESH);
  const dbVip = allocateVips(snapshot.services.values()).get("apps/db.internal")![0]!;
  const upstream = new UpstreamDns("127.0.0.41", { "upstream.example": "203.0.113.7", "private.other": "203.0.113.9", "corp.example": "203.0.113.10" });
  let proxy: DnsProxy;
  const log = memoryLogger();

  before(async () => {
    await upstream.start();
    proxy = new DnsProxy({ address: "127.0.0.42", port: 0, upstreams: [`127.0.0.41:${upstream.port}`], log });
    await proxy.start();
    proxy.setNameTable(tableOf(snapshot));
  });
  after(async () => {
    await proxy?.stop();
    await upstream.stop();
  });

  describe("with Node's resolver", () => {
    it("answers mesh hosts with their auto VIP or declared addresses", async () => {
      const r = resolverFor(proxy);
      expect(dbVip).to.match(/^240\.240\./);
      expect(await r.resolve4("db.internal")).to.deep.equal([dbVip]);
      expect(await r.resolve4("declared.internal")).to.deep.equal(["192.0.2.10"]);
      expect(await r.resolve6("dual.internal")).to.deep.equal(["2001:db8::20"]);
    });

    it("answers AAAA for a v4-only mesh host with NODATA, not NXDOMAIN", async () => {
      const r = resolverFor(proxy);
      // c-ares: ENODATA = NOERROR without answers; ENOTFOUND would be NXDOMAIN.
      expect(await errorCode(r.resolve6("declared.internal"))).to.equal("ENODATA");
      expect(upstream.seen).to.not.include("AAAA declared.internal");
    });

    it("forwards unknown names and names not exported to the proxy's namespace upstream", async () => {
      const r = resolverFor(proxy);
      expect(await r.resolve4("upstream.example")).to.deep.equal(["203.0.113.7"]);
      expect(await r.resolve4("private.other")).to.deep.equal(["203.0.113.9"]); // the mesh would say 192.0.2.99
      expect(upstream.seen).to.include.members(["A upstream.example", "A private.other"]);
      expect(await errorCode(r.resolve4("nowhere.example"))).to.equal("ENOTFOUND"); // upstream's NXDOMAIN, passed on
    });
  });

  describe("with dig", () => {
    beforeEach(async function () {
      await requireDig(this);
    });

    it("answers A authoritatively with a 30 s TTL, over UDP and TCP, any case, with or without the final dot", async () => {
      for (const extra of [[], ["+tcp"]]) {
        const r = await dig(proxy, "DB.Internal.", "A", ...extra);
        expect(r.status, extra.join()).to.equal("NOERROR");
        expect(r.flags).to.include("aa");
        expect(r.answers).to.deep.equal([dbVip]);
      }
      const { address, port } = proxy.address;
      const ttl = await run("dig", [`@${address}`, "-p", String(port), "db.internal", "A", "+noall", "+answer"]);
      expect(ttl.stdout.split(/\s+/)[1]).to.equal("30");
    });

    it("answers NODATA for AAAA of a v4-only host and for other types of mesh hosts", async () => {
      for (const type of ["AAAA", "MX", "TXT"]) {
        const r = await dig(proxy, "declared.internal", type);
        expect(r.status, type).to.equal("NOERROR");
        expect(r.answers, type).to.deep.equal([]);
      }
    });

    it("answers names below a wildcard host from it, but not the wildcard's own domain", async () => {
      expect((await dig(proxy, "a.b.corp.example", "A")).answers).to.deep.equal(["192.0.2.50"]);
      const apex = await dig(proxy, "corp.example", "A");
      expect(apex.answers).to.deep.equal(["203.0.113.10"]); // from upstream
      expect(upstream.seen).to.include("A corp.example");
    });

    it("forwards what is not the mesh's and passes the upstream's NXDOMAIN on", async () => {
      expect((await dig(proxy, "upstream.example", "A")).answers).to.deep.equal(["203.0.113.7"]);
      expect((await dig(proxy, "upstream.example", "A", "+tcp")).answers).to.deep.equal(["203.0.113.7"]);
      expect((await dig(proxy, "private.other", "A")).answers).to.deep.equal(["203.0.113.9"]);
      expect((await dig(proxy, "nowhere.example", "A")).status).to.equal("NXDOMAIN");
    });

    it("changes answers as soon as a new table is set (a ServiceEntry edit)", async () => {
      const edited = snapshotOf(MESH.replace("addresses: [192.0.2.10]", "addresses: [192.0.2.11]"), snapshot);
      try {
        proxy.setNameTable(tableOf(edited));
        expect((await dig(proxy, "declared.internal", "A")).answers).to.deep.equal(["192.0.2.11"]);
        // A host removed from the mesh goes upstream (which does not know it).
        proxy.setNameTable(tableOf(snapshotOf(MESH.replace("hosts: [db.internal]", "hosts: [db2.internal]"), edited)));
        expect((await dig(proxy, "db.internal", "A")).status).to.equal("NXDOMAIN");
        expect(upstream.seen).to.include("A db.internal");
      } finally {
        proxy.setNameTable(tableOf(snapshot));
      }
    });

    it("truncates a UDP answer that does not fit 512 bytes; dig retries over TCP and gets all of it", async () => {
      const ips = Array.from({ length: 60 }, (_, i) => `198.51.100.${i + 1}`);
      try {
        proxy.setNameTable({ table: { "big.internal": { ips, registry: "ServiceEntry", shortname: "", namespace: "", alt_hosts: [] } } });
        const truncated = await dig(proxy, "big.internal", "A", "+noedns", "+ignore");
        expect(truncated.flags).to.include("tc");
        expect(truncated.answers).to.deep.equal([]);
        const full = await dig(proxy, "big.internal", "A", "+noedns");
        expect(full.answers.sort()).to.deep.equal([...ips].sort());
      } finally {
        proxy.setNameTable(tableOf(snapshot));
      }
    });
  });

  describe("without a usable upstream", () => {
    let lonely: DnsProxy;
    let deaf: DnsProxy;
    let silent: dgram.Socket;
    const silentSeen: string[] = [];
    before(async () => {
      lonely = new DnsProxy({ address: "127.0.0.43", port: 0, upstreams: [], log: memoryLogger() });
      await lonely.start();
      lonely.setNameTable(tableOf(snapshot));
      // An upstream that never answers (a bound UDP socket that reads and ignores).
      silent = dgram.createSocket("udp4");
      silent.on("message", (msg) => silentSeen.push(dnsPacket.decode(msg).questions![0]!.name));
      silent.bind(0, "127.0.0.44");
      await once(silent, "listening");
      deaf = new DnsProxy({ address: "127.0.0.45", port: 0, upstreams: [`127.0.0.44:${silent.address().port}`], upstreamTimeoutMs: 300, log: memoryLogger() });
      await deaf.start();
    });
    after(async () => {
      await lonely?.stop();
      await deaf?.stop();
      silent?.close();
    });

    it("still answers mesh names, and refuses everything else (Node's resolver)", async () => {
      const r = resolverFor(lonely);
      expect(await r.resolve4("declared.internal")).to.deep.equal(["192.0.2.10"]);
      expect(await errorCode(r.resolve4("upstream.example"))).to.equal("EREFUSED");
      expect(await errorCode(r.resolve4("private.other"))).to.equal("EREFUSED");
    });

    it("answers SERVFAIL at once beyond the cap of queries waiting for upstreams", async () => {
      const capped = new DnsProxy({
        address: "127.0.0.47",
        port: 0,
        upstreams: [`127.0.0.44:${silent.address().port}`],
        upstreamTimeoutMs: 1500,
        maxInflightForwards: 1,
        log: memoryLogger(),
      });
      await capped.start();
      try {
        const order: string[] = [];
        const first = errorCode(resolverFor(capped).resolve4("first.example")).then((c) => (order.push("first"), c)); // holds the only slot
        await until("the first query to reach the upstream", () => silentSeen.includes("first.example"));
        const second = errorCode(resolverFor(capped).resolve4("second.example")).then((c) => (order.push("second"), c));
        expect(await second).to.equal("ESERVFAIL");
        expect(await first).to.equal("ESERVFAIL"); // after its upstream timed out
        expect(order).to.deep.equal(["second", "first"]); // the refused one did not wait for the upstream
      } finally {
        await capped.stop();
      }
    });

    it("REFUSED without upstreams and SERVFAIL when the upstream does not answer (dig)", async function () {
      await requireDig(this);
      expect((await dig(lonely, "upstream.example", "A")).status).to.equal("REFUSED");
      expect((await dig(deaf, "upstream.example", "A")).status).to.equal("SERVFAIL");
    });
  });
});
