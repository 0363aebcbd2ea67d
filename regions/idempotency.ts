// The request id as an idempotency key at the router: a call whose id (within its account) is
// already running here waits for that run and gets its answer; one that finished a short while
// ago gets the stored answer. So an edge, client or proxy that sends the same call twice makes
// it run once. Answers the region gave before handing the call to a node (notStarted) are not
// kept: nothing ran, so a later try may run it. The store is bounded in entries and bytes and
// entries live a few minutes; the key includes the account, so one tenant cannot read
// another's answer by guessing ids. A repeat whose inputs differ from the first (same id, other
// call) is refused rather than answered with the first call's result.

export interface IdempotencyLimits {
  maxEntries: number;
  maxBytes: number;
  ttlMs: number;
}

/** Set on an answer given to a repeat (it ran nothing): the edge bills no compute for it. */
export const REPEAT_HEADER = "x-mesh-repeat";

export const IDEMPOTENCY_DEFAULTS: IdempotencyLimits = { maxEntries: 10_000, maxBytes: 64 * 1024 * 1024, ttlMs: 5 * 60_000 };

/** One answer as it goes back on the wire: the same bytes for every caller of the id. */
export interface StoredAnswer {
  status: number;
  body: Uint8Array;
  /** Set on refusals before dispatch: not kept, a later try may run the call. */
  notStarted: boolean;
}

export type Outcome =
  | { kind: "answer"; answer: StoredAnswer; shared: boolean }
  /** The id is known here for a different call (other model or inputs). */
  | { kind: "conflict" };

interface Done {
  fingerprint: string;
  answer: StoredAnswer;
  expires: number;
}

export class IdempotentCalls {
  private readonly running = new Map<string, { fingerprint: string; answer: Promise<StoredAnswer> }>();
  // Map order is insertion order: the oldest entry is evicted first.
  private readonly done = new Map<string, Done>();
  private bytes = 0;
  /** Calls answered from a running one or from the store (not run again). */
  shared = 0;

  constructor(
    private readonly limits: IdempotencyLimits = IDEMPOTENCY_DEFAULTS,
    private readonly now: () => number = Date.now,
  ) {}

  get size(): { entries: number; bytes: number } {
    return { entries: this.done.size, bytes: this.bytes };
  }

  /**
   * Runs `run` once per (account, id): a repeat joins the running call or gets its stored
   * answer. `fingerprint` names the call's content (model and inputs). `run` must not throw:
   * every outcome, failures included, is an answer.
   */
  async call(account: string, requestId: string, fingerprint: string, run: () => Promise<StoredAnswer>): Promise<Outcome> {
    const key = `${account}\u0000${requestId}`;
    const stored = this.lookup(key);
    if (stored) {
      if (stored.fingerprint !== fingerprint) return { kind: "conflict" };
      this.shared++;
      return { kind: "answer", answer: stored.answer, shared: true };
    }
    const live = this.running.get(key);
    if (live) {
      if (live.fingerprint !== fingerprint) return { kind: "conflict" };
      this.shared++;
      return { kind: "answer", answer: await live.answer, shared: true };
    }
    const answer = run();
    this.running.set(key, { fingerprint, answer });
    try {
      const a = await answer;
      if (!a.notStarted) this.store(key, { fingerprint, answer: a, expires: this.now() + this.limits.ttlMs });
      return { kind: "answer", answer: a, shared: false };
    } finally {
      this.running.delete(key);
    }
  }

  private lookup(key: string): Done | undefined {
    const d = this.done.get(key);
    if (d && d.expires <= this.now()) {
      this.remove(key, d);
      return undefined;
    }
    return d;
  }

  private store(key: string, d: Done): void {
    const size = d.answer.body.byteLength;
    // An answer bigger than the whole budget is not kept (a repeat after it ends runs again).
    if (size > this.limits.maxBytes) return;
    const old = this.done.get(key);
    if (old) this.remove(key, old);
    this.done.set(key, d);
    this.bytes += size;
    // Every entry lives as long, so insertion order is also expiry order: drop from the front
    // what has expired, then what the bounds do not leave room for.
    const now = this.now();
    for (const [k, v] of this.done) {
      if (v.expires > now && this.done.size <= this.limits.maxEntries && this.bytes <= this.limits.maxBytes) break;
      this.remove(k, v);
    }
  }

  private remove(key: string, d: Done): void {
    this.done.delete(key);
    this.bytes -= d.answer.body.byteLength;
  }
}
