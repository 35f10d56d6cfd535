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
 * Host header / SNI, as without auto allocation). `slots` is for tests (small tables force collisions).
 */
export function allocateVips(services: Iterable<VipCandidate>, slots = VIP_SLOTS): Map<string, string[]> {
  const keys = new Set<string>();
  for (const s of services) if (needsAutoVip(s)) keys.add(s.key);
  // Code-unit order, not locale order: identical on every machine.
  const sorted = [...keys].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));

  const taken = new Uint8Array(slots);
  const out = new Map<string, string[]>();
  for (const key of sorted.slice(0, slots)) {
    const { first, step } = probe(key, slots);
    let slot = first;
    while (taken[slot]) slot = (slot + step) % slots;
    taken[slot] = 1;
    out.set(key, slotAddresses(slot));
  }
  return out;
}

/** Where a key's probe sequence starts and how it steps (double hashing). */
function probe(key: string, slots: number): { first: number; step: number } {
  const h = fnv1a32(key);
  return { first: h % slots, step: 1 + (fnv1a32(key, h) % (slots - 1)) };
}

/**
 * The allocation of `allocateVips`, kept up to date as keys come and go, at a cost proportional to the keys whose
 * VIP actually moves rather than to the mesh.
 *
 * allocateVips is a greedy pass in key order: each key takes the first free slot of its probe sequence. An
 * assignment equals that pass exactly when every key's slot is its own and every slot its probe passed on the way
 * is held by a key that sorts before it (by induction over the keys in order). So we keep, per slot, its owner and
 * the keys that passed it; a change can only break that property for
 *  - an added key (it has no slot yet),
 *  - the keys that passed a slot that becomes free (they might now stop there),
 *  - a key whose slot is taken by an added key sorting before it (it is evicted).
 * Those keys are re-probed in key order (a min-heap); re-probing one only ever disturbs keys that sort after it,
 * so each is re-probed at most once per update and the result is the greedy pass's. With n keys among 65,011
 * slots, probe sequences are about one slot long and an update touches a handful of keys.
 */
export class VipAllocator {
  private readonly owner: (string | undefined)[];
  private readonly assigned = new Map<string, { slot: number; passed: number[] }>();
  private readonly passers = new Map<number, Set<string>>();
  private readonly keys = new Set<string>();
  private full = false;

  constructor(private readonly slots = VIP_SLOTS) {
    this.owner = new Array<string | undefined>(slots);
  }

  /** Whether the key is one of those that need a VIP. */
  has(key: string): boolean {
    return this.keys.has(key);
  }

  /** The VIPs of a key, or undefined (it needs none, or the table is full). */
  get(key: string): string[] | undefined {
    const a = this.assigned.get(key);
    return a ? slotAddresses(a.slot) : undefined;
  }

  /** Adds and removes keys (keys that need a VIP: see needsAutoVip); returns the keys whose VIPs changed. */
  update(add: Iterable<string>, remove: Iterable<string>): Set<string> {
    const before = new Map<string, number | undefined>();
    const remember = (k: string): void => {
      if (!before.has(k)) before.set(k, this.assigned.get(k)?.slot);
    };
    const dirty = new Set<string>();
    const heap = new KeyHeap();
    const markDirty = (k: string): void => {
      if (dirty.has(k)) return;
      dirty.add(k);
      heap.push(k);
    };
    for (const k of remove) {
      if (!this.keys.delete(k)) continue;
      remember(k);
      this.release(k, markDirty);
    }
    for (const k of add) {
      if (this.keys.has(k)) continue;
      this.keys.add(k);
      remember(k);
      markDirty(k);
    }
    // Keys without a slot (the table was full) are in no index, so leaving that state also takes a full pass.
    const wasFull = this.full;
    this.full = this.keys.size > this.slots;
    if (this.full || wasFull) return this.reallocateAll(before);

    for (let k = heap.pop(); k !== undefined; k = heap.pop()) {
      if (!dirty.delete(k) || !this.keys.has(k)) continue;
      remember(k);
      this.release(k, markDirty);
      const { first, step } = probe(k, this.slots);
      const passed: number[] = [];
      let slot = first;
      for (;;) {
        const o = this.owner[slot];
        if (o === undefined) break;
        if (o > k) {
          // k sorts first, so the slot is k's; the evicted key probes again (it sorts after k: later in the heap).
          remember(o);
          this.unlinkPath(o);
          this.assigned.delete(o);
          markDirty(o);
          break;
        }
        passed.push(slot);
        slot = (slot + step) % this.slots;
      }
      this.claim(k, slot, passed);
    }

    const changed = new Set<string>();
    for (const [k, slot] of before) if (this.assigned.get(k)?.slot !== slot) changed.add(k);
    return changed;
  }

