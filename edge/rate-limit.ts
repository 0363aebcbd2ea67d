// Rate limits as token buckets (GCRA: `perSecond` sustained, `burst` at once), decided in this
// isolate with no I/O, and kept in step with one shared bucket per id in Redis. The edge keeps
// one bucket per account (all its keys share it), one more per key that has its own tighter
// limit (a call must pass both: checkAll), and one per client address for failed
// authentications (isolate only: junk must not cost Redis writes).
//
// Each isolate mirrors the shared bucket: it decides locally, counts what it let through, and
// at most every SYNC_MS sends that count to Redis (one EVAL, in the background), which adds it to
// the shared bucket and answers with the shared state, i.e. what every isolate consumed. The
// isolate then holds the later of its own view and the shared one. So one isolate is exact, and
// many isolates together overshoot by at most what they let through within one sync interval.
// The first call of a key in an isolate waits for one sync (bounded by the shared store's
// timeout), so a fresh isolate does not hand out a full burst the key already spent elsewhere.
//
// When Redis is unreachable the syncs fail and each isolate's own bucket is the limit: never
// unlimited, and never refusing everyone because Redis is down. Pending counts are kept and
// sent once Redis answers again.

/** Sustained calls per second, and how many may come at once. */
export interface RateLimit {
  perSecond: number;
  burst: number;
}

/** The slice of the shared store (redis.ts) the limiter uses; tests pass a fake. */
export interface LimiterStore {
  available(): boolean;
  run<T>(op: (r: LimiterRedis) => Promise<T>): Promise<T>;
}

export interface LimiterRedis {
  eval<A extends unknown[], R>(script: string, keys: string[], args: A): Promise<R>;
}

export const SYNC_MS = 100;
const BUCKET_KEY = (id: string) => `mesh:rl:${id}`;
const MAX_BUCKETS = 50_000;

export interface RateDecision {
  allowed: boolean;
  /** When refused: ms until one call would pass. */
  retryAfterMs: number;
  /** Calls that could pass right now after this one. */
  remaining: number;
}

/**
 * GCRA, pure: `tat` is the bucket's theoretical arrival time (ms). A call passes when, after it,
 * the bucket is no more than `burst` calls ahead of now.
 */
export function gcra(tat: number, now: number, limit: RateLimit): RateDecision & { tat: number } {
  const interval = 1000 / limit.perSecond;
  const next = Math.max(tat, now) + interval;
  const allowAt = next - limit.burst * interval;
  if (allowAt > now) return { allowed: false, retryAfterMs: allowAt - now, remaining: 0, tat };
  return { allowed: true, retryAfterMs: 0, remaining: Math.floor((now - allowAt) / interval), tat: next };
}

// The shared bucket: adds ARGV[1] calls of ARGV[2] ms each to KEYS[1]'s TAT (from Redis's own
// clock, so every isolate shares one time base) and returns {tat, now} as strings (Lua numbers
// would be truncated to integers).
const SYNC_SCRIPT = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local n = tonumber(ARGV[1])
if n > 0 then
  tat = tat + n * tonumber(ARGV[2])
  redis.call('SET', KEYS[1], tostring(tat), 'PX', math.max(1000, math.ceil(tat - now) + 1000))
