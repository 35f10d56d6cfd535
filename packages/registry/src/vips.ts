// Automatically allocated virtual IPs for ServiceEntries that declare no `addresses` (Istio's "DNS auto
// allocation"). An application resolving such a host gets an address that is unique to the service, so a
// sidecar can tell TCP services apart by destination IP (HTTP can route by Host header; TCP cannot).
//
// Ranges are Istio's: IPv4 from 240.240.0.0/16 (class E, never routed on a real network) and IPv6 from
// 2001:2::/48 (RFC 5180 benchmarking space). The IPv6 address embeds the IPv4 one (2001:2::f0f0:XXYY is
// 240.240.XX.YY), so the two families of one service are recognisably the same allocation.
//
// Which services get one (as Istio): no `addresses`, a non-wildcard host, and a resolution that keeps the
// requested destination meaningful. NONE is excluded because its cluster is ORIGINAL_DST: Envoy would forward
// to the class-E VIP itself. DYNAMIC_DNS is excluded because it is resolved per request from Host/SNI.
//
// Determinism: the result is a pure function of the SET of service keys (`namespace/hostname`), never of
// file names, load order or process lifetime, so every replica and every restart hands out the same VIPs
// without storing them anywhere (DESIGN.md: nothing may live only in one replica's memory). Each key hashes
// (FNV-1a, 32 bit, as Istio) to a preferred slot; collisions are resolved by double hashing, visiting keys in
// sorted order so that who keeps the preferred slot does not depend on input order. A service's VIP moves
// only when a service that sorts before it lands on its slot: with n services among 65,011 slots that
// happens to roughly n/65,011 of additions. Operators who need an address that never moves declare it.

import { BlockList, isIP } from "node:net";

/** A prime: double hashing with a step in [1, P-1] visits every slot. Slots map to 240.240.0.1-240.240.255.254. */
export const VIP_SLOTS = 65011;
const HOSTS_PER_OCTET = 254; // x.y.z.1 .. x.y.z.254: no .0 / .255, which some stacks treat as network/broadcast

export const AUTO_VIP_RANGE_V4 = "240.240.0.0/16";
export const AUTO_VIP_RANGE_V6 = "2001:2::/48";

export interface VipCandidate {
  key: string;
  hostname: string;
  addresses: readonly string[];
  resolution: string;
}

/** Whether Istio's rules give this service an automatically allocated address. */
export function needsAutoVip(service: VipCandidate): boolean {
  return (
    service.addresses.length === 0 &&
    !service.hostname.startsWith("*") &&
    service.resolution !== "NONE" &&
    service.resolution !== "DYNAMIC_DNS"
  );
}

/** FNV-1a 32-bit over the UTF-8 bytes. */
export function fnv1a32(text: string, seed = 0x811c9dc5): number {
  let h = seed >>> 0;
  for (const byte of Buffer.from(text, "utf8")) {
    h ^= byte;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

function slotAddresses(slot: number): [string, string] {
  const third = Math.floor(slot / HOSTS_PER_OCTET);
  const fourth = (slot % HOSTS_PER_OCTET) + 1;
  const v6 = ((third << 8) | fourth).toString(16);
  return [`240.240.${third}.${fourth}`, `2001:2::f0f0:${v6}`];
}

/**
 * service key -> [IPv4 VIP, IPv6 VIP] for every service that needs one (see `needsAutoVip`); others are absent.
 * When more services need a VIP than there are slots, the ones sorting last get none (and keep working by
 * Host header / SNI, as without auto allocation).
 */
export function allocateVips(services: Iterable<VipCandidate>): Map<string, string[]> {
  const keys = new Set<string>();
  for (const s of services) if (needsAutoVip(s)) keys.add(s.key);
  // Code-unit order, not locale order: identical on every machine.
  const sorted = [...keys].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));

  const taken = new Uint8Array(VIP_SLOTS);
  const out = new Map<string, string[]>();
  for (const key of sorted.slice(0, VIP_SLOTS)) {
    const h = fnv1a32(key);
    const step = 1 + (fnv1a32(key, h) % (VIP_SLOTS - 1));
    let slot = h % VIP_SLOTS;
    while (taken[slot]) slot = (slot + step) % VIP_SLOTS;
    taken[slot] = 1;
    out.set(key, slotAddresses(slot));
  }
  return out;
}

const autoRanges = new BlockList();
autoRanges.addSubnet("240.240.0.0", 16, "ipv4");
autoRanges.addSubnet("2001:2::", 48, "ipv6");

/** Whether an IP literal lies in an auto-allocation range (a declared address there could collide with a VIP). */
export function isInAutoVipRange(address: string): boolean {
  const family = isIP(address);
  return family !== 0 && autoRanges.check(address, family === 4 ? "ipv4" : "ipv6");
}
