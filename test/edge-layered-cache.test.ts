// The layered cache behind key checks and model lookups (edge/layered-cache.ts), on a fake clock:
// fresh hits cost nothing, stale entries are served while one background reload runs, nothing
// is ever served older than the bound, loads are de-duplicated, "not found" is cached, an
// eviction cannot be undone by a load already under way, and the shared layer is used only
// while its entries are fresh.

import { describe, expect, it } from "vitest";
import { LayeredCache, type SharedLayer, type Stamped } from "../edge/layered-cache.js";
import { mulberry32 } from "../protocol/prng.js";

/** The positive entries' bound in these tests. */
const MAX_AGE_MS = 1500;


function setup(opts: { shared?: boolean } = {}) {
  let now = 1_000_000;
  const clock = { now: () => now, advance: (ms: number) => (now += ms) };
  const cache = new LayeredCache<string>({
    positive: { freshMs: 750, maxAgeMs: MAX_AGE_MS },
    negative: { freshMs: 30_000, maxAgeMs: 60_000 },
    now: clock.now,
  });
  const truth = new Map<string, string | null>([["k", "v1"]]);
  let loads = 0;
  const load = (key = "k") => async () => {
    loads++;
    return truth.get(key) ?? null;
  };
  const background: Promise<unknown>[] = [];
  const store = new Map<string, Stamped<string>>();
  const shared: SharedLayer<string> | null = opts.shared
    ? {
        get: async (k) => store.get(k) ?? null,
        set: async (k, e) => void store.set(k, e),
        delete: async (k) => void store.delete(k),
      }
    : null;
  const ctx = { shared, waitUntil: (p: Promise<unknown>) => void background.push(p) };
  const settle = () => Promise.all(background.splice(0));
  return { cache, clock, truth, load, loads: () => loads, ctx, settle, store };
}

describe("layered cache", () => {
  it("answers a fresh entry with no load at all", async () => {
    const t = setup();
    expect(await t.cache.get("k", t.load(), t.ctx)).toBe("v1");
    t.clock.advance(700);
    expect(await t.cache.get("k", t.load(), t.ctx)).toBe("v1");
    expect(t.loads()).toBe(1);
    expect(t.cache.stats.fresh).toBe(1);
  });

  it("serves a stale entry at once and reloads it once in the background", async () => {
    const t = setup();
    await t.cache.get("k", t.load(), t.ctx);
    t.truth.set("k", "v2");
    t.clock.advance(800);
    const answers = await Promise.all([1, 2, 3].map(() => t.cache.get("k", t.load(), t.ctx)));
    expect(answers).toEqual(["v1", "v1", "v1"]); // nobody waited
    await t.settle();
    expect(t.loads()).toBe(2); // one reload for three stale hits
    expect(await t.cache.get("k", t.load(), t.ctx)).toBe("v2");
  });

  it("never serves an entry older than the bound: past it, callers wait for the truth", async () => {
    const t = setup();
    await t.cache.get("k", t.load(), t.ctx);
    t.truth.set("k", null); // revoked
    t.clock.advance(1500);
    expect(await t.cache.get("k", t.load(), t.ctx)).toBeNull();
  });

  it("bounds staleness by the time of the read, whatever the traffic (property over many seeded schedules)", async () => {
    // Seeded, so a failure replays; gaps long enough to cross the bound, so a cache that let an
    // entry live twice as long would be caught (each value carries the time it was loaded).
    const rnd = mulberry32(20261202);
    for (let trial = 0; trial < 200; trial++) {
      const t = setup({ shared: trial % 2 === 0 });
      let revokedAt = Infinity;
      const stamped = () => async () => (t.truth.get("k") === null ? null : `v@${t.clock.now()}`);
      for (let step = 0; step < 60; step++) {
        t.clock.advance(Math.floor(rnd() * (rnd() < 0.2 ? 2_500 : 120)));
        if (step === 20) {
          t.truth.set("k", null);
          revokedAt = t.clock.now();
        }
        const v = await t.cache.get("k", stamped(), t.ctx);
        if (rnd() < 0.7) await t.settle();
        if (v !== null) {
          expect(t.clock.now() - Number(v.slice(2))).toBeLessThan(MAX_AGE_MS);
          expect(t.clock.now() - revokedAt).toBeLessThan(MAX_AGE_MS);
        }
      }
    }
  });

  it("de-duplicates concurrent misses into one load", async () => {
    const t = setup();
    const answers = await Promise.all(Array.from({ length: 20 }, () => t.cache.get("k", t.load(), t.ctx)));
    expect(new Set(answers)).toEqual(new Set(["v1"]));
    expect(t.loads()).toBe(1);
  });

  it("caches 'not found' with its own, longer ages", async () => {
    const t = setup();
    expect(await t.cache.get("nope", t.load("nope"), t.ctx)).toBeNull();
    t.clock.advance(20_000);
    expect(await t.cache.get("nope", t.load("nope"), t.ctx)).toBeNull();
    expect(t.loads()).toBe(1);
    t.clock.advance(45_000);
    await t.cache.get("nope", t.load("nope"), t.ctx);
    expect(t.loads()).toBe(2);
  });

  it("an eviction wins over a load that started before it", async () => {
    const t = setup();
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const slow = async () => {
      await gate;
      return "stale-value";
    };
    const pending = t.cache.get("k", slow, t.ctx);
    t.clock.advance(5);
    await t.cache.evict("k", t.ctx);
    release();
    expect(await pending).toBe("stale-value"); // the caller that asked before the eviction
    t.truth.set("k", null);
    expect(await t.cache.get("k", t.load(), t.ctx)).toBeNull(); // but it was not kept
  });

  it("takes a fresh entry from the shared layer instead of the truth, keeping its original age", async () => {
    const t = setup({ shared: true });
    t.store.set("k", { value: "from-redis", checkedAt: t.clock.now() - 500 });
    expect(await t.cache.get("k", t.load(), t.ctx)).toBe("from-redis");
    expect(t.loads()).toBe(0);
    // 500 ms old already: past 1500 ms from *its* read it is not served.
    t.truth.set("k", "v2");
    t.store.clear();
    t.clock.advance(1000);
    expect(await t.cache.get("k", t.load(), t.ctx)).toBe("v2");
  });

  it("ignores a shared entry that is not fresh, and writes what it loaded back", async () => {
    const t = setup({ shared: true });
    t.store.set("k", { value: "old", checkedAt: t.clock.now() - 1000 });
    expect(await t.cache.get("k", t.load(), t.ctx)).toBe("v1");
    await t.settle();
    expect(t.store.get("k")).toEqual({ value: "v1", checkedAt: t.clock.now() });
  });

  it("falls through to the truth when the shared layer fails", async () => {
    const t = setup();
    const broken: SharedLayer<string> = {
      get: () => Promise.reject(new Error("down")),
      set: () => Promise.reject(new Error("down")),
      delete: () => Promise.reject(new Error("down")),
    };
    expect(await t.cache.get("k", t.load(), { shared: broken })).toBe("v1");
    await expect(t.cache.evict("k", { shared: broken })).resolves.toBeUndefined();
  });
});
