// A read-through cache in three layers: this isolate's memory, then a shared store (Redis),
// then the source of truth (D1). Built for lookups on the call path (API keys, models):
//
// - Every entry carries `checkedAt`, when the source of truth was read (the read's *start*), and
//   every layer judges age by it, so an entry copied from Redis is exactly as old as the D1 read
//   behind it. That makes the bound on staleness a property of the cache, not of its callers: no
//   answer is ever based on a D1 read older than `maxAgeMs`.
// - Younger than `freshMs`: served from memory with no I/O at all.
// - Between `freshMs` and `maxAgeMs`: still served at once, and reloaded in the background
//   (stale-while-revalidate), so a steadily used entry never makes a caller wait.
// - Older than `maxAgeMs`, or absent: the caller waits for a load. Concurrent misses for one
//   key share one load (de-duplicated).
// - "Not found" (null) is cached too, with its own ages (negative caching), so a flood of
//   unknown keys does not become a flood of D1 reads.
// - `evict` drops an entry here and in the shared store at once, and a load that began before
//   the eviction cannot put the old value back.
//
// A shared store that fails or times out is skipped; the source of truth still answers.

export interface Stamped<V> {
  value: V | null;
  /** When the source of truth was read for this value (ms since epoch). */
  checkedAt: number;
}

export interface SharedLayer<V> {
  get(key: string): Promise<Stamped<V> | null>;
  set(key: string, entry: Stamped<V>, ttlMs: number): Promise<unknown>;
  delete(key: string): Promise<unknown>;
}

export interface Ages {
  /** Served with no I/O while younger than this. */
  freshMs: number;
  /** Never served older than this (the bound). */
  maxAgeMs: number;
}

export interface LayeredCacheOptions {
  positive: Ages;
  /** Ages for "not found"; defaults to `positive`. */
  negative?: Ages;
  maxEntries?: number;
  /** The clock (tests drive it). */
  now?: () => number;
}

export interface LookupContext<V> {
  shared?: SharedLayer<V> | null;
  /** Keeps background work (reloads, shared-store writes) alive after the response. */
  waitUntil?: (p: Promise<unknown>) => void;
}

export type CacheOutcome = "fresh" | "stale" | "shared" | "loaded";

export class LayeredCache<V> {
  private readonly entries = new Map<string, Stamped<V>>();
  /** Loads under way, with when each started: a caller joins one only while its read is young enough. */
  private readonly loading = new Map<string, { p: Promise<Stamped<V>>; startedAt: number }>();
  private readonly evictedAt = new Map<string, number>();
  private readonly positive: Ages;
  private readonly negative: Ages;
  private readonly maxEntries: number;
  private readonly now: () => number;
  /** Counters for tests and the bench: how lookups were answered. */
  readonly stats: Record<CacheOutcome, number> = { fresh: 0, stale: 0, shared: 0, loaded: 0 };

  constructor(opts: LayeredCacheOptions) {
    this.positive = opts.positive;
    this.negative = opts.negative ?? opts.positive;
    this.maxEntries = opts.maxEntries ?? 10_000;
    this.now = opts.now ?? Date.now;
    if (this.positive.freshMs > this.positive.maxAgeMs || this.negative.freshMs > this.negative.maxAgeMs) {
      throw new Error("LayeredCache: freshMs must not exceed maxAgeMs");
    }
  }

  private ages(entry: Stamped<V>): Ages {
    return entry.value === null ? this.negative : this.positive;
  }

  async get(key: string, load: () => Promise<V | null>, ctx: LookupContext<V> = {}): Promise<V | null> {
    const hit = this.entries.get(key);
    if (hit) {
      const age = this.now() - hit.checkedAt;
      const ages = this.ages(hit);
      if (age < ages.freshMs) {
        this.stats.fresh++;
        return hit.value;
      }
      if (age < ages.maxAgeMs) {
        this.stats.stale++;
        if (!this.loading.has(key)) {
          const p = this.reload(key, load, ctx, hit.checkedAt);
          // A failed background reload leaves the entry to age out; the next caller past
          // maxAgeMs waits for (and sees the error of) a fresh load.
          ctx.waitUntil?.(p.catch(() => undefined));
        }
        return hit.value;
      }
    }
    return (await this.reload(key, load, ctx, -Infinity)).value;
  }

