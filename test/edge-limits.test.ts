// The per-key rate limit (GCRA, edge/rate-limit.ts) and the monthly quota (edge/quota.ts), on a
// fake clock and a fake Redis that runs the limiter's script semantics: the burst passes and
// the next call is refused with the time to wait; two isolates share one bucket through Redis;
// with Redis unreachable each isolate still limits (never unlimited) and still lets calls
// through (never refuses everyone).

import { describe, expect, it } from "vitest";
import { msToNextMonth, monthOf, MonthlyQuota } from "../edge/quota.js";
import { gcra, RateLimiter, type LimiterRedis, type LimiterStore } from "../edge/rate-limit.js";

function fakeRedis(clock: () => number) {
  const tats = new Map<string, number>();
  const counters = new Map<string, number>();
  let up = true;
  const redis: LimiterRedis & { pipeline(): any } = {
    async eval<A extends unknown[], R>(_script: string, keys: string[], args: A): Promise<R> {
      const now = clock();
      let tat = Math.max(tats.get(keys[0]!) ?? 0, now);
      const n = Number(args[0]);
      if (n > 0) {
        tat += n * Number(args[1]);
        tats.set(keys[0]!, tat);
      }
      return [String(tat), String(now)] as R;
    },
    pipeline() {
      const ops: (() => number)[] = [];
      return {
        incrby(k: string, n: number) {
          ops.push(() => {
            counters.set(k, (counters.get(k) ?? 0) + n);
            return counters.get(k)!;
          });
        },
        expire() {
          ops.push(() => 1);
        },
        exec: async () => ops.map((f) => f()),
      };
    },
  };
  const store: LimiterStore & { run<T>(op: (r: any) => Promise<T>): Promise<T> } = {
    available: () => up,
    run: (op) => (up ? op(redis) : Promise.reject(new Error("redis down"))),
  };
  return { store, setUp: (v: boolean) => (up = v), counters };
}

describe("GCRA", () => {
  const limit = { perSecond: 2, burst: 5 };

  it("lets the burst through at once, then refuses with the time until the next token", () => {
    let tat = 0;
    const now = 10_000;
    for (let i = 0; i < 5; i++) {
      const d = gcra(tat, now, limit);
      expect(d.allowed).toBe(true);
      expect(d.remaining).toBe(4 - i);
      tat = d.tat;
    }
    const refused = gcra(tat, now, limit);
    expect(refused.allowed).toBe(false);
    expect(refused.retryAfterMs).toBeCloseTo(500);
    expect(gcra(tat, now + 500, limit).allowed).toBe(true);
  });

  it("sustains exactly the rate over time", () => {
    let tat = 0;
    let allowed = 0;
    for (let t = 0; t < 10_000; t += 10) {
      const d = gcra(tat, 100_000 + t, limit);
      if (d.allowed) {
        allowed++;
        tat = d.tat;
      }
    }
    expect(allowed).toBeGreaterThanOrEqual(5 + 19);
    expect(allowed).toBeLessThanOrEqual(5 + 20);
  });
});

describe("rate limiter across isolates", () => {
  const limit = { perSecond: 1, burst: 10 };

  it("two isolates share one bucket through Redis", async () => {
    let now = 50_000;
    const clock = () => now;
    const r = fakeRedis(clock);
    const a = new RateLimiter();
    const b = new RateLimiter();
    const bg: Promise<unknown>[] = [];
    const deps = { store: r.store, waitUntil: (p: Promise<unknown>) => void bg.push(p), now: clock };
    let passed = 0;
    for (let i = 0; i < 8; i++) if ((await a.check("key", limit, deps)).allowed) passed++;
    now += 150; // past the sync interval: a's count reaches Redis
    await a.check("key", limit, deps).then((d) => d.allowed && passed++);
    await Promise.all(bg.splice(0));
    // b has never seen the key: its first call learns what a spent.
    for (let i = 0; i < 5; i++) if ((await b.check("key", limit, deps)).allowed) passed++;
    expect(passed).toBe(10);
  });

  it("with Redis down, each isolate still limits and still serves", async () => {
    let now = 80_000;
    const clock = () => now;
    const r = fakeRedis(clock);
    r.setUp(false);
    const a = new RateLimiter();
    const deps = { store: r.store, waitUntil: (p: Promise<unknown>) => void p.catch(() => undefined), now: clock };
    const results = [];
    for (let i = 0; i < 15; i++) results.push((await a.check("key", limit, deps)).allowed);
    expect(results.filter(Boolean).length).toBe(10); // not unlimited
    expect(results.slice(0, 10).every(Boolean)).toBe(true); // not refusing everyone
    now += 1000;
    expect((await a.check("key", limit, deps)).allowed).toBe(true);
  });

  it("sends what it let through while Redis was down once Redis is back", async () => {
    let now = 90_000;
    const clock = () => now;
    const r = fakeRedis(clock);
    r.setUp(false);
    const a = new RateLimiter();
    const bg: Promise<unknown>[] = [];
    const deps = { store: r.store, waitUntil: (p: Promise<unknown>) => void bg.push(p.catch(() => undefined)), now: clock };
    for (let i = 0; i < 6; i++) await a.check("key", limit, deps);
    await Promise.all(bg.splice(0));
    r.setUp(true);
    now += 200;
    await a.check("key", limit, deps);
    await Promise.all(bg.splice(0));
    const b = new RateLimiter();
    let passed = 0;
    for (let i = 0; i < 10; i++) if ((await b.check("key", limit, deps)).allowed) passed++;
    expect(passed).toBeLessThanOrEqual(4); // 10 burst - 7 spent by a (+ 0.2 s of refill)
  });
});