  /** Gives `slot` to `k`, remembering the occupied slots its probe passed (their release may move it). */
  private claim(k: string, slot: number, passed: number[]): void {
    this.owner[slot] = k;
    this.assigned.set(k, { slot, passed });
    for (const s of passed) {
      let set = this.passers.get(s);
      if (!set) this.passers.set(s, (set = new Set()));
      set.add(k);
    }
  }

  /** Frees a key's slot; keys that passed that slot may now stop there, so they are marked for re-probing. */
  private release(k: string, markDirty: (k: string) => void): void {
    const a = this.assigned.get(k);
    if (!a) return;
    this.unlinkPath(k);
    this.assigned.delete(k);
    this.owner[a.slot] = undefined;
    for (const p of this.passers.get(a.slot) ?? []) markDirty(p);
  }

  private unlinkPath(k: string): void {
    for (const s of this.assigned.get(k)?.passed ?? []) {
      const set = this.passers.get(s);
      set?.delete(k);
      if (set?.size === 0) this.passers.delete(s);
    }
  }

  /** More keys than slots: who goes without depends on the whole order, so run the greedy pass again. */
  private reallocateAll(before: Map<string, number | undefined>): Set<string> {
    const old = new Map<string, number | undefined>();
    for (const [k, a] of this.assigned) old.set(k, a.slot);
    for (const [k, slot] of before) old.set(k, slot);
    this.assigned.clear();
    this.passers.clear();
    this.owner.fill(undefined);
    const sorted = [...this.keys].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    for (const k of sorted.slice(0, this.slots)) {
      const { first, step } = probe(k, this.slots);
      const passed: number[] = [];
      let slot = first;
      while (this.owner[slot] !== undefined) {
        passed.push(slot);
        slot = (slot + step) % this.slots;
      }
      this.claim(k, slot, passed);
    }
    const changed = new Set<string>();
    for (const k of new Set([...old.keys(), ...this.keys])) if (this.assigned.get(k)?.slot !== old.get(k)) changed.add(k);
    return changed;
  }
}

/** A binary min-heap of keys in code-unit order (the order allocation visits keys in). */
class KeyHeap {
  private readonly items: string[] = [];

  push(k: string): void {
    const a = this.items;
    a.push(k);
    let i = a.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (a[parent]! <= k) break;
      a[i] = a[parent]!;
      i = parent;
    }
    a[i] = k;
  }

  pop(): string | undefined {
    const a = this.items;
    const top = a[0];
    const last = a.pop();
    if (a.length === 0 || last === undefined) return top;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= a.length) break;
      const r = l + 1;
      const c = r < a.length && a[r]! < a[l]! ? r : l;
      if (a[c]! >= last) break;
      a[i] = a[c]!;
      i = c;
    }
    a[i] = last;
    return top;
  }
}

const autoRanges = new BlockList();
autoRanges.addSubnet("240.240.0.0", 16, "ipv4");
autoRanges.addSubnet("2001:2::", 48, "ipv6");

/** Whether an IP literal lies in an auto-allocation range (a declared address there could collide with a VIP). */
export function isInAutoVipRange(address: string): boolean {
  const family = isIP(address);
  return family !== 0 && autoRanges.check(address, family === 4 ? "ipv4" : "ipv6");
}
