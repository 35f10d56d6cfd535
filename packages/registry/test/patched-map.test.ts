// PatchedMap against a plain Map: random patch chains (adds, changes, deletes, re-adds of deleted keys) through
// many folds of the delta into a new base; every version stays as it was when later ones are made.
import { expect } from "chai";
import { PatchedMap } from "../src/patched-map.js";

function sortedEntries(m: ReadonlyMap<string, number>): [string, number][] {
  return [...m].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

describe("PatchedMap", () => {
  it("behaves as a key-sorted Map through chains of patches, and leaves every earlier version untouched", () => {
    let seed = 7;
    const random = (n: number): number => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return (seed >>> 8) % n;
    };
    const key = (): string => `k${String(random(400)).padStart(3, "0")}`;
    let reference = new Map<string, number>();
    let map = PatchedMap.patch<number>(undefined, new Map(Array.from({ length: 200 }, (_, i) => [`k${String(i * 2).padStart(3, "0")}`, i])));
    const versions: { map: ReadonlyMap<string, number>; expected: [string, number][] }[] = [];
    for (const [k, v] of map) reference.set(k, v);
    let patchedSeen = 0;
    for (let step = 0; step < 600; step++) {
      const updates = new Map<string, number | undefined>();
      for (let n = 1 + random(6); n > 0; n--) updates.set(key(), random(3) === 0 ? undefined : step);
      map = PatchedMap.patch(map, updates);
      reference = new Map(reference);
      for (const [k, v] of updates) {
        if (v === undefined) reference.delete(k);
        else reference.set(k, v);
      }
      if (map instanceof PatchedMap) patchedSeen++;
      const expected = sortedEntries(reference);
      expect([...map], `step ${step}: iteration in key order`).to.deep.equal(expected);
      expect(map.size).to.equal(reference.size);
      for (let n = 0; n < 20; n++) {
        const k = key();
        expect(map.get(k), `get ${k}`).to.equal(reference.get(k));
        expect(map.has(k), `has ${k}`).to.equal(reference.has(k));
      }
      expect([...map.keys()]).to.deep.equal(expected.map(([k]) => k));
      expect([...map.values()]).to.deep.equal(expected.map(([, v]) => v));
      const viaForEach: [string, number][] = [];
      map.forEach((v, k, m) => {
        expect(m).to.equal(map);
        viaForEach.push([k, v]);
      });
      expect(viaForEach).to.deep.equal(expected);
      if (step % 50 === 0) versions.push({ map, expected });
    }
    // Both shapes were exercised: patched versions, and folds back into a plain Map.
    expect(patchedSeen).to.be.greaterThan(100);
    expect(patchedSeen).to.be.lessThan(600);
    for (const v of versions) expect([...v.map]).to.deep.equal(v.expected);
  });

  it("returns the previous map itself for an empty patch, and ignores deleting a key that is not there", () => {
    const base = PatchedMap.patch<number>(undefined, new Map([["b", 1], ["a", 2]]));
    expect([...base]).to.deep.equal([["a", 2], ["b", 1]]);
    expect(PatchedMap.patch(base, new Map())).to.equal(base);
    const p = PatchedMap.patch(base, new Map([["zz", undefined]]));
    expect([...p]).to.deep.equal([["a", 2], ["b", 1]]);
    expect(p.size).to.equal(2);
  });
});