  /** Forget `key` here and in the shared store; loads already under way cannot restore it. */
  evict(key: string, ctx: LookupContext<V> = {}): Promise<void> {
    this.entries.delete(key);
    this.evictedAt.set(key, this.now());
    if (this.evictedAt.size > this.maxEntries) {
      // Evictions only matter for loads in flight (seconds); the oldest can go.
      const cutoff = this.now() - 60_000;
      for (const [k, t] of this.evictedAt) if (t < cutoff) this.evictedAt.delete(k);
    }
    const shared = ctx.shared;
    if (!shared) return Promise.resolve();
    return shared.delete(key).then(
      () => undefined,
      () => undefined,
    );
  }

  /** Drops every in-memory entry (tests). */
  clear(): void {
    this.entries.clear();
  }

  private reload(key: string, load: () => Promise<V | null>, ctx: LookupContext<V>, haveCheckedAt: number): Promise<Stamped<V>> {
    const now = this.now();
    const pending = this.loading.get(key);
    // A load that started more than a bound ago (a slow read) would answer with a read older
    // than the bound: start another instead of joining it.
    const bound = Math.min(this.positive.maxAgeMs, this.negative.maxAgeMs);
    if (pending && now - pending.startedAt < bound) return pending.p;
    const p = this.fetch(key, load, ctx, haveCheckedAt).finally(() => {
      if (this.loading.get(key)?.p === p) this.loading.delete(key);
    });
    this.loading.set(key, { p, startedAt: now });
    return p;
  }

  private async fetch(key: string, load: () => Promise<V | null>, ctx: LookupContext<V>, haveCheckedAt: number): Promise<Stamped<V>> {
    const shared = ctx.shared;
    if (shared) {
      try {
        const s = await shared.get(key);
        // Worth taking only if it is fresh, and newer than what this isolate already has.
        // An entry read before an eviction here is exactly what the eviction was about: skip it.
        if (
          s &&
          typeof s.checkedAt === "number" &&
          s.checkedAt > haveCheckedAt &&
          this.now() - s.checkedAt < this.ages(s).freshMs &&
          this.store(key, s)
        ) {
          this.stats.shared++;
          return s;
        }
      } catch {
        /* the shared store is optional: fall through to the source of truth */
      }
    }
    const checkedAt = this.now();
    const value = await load();
    const entry: Stamped<V> = { value, checkedAt };
    this.stats.loaded++;
    if (this.store(key, entry) && shared) {
      const write = shared.set(key, entry, this.ages(entry).maxAgeMs).catch(() => undefined);
      if (ctx.waitUntil) ctx.waitUntil(write);
    }
    return entry;
  }

  /** Keeps `entry` unless an eviction came after its read; true when kept. */
  private store(key: string, entry: Stamped<V>): boolean {
    const evicted = this.evictedAt.get(key);
    if (evicted !== undefined && entry.checkedAt <= evicted) return false;
    const cur = this.entries.get(key);
    if (cur && cur.checkedAt > entry.checkedAt) return false;
    this.entries.delete(key);
    if (this.entries.size >= this.maxEntries) {
      // Oldest-inserted first (Map order): drop a tenth, so the cost is paid rarely.
      let drop = Math.max(1, Math.floor(this.maxEntries / 10));
      for (const k of this.entries.keys()) {
        this.entries.delete(k);
        if (--drop === 0) break;
      }
    }
    this.entries.set(key, entry);
    return true;
  }
}

/** A shared layer in Redis: JSON `{value, checkedAt}` under `prefix + key`, expiring with the bound. */
export function redisLayer<V>(
  store: { available(): boolean; run<T>(op: (r: RedisLike) => Promise<T>): Promise<T> } | null,
  prefix: string,
): SharedLayer<V> | null {
  if (!store) return null;
  const unavailable = () => Promise.reject(new Error("shared store unavailable"));
  return {
    get: (key) => (store.available() ? store.run((r) => r.get<Stamped<V>>(prefix + key)) : unavailable()),
    set: (key, entry, ttlMs) => (store.available() ? store.run((r) => r.set(prefix + key, entry, { px: Math.max(1, Math.ceil(ttlMs)) })) : unavailable()),
    // Eviction is the one write that matters for the bound's practice: always try it.
    delete: (key) => store.run((r) => r.del(prefix + key)),
  };
}

/** The slice of the Redis client the layer uses (keeps tests free of the real client). */
export interface RedisLike {
  get<T>(key: string): Promise<T | null>;
  set(key: string, value: unknown, opts: { px: number }): Promise<unknown>;
  del(...keys: string[]): Promise<number>;
}
