// One blocking-query loop on one Consul key, with the client rules of Consul's "Blocking Queries" docs:
// - pass the last X-Consul-Index as `index` with a `wait`, so the server holds the request until something changes;
// - an index that goes backwards (snapshot restore, rebuilt cluster) resets to 0, i.e. the next query does not block;
// - an index of 0 is a server bug: use 1 so the next query still blocks instead of spinning;
// - rate limit: at least `minInterval` (plus jitter) between two queries, because a return is no proof of a change;
// - errors back off exponentially with jitter, capped. After an error the next query does not block: a Consul that
//   came back with a lower index (restored, or a new dev agent) is then noticed at once, not after a whole `wait`.

export interface QueryMeta {
  /** X-Consul-Index. */
  index: number;
  knownLeader: boolean;
  /** X-Consul-LastContact, milliseconds since the answering server last heard from the leader. */
  lastContact: number;
  /** X-Consul-Results-Filtered-By-ACLs: the token may not read everything. */
  filteredByAcls: boolean;
}

export interface QueryResult<T> {
  body: T;
  meta: QueryMeta;
}

/** Performs one query; `index` 0 means a non-blocking read. Must reject when `signal` aborts. */
export type QueryFn<T> = (index: number, signal: AbortSignal) => Promise<QueryResult<T>>;

export interface BlockingWatchOptions {
  minInterval: number;
  jitter: number;
  backoff: { initial: number; max: number };
}

export interface BlockingWatchHandlers<T> {
  result(result: QueryResult<T>): void;
  error(err: unknown, consecutiveFailures: number): void;
}

/** Next index after a response, per Consul's rules. `previous` is the index the query was sent with. */
export function nextIndex(previous: number, returned: number): number {
  if (returned < previous) return 0;
  if (returned < 1) return 1;
  return returned;
}

/** Exponential backoff with "equal jitter": half fixed, half random, so retries of many watchers spread out. */
export function backoffDelay(failures: number, initial: number, max: number, random: () => number = Math.random): number {
  const base = Math.min(max, initial * 2 ** Math.max(0, Math.min(failures - 1, 30)));
  return base / 2 + random() * (base / 2);
}

export class BlockingWatch<T> {
  private indexValue = 0;
  private failures = 0;
  private lastStart = -Infinity;
  private stopped = true;
  /** Aborts the in-flight query or the current sleep. */
  private current: AbortController | undefined;
  private loopDone: Promise<void> = Promise.resolve();

  constructor(
    readonly key: string,
    private readonly query: QueryFn<T>,
    private readonly handlers: BlockingWatchHandlers<T>,
    private readonly opts: BlockingWatchOptions,
  ) {}

  /** Index the next query will carry. */
  get index(): number {
    return this.indexValue;
  }

  get consecutiveFailures(): number {
    return this.failures;
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.loopDone = this.loop();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.current?.abort();
    await this.loopDone;
  }

  /**
   * Re-query now (e.g. the ACL token changed): ends the current wait or backoff sleep and forgets the failure count.
   * The index is kept, but the next query does not block so the caller sees the answer at once.
   */
  kick(): void {
    if (this.stopped) return;
    this.failures = 0;
    this.kicked = true;
    this.current?.abort();
  }
  private kicked = false;

  private async loop(): Promise<void> {
    let blockNext = false; // the very first query is a plain read
    while (!this.stopped) {
      await this.sleep(this.lastStart + this.opts.minInterval * (1 + Math.random() * this.opts.jitter) - performance.now());
      if (this.stopped) return;
      if (this.kicked) {
        this.kicked = false;
        blockNext = false;
      }
      const sent = blockNext ? this.indexValue : 0;
      this.lastStart = performance.now();
      const ac = new AbortController();
      this.current = ac;
      try {
        const r = await this.query(sent, ac.signal);
        if (this.stopped) return;
        // After a non-blocking read the comparison is with the index we held, so a backwards move is still caught.
        this.indexValue = nextIndex(this.indexValue, r.meta.index);
        blockNext = this.indexValue > 0;
        this.failures = 0;
        this.handlers.result(r);
      } catch (err) {
        if (this.stopped) return;
        if (this.kicked && ac.signal.aborted) continue;
        this.failures++;
        blockNext = false;
        this.handlers.error(err, this.failures);
        await this.sleep(backoffDelay(this.failures, this.opts.backoff.initial, this.opts.backoff.max));
      } finally {
        if (this.current === ac) this.current = undefined;
      }
    }
  }

  /** Sleeps `ms` unless stopped or kicked first. */
  private sleep(ms: number): Promise<void> {
    if (ms <= 0 || this.stopped) return Promise.resolve();
    const ac = new AbortController();
    this.current = ac;
    return new Promise<void>((resolve) => {
      const t = setTimeout(done, ms);
      ac.signal.addEventListener("abort", done, { once: true });
      function done() {
        clearTimeout(t);
        resolve();
      }
    }).finally(() => {
      if (this.current === ac) this.current = undefined;
    });
  }
}