describe("account and key buckets (checkAll)", () => {
  it("keys of one account share its bucket; a key's own limit is a second, tighter bucket", async () => {
    const now = 200_000;
    const deps = { store: null, waitUntil: () => undefined, now: () => now };
    const l = new RateLimiter();
    const account = { perSecond: 1, burst: 5 };
    let passed = 0;
    // Five keys, one account: five calls in all, not five each.
    for (let k = 0; k < 5; k++) for (let i = 0; i < 3; i++) if ((await l.checkAll([{ id: "acct:a", limit: account }], deps)).allowed) passed++;
    expect(passed).toBe(5);
    // A key with its own tighter limit stops at it, and its refused calls take nothing from the account.
    const m = new RateLimiter();
    const tight = { perSecond: 1, burst: 2 };
    const both = [{ id: "acct:b", limit: account }, { id: "key:k1", limit: tight }];
    const results = [];
    for (let i = 0; i < 6; i++) results.push((await m.checkAll(both, deps)).allowed);
    expect(results).toEqual([true, true, false, false, false, false]);
    let rest = 0;
    for (let i = 0; i < 10; i++) if ((await m.checkAll([{ id: "acct:b", limit: account }], deps)).allowed) rest++;
    expect(rest).toBe(3);
  });

  it("a lowered account limit binds a key that has its own looser one", async () => {
    const now = 300_000;
    const deps = { store: null, waitUntil: () => undefined, now: () => now };
    const l = new RateLimiter();
    const keyOwn = { perSecond: 10, burst: 10 };
    const lowered = { perSecond: 1, burst: 2 };
    let passed = 0;
    for (let i = 0; i < 10; i++) if ((await l.checkAll([{ id: "acct:c", limit: lowered }, { id: "key:k2", limit: keyOwn }], deps)).allowed) passed++;
    expect(passed).toBe(2);
  });

  it("peek takes nothing", () => {
    const l = new RateLimiter();
    for (let i = 0; i < 5; i++) expect(l.peek("fail:1.2.3.4", { perSecond: 1, burst: 1 }, 1_000).allowed).toBe(true);
  });
});

describe("monthly quota", () => {
  it("refuses past the quota until the month turns, counting across isolates", async () => {
    let now = Date.UTC(2026, 10, 30, 23, 59, 0);
    const clock = () => now;
    const r = fakeRedis(clock);
    const bg: Promise<unknown>[] = [];
    const deps = { store: r.store, waitUntil: (p: Promise<unknown>) => void bg.push(p), now: clock };
    const a = new MonthlyQuota();
    const b = new MonthlyQuota();
    for (let i = 0; i < 3; i++) expect((await a.check("acc", 5, deps)).allowed).toBe(true);
    now += 300;
    await a.check("acc", 5, deps);
    await Promise.all(bg.splice(0));
    expect((await b.check("acc", 5, deps)).allowed).toBe(true); // the 5th
    const refused = await b.check("acc", 5, deps);
    expect(refused.allowed).toBe(false);
    expect(refused.retryAfterMs).toBe(msToNextMonth(now));
    expect(refused.retryAfterMs).toBeLessThan(61_000);
    now = Date.UTC(2026, 11, 1, 0, 0, 1);
    expect((await b.check("acc", 5, deps)).allowed).toBe(true);
    expect(monthOf(now)).toBe("202612");
  });

  it("no quota: always allowed, without waiting on Redis", async () => {
    const q = new MonthlyQuota();
    const d = await q.check("acc", null, { store: null, waitUntil: () => undefined });
    expect(d.allowed).toBe(true);
  });

  it("calls made before a quota was set count toward it (2 calls, then a quota of 5: 3 more)", async () => {
    let now = Date.UTC(2026, 11, 2, 12, 0, 0);
    const clock = () => now;
    const r = fakeRedis(clock);
    const bg: Promise<unknown>[] = [];
    const deps = { store: r.store, waitUntil: (p: Promise<unknown>) => void bg.push(p), now: clock };
    const a = new MonthlyQuota();
    for (let i = 0; i < 2; i++) expect((await a.check("acc", null, deps)).allowed).toBe(true);
    now += 300;
    await Promise.all(bg.splice(0));
    // Another isolate that never saw those calls learns them from the shared count.
    const b = new MonthlyQuota();
    let passed = 0;
    for (let i = 0; i < 10; i++) if ((await b.check("acc", 5, deps)).allowed) passed++;
    expect(passed).toBe(3);
    // And the isolate that made them knows without asking.
    const c = new MonthlyQuota();
    const local = { store: null, waitUntil: () => undefined, now: clock };
    for (let i = 0; i < 2; i++) await c.check("acc2", null, local);
    let localPassed = 0;
    for (let i = 0; i < 10; i++) if ((await c.check("acc2", 5, local)).allowed) localPassed++;
    expect(localPassed).toBe(3);
  });
});
