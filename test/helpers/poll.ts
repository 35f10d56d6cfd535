// Waiting in tests: poll a condition until it holds, with a deadline, never a fixed sleep. The machine running
// the suite may be loaded (two cores, CI neighbours), so how long something takes is the benchmark's business;
// a test only fails when the thing never happens within a generous deadline. Every suite uses this one helper.

/** What a truthy value of T can be (a probe may say "not yet" with undefined, null or false). */
type Truthy<T> = Exclude<T, undefined | null | false | "" | 0>;

export interface PollOptions {
  /** Give up after this long (default 15 s). */
  timeoutMs?: number;
  /** Time between probes (default 20 ms). */
  everyMs?: number;
  /** Errors that end the wait at once instead of being retried (a process that exited, say). */
  fatal?: (err: unknown) => boolean;
}

/**
 * Resolves with the first truthy value `probe` returns. A probe that throws is retried (its last error is
 * reported if the deadline passes), so "not listening yet" and "not there yet" read the same. Short form:
 * `until(what, probe, timeoutMs, everyMs)`.
 */
export async function until<T>(what: string, probe: () => T | Promise<T>, opts: PollOptions | number = {}, everyMs?: number): Promise<Truthy<Awaited<T>>> {
  const o: PollOptions = typeof opts === "number" ? { timeoutMs: opts, ...(everyMs !== undefined ? { everyMs } : {}) } : opts;
  const { timeoutMs = 15_000, fatal } = o;
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v) return v as Truthy<Awaited<T>>;
    } catch (err) {
      if (fatal?.(err)) throw err;
      lastError = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError ? ` (last error: ${(lastError as Error).message})` : ""}`);
    }
    await new Promise((r) => setTimeout(r, o.everyMs ?? 20));
  }
}
