// Automatic VIP allocation: who gets one (Istio's rules), where (240.240.0.0/16, 2001:2::/48), and that the
// result depends only on the set of services: not on file names, file order or input order.
import { expect } from "chai";
import { isIP } from "node:net";
import { parseDocuments } from "../src/parse/index.js";
import type { Service } from "../src/model.js";
import { servicesOfServiceEntry, type ServiceEntryConfig } from "../src/services.js";
import { allocateVips, fnv1a32, isInAutoVipRange, needsAutoVip, VIP_SLOTS, type VipCandidate } from "../src/vips.js";

function servicesOf(files: [string, string][]): Service[] {
  const out: Service[] = [];
  for (const [file, text] of files) {
    const r = parseDocuments(file, text);
    const errors = r.problems.filter((p) => p.severity === "error");
    if (errors.length > 0) throw new Error(`fixture ${file} is invalid: ${JSON.stringify(errors)}`);
    for (const o of r.objects) if (o.kind === "ServiceEntry") out.push(...servicesOfServiceEntry(o as ServiceEntryConfig));
  }
  return out;
}

function se(name: string, ns: string, hosts: string[], extra = ""): string {
  return `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: ${name}, namespace: ${ns} }
spec:
  hosts: [${hosts.join(", ")}]
  ports: [{ number: 5432, name: tcp, protocol: TCP }]
${extra}
`;
}

const FILE_A = se("db", "data", ["db.internal", "db-replica.internal"], "  resolution: DNS\n  location: MESH_EXTERNAL");
const FILE_B = se("cache", "apps", ["cache.internal"], "  resolution: STATIC\n  endpoints: [{ address: 10.0.0.7 }]");
const FILE_C = se("legacy", "apps", ["legacy.internal"], "  resolution: DNS_ROUND_ROBIN");
const FILE_D = [
  se("declared", "apps", ["declared.internal"], "  resolution: DNS\n  addresses: [192.0.2.10]"),
  se("wild", "apps", ['"*.wild.example"'], "  resolution: NONE"),
  se("passthrough", "apps", ["passthrough.internal"], "  resolution: NONE"),
].join("---\n");

/** The address of slot i, straight from the documented layout (240.240.z.1-254, z = i / 254). */
function slotV4(slot: number): string {
  return `240.240.${Math.floor(slot / 254)}.${(slot % 254) + 1}`;
}

function candidate(key: string, over: Partial<VipCandidate> = {}): VipCandidate {
  return { key, hostname: key.split("/")[1]!, addresses: [], resolution: "DNS", ...over };
}

