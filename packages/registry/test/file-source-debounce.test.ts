// The Debouncer behind FileSource (and the xDS push path): bursts coalesce, a steady stream is capped.
import { expect } from "chai";
import { Debouncer } from "../src/debounce.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, probe: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!probe()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await sleep(10);
  }
}

describe("Debouncer", function () {
  this.timeout(30_000);

  it("calls once for a burst of triggers", async () => {
    let calls = 0;
    const d = new Debouncer(() => calls++, { quietMs: 50, maxMs: 1000 });
    for (let i = 0; i < 20; i++) d.trigger();
    expect(d.pending).to.equal(true);
    expect(calls).to.equal(0);
    await until("the call", () => calls > 0);
    await sleep(300); // room for a wrong second call
    expect(calls).to.equal(1);
    expect(d.pending).to.equal(false);
  });

  it("calls at least every maxMs while triggers keep coming faster than the quiet period", async () => {
    let calls = 0;
    const d = new Debouncer(() => calls++, { quietMs: 200, maxMs: 400 });
    const end = Date.now() + 2000;
    while (Date.now() < end) {
      d.trigger();
      await sleep(10);
    }
    // Without the cap a trigger every 10 ms would hold the call back until the stream stops.
    expect(calls).to.be.at.least(2);
    d.cancel();
  });

  it("runs a pending call on flush and drops it on cancel", async () => {
    let calls = 0;
    const d = new Debouncer(() => calls++, { quietMs: 50, maxMs: 100 });
    d.flush();
    expect(calls).to.equal(0);
    d.trigger();
    d.flush();
    expect(calls).to.equal(1);
    d.trigger();
    d.cancel();
    await sleep(300);
    expect(calls).to.equal(1);
  });

  it("rejects a cap shorter than the quiet period", () => {
    expect(() => new Debouncer(() => undefined, { quietMs: 100, maxMs: 50 })).to.throw(RangeError);
  });
});
