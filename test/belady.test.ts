// Unit tests of the offline optimum (bench/belady.ts) the Zipf placement bench compares the
// mesh with: on hand-made traces whose optimum is known (the textbook reference string, a
// brute-force search over every eviction choice), and with load times (calls during a load
// wait; every place loading makes a model wait for the next load to finish).
import { describe, expect, it } from "vitest";
import { beladyReplay, type Request } from "../bench/belady.js";

/** One call per ms, in order. */
const trace = (models: number[]): Request[] => models.map((model, i) => ({ at: i, model }));

/** Fewest loads any eviction choice achieves, instant loads (exhaustive search). */
function bruteForceLoads(models: number[], places: number): number {
  let best = Infinity;
  const go = (i: number, cache: number[], loads: number) => {
    if (loads >= best) return;
    if (i === models.length) {
      best = loads;
      return;
    }
    const m = models[i]!;
    if (cache.includes(m)) return go(i + 1, cache, loads);
    if (cache.length < places) return go(i + 1, [...cache, m], loads + 1);
    for (let v = 0; v < cache.length; v++) go(i + 1, [...cache.slice(0, v), ...cache.slice(v + 1), m], loads + 1);
  };
  go(0, [], 0);
  return best;
}

describe("Belady's rule, instant loads", () => {
  it("the textbook reference string with 3 frames: 9 loads (OPT), 11 hits", () => {
    const refs = [7, 0, 1, 2, 0, 3, 0, 4, 2, 3, 0, 3, 2, 1, 2, 0, 1, 7, 0, 1];
    const r = beladyReplay(trace(refs), { places: 3, loadMs: 0 });
    expect(r).toEqual({ calls: 20, warmHits: 11, waitedForLoad: 9, coldStarts: 9, evictions: 6, coldStartsTotal: 9 });
  });

  it("evicts the model called farthest ahead, not the least recently used", () => {
    // 2 places. At the call to 3, LRU would evict 1 (then miss on 1); Belady evicts 2, called last.
    const r = beladyReplay(trace([1, 2, 1, 3, 1, 1, 2]), { places: 2, loadMs: 0 });
    expect(r.coldStarts).toBe(4);
    expect(r.warmHits).toBe(3);
  });

  it("matches the fewest loads any eviction choice makes, on seeded random traces", () => {
    let seed = 7;
    const rand = () => ((seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31);
    for (let k = 0; k < 40; k++) {
      const models = Array.from({ length: 12 }, () => Math.floor(rand() * 5));
      const places = 1 + (k % 3);
      const r = beladyReplay(trace(models), { places, loadMs: 0 });
      expect(r.coldStarts, `trace ${models.join(",")} with ${places} places`).toBe(bruteForceLoads(models, places));
      expect(r.warmHits + r.waitedForLoad).toBe(models.length);
    }
  });

  it("counts only calls and loads inside the window, the earlier ones warming it up", () => {
    const r = beladyReplay(trace([1, 2, 1, 2, 3, 1]), { places: 2, loadMs: 0, countFrom: 2, countUntil: 5 });
    expect(r).toEqual({ calls: 3, warmHits: 2, waitedForLoad: 1, coldStarts: 1, evictions: 1, coldStartsTotal: 3 });
  });
});

describe("Belady's rule with load times", () => {
  it("calls during a load wait for it; one arriving as it finishes is warm", () => {
    const r = beladyReplay(
      [
        { at: 0, model: 1 },
        { at: 5, model: 1 },
        { at: 10, model: 1 },
        { at: 11, model: 1 },
      ],
      { places: 1, loadMs: 10 },
    );
    expect(r).toEqual({ calls: 4, warmHits: 2, waitedForLoad: 2, coldStarts: 1, evictions: 0, coldStartsTotal: 1 });
  });

  it("when every place holds a load, a model waits for the next one to finish, then evicts by the rule", () => {
    // 1 place, loads of 10 ms. 1 loads at 0; 2 arrives at 1 and must wait; at 10 model 1 is
    // warm and 2's load takes its place (1 evicted); 1 at 12 must wait too, until 2 is warm at
    // 20 and 1's load evicts it; 2 at 25 then waits behind 1's load (running until 30).
    const r = beladyReplay(
      [
        { at: 0, model: 1 },
        { at: 1, model: 2 },
        { at: 12, model: 1 },
        { at: 25, model: 2 },
      ],
      { places: 1, loadMs: 10 },
    );
    expect(r).toEqual({ calls: 4, warmHits: 0, waitedForLoad: 4, coldStarts: 3, evictions: 2, coldStartsTotal: 3 });
  });

  it("keeps the model called again soonest through a burst of one-off calls", () => {
    // 2 places, 5 ms loads. Model 1 is called every 10 ms; 2..6 are called once each in between.
    const reqs: Request[] = [];
    for (let k = 0; k < 6; k++) {
      reqs.push({ at: k * 10, model: 1 });
      if (k > 0) reqs.push({ at: k * 10 + 1, model: 1 + k });
    }
    const r = beladyReplay(reqs, { places: 2, loadMs: 5 });
    // Model 1: one load, then warm for its other 5 calls; each one-off call waits for its load.
    expect(r.warmHits).toBe(5);
    expect(r.coldStarts).toBe(6);
  });
});