function shuffled<T>(items: readonly T[], seed: number): T[] {
  const out = [...items];
  let x = seed;
  for (let i = out.length - 1; i > 0; i--) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    const j = x % (i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

describe("allocateVips", () => {
  it("allocates only for services without addresses, with a concrete host and a resolution other than NONE", () => {
    const vips = allocateVips(servicesOf([["a.yaml", FILE_A], ["b.yaml", FILE_B], ["c.yaml", FILE_C], ["d.yaml", FILE_D]]));
    expect([...vips.keys()].sort()).to.deep.equal([
      "apps/cache.internal",
      "apps/legacy.internal",
      "data/db-replica.internal",
      "data/db.internal",
    ]);
    expect(needsAutoVip(candidate("x/y", { resolution: "DYNAMIC_DNS" }))).to.equal(false);
    expect(needsAutoVip(candidate("x/y", { addresses: ["10.1.0.0/16"] }))).to.equal(false);
  });

  it("hands out one IPv4 address in 240.240.0.0/16 (never .0 or .255) and the IPv6 twin in 2001:2::/48", () => {
    const many = Array.from({ length: 3000 }, (_, i) => candidate(`ns${i % 7}/svc-${i}.example`));
    const vips = allocateVips(many);
    expect(vips.size).to.equal(3000);
    const seen = new Set<string>();
    for (const [key, addrs] of vips) {
      expect(addrs, key).to.have.length(2);
      const [v4, v6] = addrs as [string, string];
      expect(isIP(v4)).to.equal(4);
      expect(isIP(v6)).to.equal(6);
      expect(isInAutoVipRange(v4) && isInAutoVipRange(v6), `${v4} ${v6}`).to.equal(true);
      const [, , third, fourth] = v4.split(".").map(Number) as [number, number, number, number];
      expect(fourth).to.be.within(1, 254);
      // 2001:2::f0f0:XXYY embeds 240.240.XX.YY
      expect(v6).to.equal(`2001:2::f0f0:${((third << 8) | fourth).toString(16)}`);
      expect(seen.has(v4), `duplicate ${v4}`).to.equal(false);
      seen.add(v4);
    }
    expect(isInAutoVipRange("240.241.0.1")).to.equal(false);
    expect(isInAutoVipRange("2001:3::1")).to.equal(false);
  });

  it("gives identical VIPs when the config files are renamed and reordered", () => {
    const first = allocateVips(servicesOf([["a.yaml", FILE_A], ["b.yaml", FILE_B], ["c.yaml", FILE_C], ["d.yaml", FILE_D]]));
    const second = allocateVips(
      servicesOf([["zz/last.yml", FILE_D], ["00-first.yaml", FILE_C + "---\n" + FILE_A], ["m.json.yaml", FILE_B]]),
    );
    expect(second.size).to.equal(4);
    expect([...second.entries()].sort()).to.deep.equal([...first.entries()].sort());
  });

  it("does not depend on input order, even with many collisions", () => {
    const many = Array.from({ length: 20000 }, (_, i) => candidate(`ns/host-${i}.example`));
    const reference = allocateVips(many);
    const other = allocateVips(shuffled(many, 42));
    expect(other.size).to.equal(reference.size);
    for (const [key, addrs] of reference) expect(other.get(key), key).to.deep.equal(addrs);
  });

  it("resolves a collision on the preferred slot: the key sorting first keeps it, the other probes elsewhere", () => {
    // Find two keys whose FNV-1a hashes pick the same preferred slot.
    const bySlot = new Map<number, string>();
    let pair: [string, string] | undefined;
    for (let i = 0; !pair; i++) {
      const key = `default/h${i}.example`;
      const slot = fnv1a32(key) % VIP_SLOTS;
      const other = bySlot.get(slot);
      if (other) pair = [other, key].sort() as [string, string];
      else bySlot.set(slot, key);
    }
    const [winner, loser] = pair;
    const preferred = slotV4(fnv1a32(winner) % VIP_SLOTS);
    for (const input of [[candidate(winner), candidate(loser)], [candidate(loser), candidate(winner)]]) {
      const vips = allocateVips(input);
      expect(vips.get(winner)![0]).to.equal(preferred);
      expect(vips.get(loser)![0]).to.not.equal(preferred);
    }
    // Alone, the loser gets the preferred slot: the probe really was caused by the collision.
    expect(allocateVips([candidate(loser)]).get(loser)![0]).to.equal(preferred);
  });

  it("keeps existing VIPs when an unrelated service is added", () => {
    const base = Array.from({ length: 200 }, (_, i) => candidate(`apps/s${i}.internal`));
    const before = allocateVips(base);
    const after = allocateVips([...base, candidate("apps/new.internal")]);
    for (const [key, addrs] of before) expect(after.get(key), key).to.deep.equal(addrs);
    expect(after.get("apps/new.internal")).to.have.length(2);
  });

  it("gives the same host in two namespaces two VIPs (services are namespace/hostname)", () => {
    const vips = allocateVips([candidate("a/shared.example"), candidate("b/shared.example")]);
    expect(vips.get("a/shared.example")![0]).to.not.equal(vips.get("b/shared.example")![0]);
  });

  it("fills every slot and then stops, leaving the keys that sort last without a VIP", function () {
    this.timeout(60000);
    const n = VIP_SLOTS + 3;
    const keys = Array.from({ length: n }, (_, i) => `ns/${String(i).padStart(6, "0")}.example`);
    const vips = allocateVips(keys.map((k) => candidate(k)));
    expect(vips.size).to.equal(VIP_SLOTS);
    expect(new Set([...vips.values()].map((a) => a[0])).size).to.equal(VIP_SLOTS);
    for (const k of keys.slice(VIP_SLOTS)) expect(vips.has(k), k).to.equal(false);
  });
});
