// Coalesces bursts of triggers into one call: it fires once no trigger came for `quietMs`, or `maxMs` after
// the first trigger of the burst, whichever comes first. The quiet period merges the several filesystem
// events of one save (or one `..data` swap); the cap keeps a steady stream of events from starving
// consumers forever.

export interface DebounceOptions {
  quietMs: number;
  maxMs: number;
}

export const DEFAULT_DEBOUNCE: DebounceOptions = { quietMs: 100, maxMs: 1000 };

export class Debouncer {
  private quietTimer: NodeJS.Timeout | undefined;
  private maxTimer: NodeJS.Timeout | undefined;
  private readonly opts: DebounceOptions;

  constructor(
    private readonly fn: () => void,
    opts: Partial<DebounceOptions> = {},
  ) {
    this.opts = { ...DEFAULT_DEBOUNCE, ...opts };
    if (!(this.opts.quietMs >= 0) || !(this.opts.maxMs >= this.opts.quietMs)) {
      throw new RangeError(`debounce needs 0 <= quietMs <= maxMs, got ${JSON.stringify(this.opts)}`);
    }
  }

  /** True while a call is scheduled. */
  get pending(): boolean {
    return this.quietTimer !== undefined;
  }

  trigger(): void {
    if (this.quietTimer) clearTimeout(this.quietTimer);
    this.quietTimer = setTimeout(() => this.fire(), this.opts.quietMs);
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
    this.quietTimer = this.maxTimer = undefined;
  }

  private fire(): void {
    this.cancel();
    this.fn();
  }
}
