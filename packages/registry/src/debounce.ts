// Coalesces bursts of triggers into one call: it fires once no trigger came for `quietMs`, or `maxMs` after
// the first trigger of the burst, whichever comes first. The quiet period merges the several filesystem
// events of one save (or one `..data` swap, or a `git pull` of many files); the cap keeps a steady stream of
// events from starving consumers forever.
//
// Waiting is latency, though, and two options cut it where a burst can be told apart from a lone event:
//  - `firstQuietMs`: the quiet period after a trigger that finds nothing pending. A second trigger within it
//    shows a burst is under way and switches to `quietMs`. FileSource uses 60 ms: an editor's atomic save
//    (write a temp file, rename it over) is one `change` event, complete when seen, and a `git pull` of 100 files
//    produces its events a few ms apart (at most ~9 ms on a loaded 2-core machine), so its second event arrives
//    well inside the first window and the pull still becomes one scan. (Why not shorter: file-source.ts.)
//  - `leading`: a trigger that comes at least `quietMs` after the last call, with nothing pending, calls at
//    once (on the next turn of the event loop, so triggers of the same turn share it); triggers after that are
//    debounced as usual. The xDS push uses it: the registry has already merged a burst of file events into
//    one snapshot, so the first snapshot after a quiet spell goes out without waiting, and a storm of snapshots
//    (Consul churn) costs at most one extra push before batching resumes. Istio's PILOT_DEBOUNCE_AFTER (100 ms)
//    waits on every change instead, trading that latency for batching.

export interface DebounceOptions {
  quietMs: number;
  maxMs: number;
  /** Quiet period after a trigger that finds no call pending (default `quietMs`); must not exceed `quietMs`. */
  firstQuietMs?: number;
  /** Call at once on a trigger that comes at least `quietMs` after the last call (default false). */
  leading?: boolean;
}

export const DEFAULT_DEBOUNCE: DebounceOptions = { quietMs: 100, maxMs: 1000 };

export class Debouncer {
  private quietTimer: NodeJS.Timeout | undefined;
  private maxTimer: NodeJS.Timeout | undefined;
  private immediate: NodeJS.Immediate | undefined;
  /** performance.now() of the last call; -Infinity before the first. */
  private lastCall = -Infinity;
  private readonly opts: Required<DebounceOptions>;

  constructor(
    private readonly fn: () => void,
    opts: Partial<DebounceOptions> = {},
  ) {
    const base = { ...DEFAULT_DEBOUNCE, ...opts };
    this.opts = { ...base, firstQuietMs: base.firstQuietMs ?? base.quietMs, leading: base.leading ?? false };
    const { quietMs, maxMs, firstQuietMs } = this.opts;
    if (!(quietMs >= 0) || !(maxMs >= quietMs) || !(firstQuietMs >= 0) || !(firstQuietMs <= quietMs)) {
      throw new RangeError(`debounce needs 0 <= firstQuietMs <= quietMs <= maxMs, got ${JSON.stringify(this.opts)}`);
    }
  }

  /** True while a call is scheduled. */
  get pending(): boolean {
    return this.quietTimer !== undefined || this.immediate !== undefined;
  }

  trigger(): void {
    if (this.immediate) return; // a call is about to run and will see whatever this trigger is about
    if (!this.pending && this.opts.leading && performance.now() - this.lastCall >= this.opts.quietMs) {
      this.immediate = setImmediate(() => this.fire());
      return;
    }
    const quiet = this.pending ? this.opts.quietMs : this.opts.firstQuietMs;
    if (this.quietTimer) clearTimeout(this.quietTimer);
    this.quietTimer = setTimeout(() => this.fire(), quiet);
    this.maxTimer ??= setTimeout(() => this.fire(), this.opts.maxMs);
  }

  /** Calls now if a call is pending. */
  flush(): void {
    if (this.pending) this.fire();
  }

  /** Drops a pending call. */
  cancel(): void {
    clearTimeout(this.quietTimer);
    clearTimeout(this.maxTimer);
    if (this.immediate) clearImmediate(this.immediate);
    this.quietTimer = this.maxTimer = this.immediate = undefined;
  }

  private fire(): void {
    this.cancel();
    this.lastCall = performance.now();
    this.fn();
  }
}
