import { expect } from "chai";
import { parseDuration } from "@vmpilot/registry";

describe("parseDuration", () => {
  it("reads Go/Istio durations as milliseconds", () => {
    const cases: [string, number][] = [
      ["1s", 1000],
      ["500ms", 500],
      ["1.5s", 1500],
      ["1m30s", 90_000],
      ["1h", 3_600_000],
      ["2h45m", 9_900_000],
      [".5s", 500],
      ["0", 0],
      ["0s", 0],
      ["1500us", 1.5],
      ["1500µs", 1.5],
      ["2000000ns", 2],
    ];
    for (const [s, ms] of cases) expect(parseDuration(s), s).to.equal(ms);
  });

  it("rejects anything else", () => {
    for (const s of ["", "1", "s", "1 s", "-1s", "+1s", "1d", "1S", "1.s5", "1s ", "ms", "1e3s", "1,5s", "NaN", "x".repeat(100)]) {
      expect(parseDuration(s), JSON.stringify(s)).to.equal(undefined);
    }
  });
});
