// An immutable key-sorted map made from the previous snapshot's map plus what changed, without copying it.
//
// A snapshot's maps must stay as they are while the next snapshot is built from them, and iterate in key order
// as the full build's do. Copying a 6,000-entry configs map for each change costs more than everything else an
// endpoint change does in the registry (about 1 ms at S=1,000, 5 ms at S=3,000: V8 re-hashes every key). So a
// patched map shares an untouched `base` and carries a small `delta` of changed keys; each patch copies only the
// delta, and once the delta outgrows a few times the square root of the base, it is folded into a new base
// (O(n) once per O(sqrt n) patches).
const GONE: unique symbol = Symbol("deleted");

export class PatchedMap<V> implements ReadonlyMap<string, V> {
  private sortedDelta: string[] | undefined;

  private constructor(
    /** Key-sorted, never mutated. */
    private readonly base: ReadonlyMap<string, V>,
    /** Changed keys: a value, or GONE for a key of `base` that was deleted. Never mutated once built. */
    private readonly delta: ReadonlyMap<string, V | typeof GONE>,
    readonly size: number,
  ) {}

  /**
   * `prev` (key-sorted) with `updates` applied (undefined = delete). Returns `prev` itself when nothing changes.
   * Without `prev`, a fresh map from the non-undefined updates in key order.
   */
  static patch<V>(prev: ReadonlyMap<string, V> | undefined, updates: ReadonlyMap<string, V | undefined>): ReadonlyMap<string, V> {
    if (!prev) {
      const out = new Map<string, V>();
      for (const k of [...updates.keys()].sort(compareStrings)) {
        const v = updates.get(k);
        if (v !== undefined) out.set(k, v);
      }
      return out;
    }
    if (updates.size === 0) return prev;
    const base = prev instanceof PatchedMap ? (prev.base as ReadonlyMap<string, V>) : prev;
    const delta = new Map<string, V | typeof GONE>(prev instanceof PatchedMap ? prev.delta : []);
    let size = prev.size;
    for (const [k, v] of updates) {
      const had = prev.has(k);
      if (v === undefined) {
        if (!had) continue;
        size--;
        if (base.has(k)) delta.set(k, GONE);
        else delta.delete(k);
      } else {
        if (!had) size++;
        delta.set(k, v);
      }
    }
    const patched = new PatchedMap(base, delta, size);
    return delta.size > 64 + 4 * Math.sqrt(base.size) ? new Map(patched) : patched;
  }

  get(key: string): V | undefined {
    // Snapshot maps hold no undefined values, so a miss in the delta means "unchanged".
    const v = this.delta.get(key);
    if (v !== undefined) return v === GONE ? undefined : v;
    return this.base.get(key);
  }

  has(key: string): boolean {
    const v = this.delta.get(key);
    if (v !== undefined) return v !== GONE;
    return this.base.has(key);
  }

  *entries(): MapIterator<[string, V]> {
    // Merge the base (in order) with the keys the delta adds (sorted once, on the first walk).
    this.sortedDelta ??= [...this.delta.keys()].filter((k) => !this.base.has(k)).sort(compareStrings);
    const added = this.sortedDelta;
    let i = 0;
    for (const [k, v] of this.base) {
      while (i < added.length && added[i]! < k) {
        const a = added[i++]!;
        yield [a, this.delta.get(a) as V];
      }
      const d = this.delta.get(k);
      if (d === GONE) continue;
      yield [k, d !== undefined ? d : v];
    }
    while (i < added.length) {
      const a = added[i++]!;
      yield [a, this.delta.get(a) as V];
    }
  }

  *keys(): MapIterator<string> {
    for (const [k] of this.entries()) yield k;
  }

  *values(): MapIterator<V> {
    for (const [, v] of this.entries()) yield v;
  }

  [Symbol.iterator](): MapIterator<[string, V]> {
    return this.entries();
  }

  forEach(callback: (value: V, key: string, map: ReadonlyMap<string, V>) => void, thisArg?: unknown): void {
    for (const [k, v] of this.entries()) callback.call(thisArg, v, k, this);
  }

  get [Symbol.toStringTag](): string {
    return "PatchedMap";
  }
}

function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
