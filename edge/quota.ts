// Per-account monthly request quota (inference calls, calendar month in UTC). Every account's
// calls are counted, with or without a quota, so a quota set mid-month applies to the whole
// month (only the check waits for a quota to exist). Like the rate
// limiter, decided in this isolate with no I/O: the count is the account's shared counter in
// Redis as last heard, plus the calls this isolate let through since; counts go to Redis in
// the background (INCRBY) at most every SYNC_MS. Near the quota (the last 1%, at least 10 calls)
// a decision first hears the shared count, so many isolates together overshoot by at most what
// they let through within one sync interval, which is noise against a monthly quota. With Redis
// unreachable, each isolate goes on from the last count it heard (never unlimited: its own
// calls still count against it). The billing record is the usage table in D1, not this counter.

import { scheduleSync, type SharedCountDeps, type SyncState } from "./rate-limit.js";

/** The slice of the shared store (redis.ts) the quota uses; tests pass a fake. */
export interface QuotaStore {
  available(): boolean;
  run<T>(op: (r: QuotaRedis) => Promise<T>): Promise<T>;
}

export interface QuotaRedis {
  pipeline(): { incrby(key: string, n: number): unknown; expire(key: string, s: number): unknown; exec(): Promise<unknown[]> };
}

export const SYNC_MS = 250;
export const COUNTER_KEY = (account: string, month: string) => `mesh:quota:${account}:${month}`;
/** Counters outlive their month by a week, for anyone reading them late. */
const COUNTER_TTL_S = 38 * 24 * 3600;

/** Within this many calls of the quota, a decision first hears the shared count. */
function nearLimit(quota: number): number {
  return Math.max(10, Math.ceil(quota * 0.01));
}

export function monthOf(now: number): string {
  const d = new Date(now);
  return `${d.getUTCFullYear()}${String(d.getUTCMonth() + 1).padStart(2, "0")}`;
}

/** The first instant of `now`'s UTC month, ms since epoch. */
export function monthStart(now: number): number {
  const d = new Date(now);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1);
}

/** Ms from `now` to the first instant of the next UTC month. */
export function msToNextMonth(now: number): number {
  const d = new Date(now);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1) - now;
}

/** The slice of the shared store that seeding a counter uses. */
export interface SeedStore {
  run<T>(op: (r: { eval<A extends unknown[], R>(script: string, keys: string[], args: A): Promise<R> }) => Promise<T>): Promise<T>;
}

// Raises KEYS[1] to ARGV[1] if it is lower (never lowers it: calls counted since are kept).
const RAISE_SCRIPT = `
local n = tonumber(ARGV[1])
if tonumber(redis.call('GET', KEYS[1]) or '0') < n then redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2])) end
return 1
`;

/**
 * When an account gets a quota: its shared count for this month becomes at least `recorded`
 * (its calls as the usage rows in D1 show them), so calls the counter lost (Redis restarted or
 * flushed) still count. Isolates pick the raised count up at their next sync.
 */
export async function raiseMonthlyCount(store: SeedStore, account: string, recorded: number, now = Date.now()): Promise<void> {
  await store.run((r) => r.eval(RAISE_SCRIPT, [COUNTER_KEY(account, monthOf(now))], [String(recorded), String(COUNTER_TTL_S)]));
}

interface Counter extends SyncState {
  month: string;
  /** The shared count as last heard (includes everything this isolate sent). */
  shared: number;
}

export interface QuotaDecision {
  allowed: boolean;
  used: number;
  /** When refused: ms until the month turns. */
  retryAfterMs: number;
}

export type QuotaDeps = SharedCountDeps<QuotaStore>;

export class MonthlyQuota {
  private readonly counters = new Map<string, Counter>();

  async check(account: string, quota: number | null, deps: QuotaDeps): Promise<QuotaDecision> {
    const now = (deps.now ?? Date.now)();
    const month = monthOf(now);
    let c = this.counters.get(account);
    if (!c || c.month !== month) {
      if (this.counters.size > 50_000) this.counters.clear();
      c = { month, shared: 0, pending: 0, lastSync: 0, syncing: null, flushTimer: false, synced: false };
      this.counters.set(account, c);
    }
    if (quota === null) {
      // Nothing to check, but the call counts all the same (in the background, no waiting): a
      // quota set later in the month starts from every call made since the month began.
      c.pending++;
      this.scheduleSync(account, c, deps);
      return { allowed: true, used: c.shared + c.pending, retryAfterMs: 0 };
    }
    if (!c.synced && deps.store?.available()) await this.sync(account, c, deps).catch(() => undefined);
    else if (quota - (c.shared + c.pending) <= nearLimit(quota) && now - c.lastSync >= SYNC_MS && deps.store?.available()) {
      // Close to the quota, what other isolates spent matters: hear it before deciding (at most
      // once per SYNC_MS; far from the quota, decisions stay free of I/O).
      await this.sync(account, c, deps).catch(() => undefined);
    }
    const used = c.shared + c.pending;
    if (used >= quota) return { allowed: false, used, retryAfterMs: msToNextMonth(now) };
    c.pending++;
    this.scheduleSync(account, c, deps);
    return { allowed: true, used: used + 1, retryAfterMs: 0 };
  }

  private scheduleSync(account: string, c: Counter, deps: QuotaDeps): void {
    scheduleSync(c, deps, SYNC_MS, () => this.sync(account, c, deps));
  }

  private sync(account: string, c: Counter, deps: QuotaDeps): Promise<void> {
    if (c.syncing) return c.syncing;
    const store = deps.store;
    if (!store || !store.available()) return Promise.resolve();
    const sent = c.pending;
    c.pending = 0;
    c.lastSync = (deps.now ?? Date.now)();
    const key = COUNTER_KEY(account, c.month);
    c.syncing = store
      .run(async (r) => {
        const p = r.pipeline();
        p.incrby(key, sent);
        p.expire(key, COUNTER_TTL_S);
        const [total] = (await p.exec()) as [number, number];
        return total;
      })
      .then((total) => {
        c.shared = Math.max(c.shared, Number(total));
        c.synced = true;
      })
      .catch((err: unknown) => {
        c.pending += sent;
        throw err;
      })
      .finally(() => {
        c.syncing = null;
      })
      // Calls let through while this sync was out found it busy and scheduled nothing: send
      // them now rather than on some later call. (Not after a failure: no retry loop.)
      .then(() => {
        if (c.pending > 0) this.scheduleSync(account, c, deps);
      });
    return c.syncing;
  }
}
