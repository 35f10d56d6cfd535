// A cap on response bytes written to streams but not yet taken by the transport, across all streams.
//
// A connect storm asks for megabytes per sidecar (every cluster and ClusterLoadAssignment of a large mesh) from
// a thousand sidecars at once. Written all at once, those responses sit in HTTP/2 buffers until each client
// reads them: gigabytes of server memory for data that leaves at loopback or network speed anyway. With the cap,
// a stream whose turn it is to send waits (like a response waiting for its ACK) until the transport has taken
// enough of what is already queued; the wait costs nothing when the transport keeps up.

/** What a waiting stream is called back with. */
export interface BudgetWaiter {
  resume(): void;
}

export class SendBudget {
  private inFlight = 0;
  private readonly waiting = new Set<BudgetWaiter>();

  constructor(readonly maxBytes: number) {}

  /** Whether a response may be written now; if not, `waiter` is resumed once it may. */
  admit(waiter: BudgetWaiter): boolean {
    if (this.inFlight < this.maxBytes) return true;
    this.waiting.add(waiter);
    return false;
  }

  /** Counts `bytes` as written; the returned function (idempotent) releases them once the transport took them. */
  take(bytes: number): () => void {
    this.inFlight += bytes;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.inFlight -= bytes;
      // Once half the cap is free, resume waiters in arrival order, only while there is room: resuming them all
      // at once would have each re-plan only to find the cap full again.
      if (this.inFlight > this.maxBytes / 2) return;
      for (const w of this.waiting) {
        if (this.inFlight >= this.maxBytes) break;
        this.waiting.delete(w);
        w.resume();
      }
    };
  }

  forget(waiter: BudgetWaiter): void {
    this.waiting.delete(waiter);
  }

  get bytesInFlight(): number {
    return this.inFlight;
  }
}