end
return {tostring(tat), tostring(now)}
`;

/**
 * What an isolate keeps to stay in step with a shared count it mirrors (a rate bucket here, a
 * monthly counter in quota.ts): both decide locally and sync the same way.
 */
export interface SyncState {
  /** Calls let through here and not yet sent to Redis. */
  pending: number;
  lastSync: number;
  syncing: Promise<void> | null;
  flushTimer: boolean;
  /** Whether this isolate has heard the shared state at least once. */
  synced: boolean;
}

interface Bucket extends SyncState {
  tat: number;
}

/** What a limiter (or the quota) needs besides its own state: the shared store (null: this isolate only), background work, and a clock for tests. */
export interface SharedCountDeps<Store> {
  store: Store | null;
  waitUntil: (p: Promise<unknown>) => void;
  now?: () => number;
}

export type LimiterDeps = SharedCountDeps<LimiterStore>;

/**
 * Sends a mirrored count's pending calls to Redis (`sync`): at once when the last sync is
 * `syncMs` old, else once, on a timer, when it will be (a sync or timer already pending covers it).
 */
export function scheduleSync(state: SyncState, deps: SharedCountDeps<unknown>, syncMs: number, sync: () => Promise<void>): void {
  if (!deps.store || state.syncing || state.flushTimer) return;
  const wait = state.lastSync + syncMs - (deps.now ?? Date.now)();
  if (wait <= 0) {
    deps.waitUntil(sync().catch(() => undefined));
    return;
  }
  state.flushTimer = true;
  deps.waitUntil(
    new Promise((r) => setTimeout(r, wait))
      .then(() => {
        state.flushTimer = false;
        if (state.pending > 0 && !state.syncing) return sync();
      })
      .catch(() => undefined),
  );
}

/** One bucket a call must pass: its id (`acct:...`, `key:...`) and its limit. */
export interface BucketCheck {
  id: string;
  limit: RateLimit;
}

export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();

  check(id: string, limit: RateLimit, deps: LimiterDeps): Promise<RateDecision> {
    return this.checkAll([{ id, limit }], deps);
  }

  /**
   * One call against several buckets at once (an account's and a key's own): it passes only
   * when every bucket has room, and then takes one from each; a refused call takes from none,
   * so a key's tight bucket cannot drain its account's. `remaining` is the smallest; when
   * refused, `retryAfterMs` is the longest wait.
   */
  async checkAll(checks: BucketCheck[], deps: LimiterDeps): Promise<RateDecision> {
    const now = deps.now ?? Date.now;
    const held = checks.map(({ id, limit }) => ({ id, limit, b: this.bucket(id, now()) }));
    // First sight in this isolate: learn what each bucket already spent elsewhere. (Only then
    // awaited: a bucket already in step decides with no I/O and no extra turn of the queue.)
    if (held.some(({ b }) => !b.synced) && deps.store?.available()) {
      await Promise.all(held.map(({ id, limit, b }) => (!b.synced ? this.sync(id, b, limit, deps).catch(() => undefined) : undefined)));
    }
    const t = now();
    const decisions = held.map(({ limit, b }) => gcra(b.tat, t, limit));
    const refused = decisions.filter((d) => !d.allowed);
    if (refused.length > 0) return { allowed: false, retryAfterMs: Math.max(...refused.map((d) => d.retryAfterMs)), remaining: 0 };
    held.forEach(({ id, limit, b }, i) => {
      b.tat = decisions[i]!.tat;
      b.pending++;
      this.scheduleSync(id, b, limit, deps);
    });
    return { allowed: true, retryAfterMs: 0, remaining: Math.min(...decisions.map((d) => d.remaining)) };
  }

  /** What a call would get now, taking nothing and asking Redis nothing (this isolate's view). */
  peek(id: string, limit: RateLimit, now = Date.now()): RateDecision {
    const b = this.buckets.get(id);
    const d = gcra(b?.tat ?? 0, now, limit);
    return { allowed: d.allowed, retryAfterMs: d.retryAfterMs, remaining: d.remaining };
  }

  private bucket(id: string, now: number): Bucket {
    let b = this.buckets.get(id);
    if (!b) {
      if (this.buckets.size >= MAX_BUCKETS) this.prune(now);
      b = { tat: 0, pending: 0, lastSync: 0, syncing: null, flushTimer: false, synced: false };
      this.buckets.set(id, b);
    }
    return b;
  }

  private scheduleSync(id: string, b: Bucket, limit: RateLimit, deps: LimiterDeps): void {
    scheduleSync(b, deps, SYNC_MS, () => this.sync(id, b, limit, deps));
  }

  private sync(id: string, b: Bucket, limit: RateLimit, deps: LimiterDeps): Promise<void> {
    if (b.syncing) return b.syncing;
    const store = deps.store;
    if (!store || !store.available()) return Promise.resolve();
    const now = deps.now ?? Date.now;
    const sent = b.pending;
    b.pending = 0;
    const interval = 1000 / limit.perSecond;
    b.lastSync = now();
    b.syncing = store
      .run((r) => r.eval<[string, string], [string, string]>(SYNC_SCRIPT, [BUCKET_KEY(id)], [String(sent), String(interval)]))
      .then(([tatText, redisNowText]) => {
        const received = now();
        const offset = Number(redisNowText) - received;
        // Calls let through while the sync was out are in our TAT but not yet in Redis's.
        const shared = Number(tatText) - offset + b.pending * interval;
        if (Number.isFinite(shared)) b.tat = Math.max(b.tat, shared);
        b.synced = true;
      })
      .catch((err: unknown) => {
        b.pending += sent; // sent again next time
        throw err;
      })
      .finally(() => {
        b.syncing = null;
      })
      // Calls let through while this sync was out found it busy and scheduled nothing: send
      // them now rather than on some later call. (Not after a failure: no retry loop.)
      .then(() => {
        if (b.pending > 0) this.scheduleSync(id, b, limit, deps);
      });
    return b.syncing;
  }

  private prune(now: number): void {
    for (const [id, b] of this.buckets) if (b.pending === 0 && !b.syncing && b.tat < now - 60_000) this.buckets.delete(id);
    if (this.buckets.size >= MAX_BUCKETS) this.buckets.clear();
  }
}
