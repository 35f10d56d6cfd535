import { expect } from "chai";
import { Backoff } from "../src/backoff.js";
import { renewalDelayMs } from "../src/certs.js";

describe("backoff and renewal timing", () => {
  it("doubles from the minimum up to the cap, jittered into the upper half, and resets", () => {
    const top = new Backoff(100, 1000, () => 1);
    expect([1, 2, 3, 4, 5, 6].map(() => top.next())).to.deep.equal([100, 200, 400, 800, 1000, 1000]);
    const bottom = new Backoff(100, 1000, () => 0);
    expect([1, 2, 3].map(() => bottom.next())).to.deep.equal([50, 100, 200]);
    top.reset();
    expect(top.next()).to.equal(100);
  });

  it("renews at half the lifetime, within ±10 % of it, never in the past", () => {
    const nb = new Date(0);
    const na = new Date(1000_000);
    expect(renewalDelayMs(nb, na, 0, () => 0.5)).to.equal(500_000);
    expect(renewalDelayMs(nb, na, 0, () => 0)).to.equal(400_000);
    expect(renewalDelayMs(nb, na, 0, () => 1)).to.equal(600_000);
    expect(renewalDelayMs(nb, na, 250_000, () => 0.5)).to.equal(250_000);
    expect(renewalDelayMs(nb, na, 900_000, () => 0.5)).to.equal(0);
  });
});
