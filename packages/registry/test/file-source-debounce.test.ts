// The Debouncer behind FileSource (and the xDS push path): bursts coalesce, a steady stream is capped.
import { expect } from "chai";
import { Debouncer } from "../src/debounce.js";
import { until } from "../../../test/helpers/poll.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

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

  it("rejects a cap shorter than the quiet period, and a first quiet period longer than it", () => {
    expect(() => new Debouncer(() => undefined, { quietMs: 100, maxMs: 50 })).to.throw(RangeError);
    expect(() => new Debouncer(() => undefined, { quietMs: 100, maxMs: 500, firstQuietMs: 200 })).to.throw(RangeError);
  });

  it("calls a lone trigger after the first quiet period, and waits for the full one once a second trigger shows a burst", async () => {
    let calls = 0;
    const d = new Debouncer(() => calls++, { quietMs: 400, maxMs: 10_000, firstQuietMs: 20 });
    d.trigger();
    // Well before the full quiet period could have run out (timers fire late, never early).
    await until("the lone trigger's call", () => calls === 1, 350);

    d.trigger();
    await sleep(5);
    d.trigger(); // a burst: now the full quiet period applies
    await sleep(150);
    expect(calls, "a burst is not cut short by the first quiet period").to.equal(1);
    await until("the burst's call", () => calls === 2);
    await sleep(500);
    expect(calls).to.equal(2);
  });

  it("with leading, calls at once after a quiet spell (triggers of the same turn sharing the call) and debounces what follows", async () => {
    let calls = 0;
    const d = new Debouncer(() => calls++, { quietMs: 200, maxMs: 1000, leading: true });
    d.trigger();
    d.trigger();
    d.trigger();
    expect(d.pending).to.equal(true);
    await new Promise((r) => setImmediate(r));
    expect(calls, "one call for the three triggers of one turn, without waiting").to.equal(1);

    // Right after a call: debounced as usual, so a storm costs at most one extra call before batching resumes.
    d.trigger();
    await new Promise((r) => setImmediate(r));
    d.trigger();
    await sleep(50);
    expect(calls).to.equal(1);
    await until("the trailing call", () => calls === 2);

    // Quiet again for longer than quietMs: the next trigger is called at once again.
    await sleep(300);
    d.trigger();
    await new Promise((r) => setImmediate(r));
    expect(calls).to.equal(3);
    d.trigger();
    d.cancel();
    await sleep(300);
    expect(calls, "cancel drops a pending call").to.equal(3);
  });
});
