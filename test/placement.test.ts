// Pure-logic tests of the region's choices: where a call goes, where a load goes and what it
// evicts, how many replicas the warm policy wants, and the traffic statistics behind it.

import { describe, expect, it } from "vitest";
import { KEEP_HALF_LIFE_MS, keepValue, ModelStats, percentile, QUEUED_CALL_VALUE } from "../regions/model-stats.js";
import { fakeNode } from "./helpers/fakes.js";
import { estimateMemoryMb, pickWarm, planLoad, usedMb, waitForCheaperPlace, type NodeState } from "../regions/placement.js";
import { desiredReplicas, WARM_POLICY_DEFAULTS, warmAction } from "../regions/warm-policy.js";

function node(id: string, over: Partial<NodeState> & { warmKeys?: [string, number, number][] } = {}): NodeState {
  const { warmKeys, ...rest } = over;
  return fakeNode(id, { warm: new Map((warmKeys ?? []).map(([k, mb, lastUsed]) => [k, { memoryMb: mb, lastUsed }])), ...rest });
}

describe("pickWarm", () => {
  it("sends a call to the warm node with the least in flight", () => {
    const a = node("a", { warmKeys: [["m", 10, 0]], inflight: 3 });
    const b = node("b", { warmKeys: [["m", 10, 0]], inflight: 1 });
    const c = node("c", { inflight: 0 });
    expect(pickWarm([a, b, c], "m")?.id).toBe("b");
  });

  it("skips full, unavailable and excluded nodes", () => {
    const full = node("full", { warmKeys: [["m", 10, 0]], inflight: 4 });
    const down = node("down", { warmKeys: [["m", 10, 0]], available: false });
    const ex = node("ex", { warmKeys: [["m", 10, 0]] });
    expect(pickWarm([full, down, ex], "m", new Set(["ex"]))).toBeUndefined();
    expect(pickWarm([full, down, ex], "m")?.id).toBe("ex");
  });
});

describe("planLoad", () => {
  const value = (rates: Record<string, number>) => (k: string) => rates[k] ?? 0;

  it("loads where the model fits without evicting, preferring the less busy node", () => {
    const a = node("a", { inflight: 2 });
    const b = node("b", { inflight: 0 });
    const plan = planLoad([a, b], "m", 10, value({}));
    expect(plan?.node.id).toBe("b");
    expect(plan?.evict).toEqual([]);
  });

  it("evicts the least valuable idle model when memory is short", () => {
    const a = node("a", {
      memoryBudgetMb: 30,
      warmKeys: [
        ["hot", 15, 100],
        ["cold", 15, 50],
      ],
    });
    const plan = planLoad([a], "new", 10, value({ hot: 5, cold: 0.1 }));
    expect(plan?.evict).toEqual(["cold"]);
  });

  it("never evicts a model with calls in flight, nor a protected one", () => {
    const a = node("a", {
      memoryBudgetMb: 20,
      warmKeys: [["busy", 20, 0]],
      modelInflight: new Map([["busy", 1]]),
    });
    expect(planLoad([a], "new", 10, value({}))).toBeUndefined();
    const b = node("b", { memoryBudgetMb: 20, warmKeys: [["floor", 20, 0]] });
    expect(planLoad([b], "new", 10, value({}), (_n, k) => k === "floor")).toBeUndefined();
  });

  it("does not plan a second load of a model already loading or warm on a node", () => {
    const loading = node("a", { loading: new Map([["m", 10]]) });
    const warm = node("b", { warmKeys: [["m", 10, 0]] });
    expect(planLoad([loading, warm], "m", 10, value({}))).toBeUndefined();
  });

  it("one model at a time when the runtime must own the GPU (maxModels 1)", () => {
    const gpu = node("gpu", { maxModels: 1, warmKeys: [["a", 1, 0]] });
    expect(planLoad([gpu], "b", 1, value({}))?.evict).toEqual(["a"]);
    const busy = node("gpu", { maxModels: 1, warmKeys: [["a", 1, 0]], modelInflight: new Map([["a", 2]]) });
    expect(planLoad([busy], "b", 1, value({}))).toBeUndefined(); // waits
  });

  it("refuses a model larger than any node", () => {
    expect(planLoad([node("a", { memoryBudgetMb: 5 })], "big", 10, value({}))).toBeUndefined();
  });

  it("accounts memory of warm and loading models", () => {
    const n = node("a", { warmKeys: [["x", 7, 0]], loading: new Map([["y", 3]]) });
    expect(usedMb(n)).toBe(10);
    expect(estimateMemoryMb(0)).toBe(1);
    expect(estimateMemoryMb(100 * 2 ** 20)).toBe(150);
  });
});

describe("waitForCheaperPlace", () => {
  const worth = (rates: Record<string, number>) => (k: string) => rates[k] ?? 0;
  const rates = { hot: 5, tail: 0.01, oneOff: 0.006, mid: 1 };
  // A full node: "hot" idle, "tail" loading (its place is evictable once its calls are done).
  const full = () =>
    node("a", {
      memoryBudgetMb: 20,
      warmKeys: [["hot", 10, 0]],
      loading: new Map([["tail", 10]]),
    });

  it("a rare model's load waits for a rare model's place instead of evicting a hot one", () => {
    const n = full();
    const plan = planLoad([n], "oneOff", 10, worth(rates))!;
    expect(plan.evict).toEqual(["hot"]);
    expect(waitForCheaperPlace([n], plan, "oneOff", 10, worth(rates), 0, 2_000)).toBe(true);
  });

  it("also waits for a cheap model whose calls are still running", () => {
    const n = node("a", { memoryBudgetMb: 20, warmKeys: [["hot", 10, 0], ["tail", 10, 0]], modelInflight: new Map([["tail", 1]]) });
    // Loads hold a third of the memory (a valuable model loading elsewhere): bandwidth is short.
    const b = node("b", { memoryBudgetMb: 10, loading: new Map([["hot2", 10]]) });
    const r = { ...rates, hot2: 50 };
    const plan = planLoad([n, b], "oneOff", 10, worth(r))!;
    expect(plan.evict).toEqual(["hot"]);
    expect(waitForCheaperPlace([n, b], plan, "oneOff", 10, worth(r), 0, 2_000)).toBe(true);
    // The patience is two thirds of 2 s there (full from half the memory loading).
    expect(waitForCheaperPlace([n, b], plan, "oneOff", 10, worth(r), 1_400, 2_000)).toBe(false);
  });

  it("does not wait when no load holds memory: the nodes can afford the hot model's reload", () => {
    const n = node("a", { memoryBudgetMb: 20, warmKeys: [["hot", 10, 0], ["tail", 10, 0]], modelInflight: new Map([["tail", 1]]) });
    const plan = planLoad([n], "oneOff", 10, worth(rates))!;
    expect(plan.evict).toEqual(["hot"]);
    expect(waitForCheaperPlace([n], plan, "oneOff", 10, worth(rates), 0, 2_000)).toBe(false);
  });

  it("takes the plan once the calls have waited a load's time (the tail's places grow)", () => {
    const n = full();
    const plan = planLoad([n], "oneOff", 10, worth(rates))!;
    expect(waitForCheaperPlace([n], plan, "oneOff", 10, worth(rates), 2_000, 2_000)).toBe(false);
  });

  it("admits a model worth more than what it evicts (frequency admission)", () => {
    const n = node("a", { memoryBudgetMb: 20, warmKeys: [["mid", 10, 0]], loading: new Map([["tail", 10]]) });
    const plan = planLoad([n], "hot", 10, worth(rates))!;
    expect(plan.evict).toEqual(["mid"]);
    expect(waitForCheaperPlace([n], plan, "hot", 10, worth(rates), 0, 2_000)).toBe(false);
  });

  it("never waits when nothing cheaper will come free, nor when nothing is evicted", () => {
    // Only hot models, all idle: waiting would never end; evict the cheapest.
    const n = node("a", { memoryBudgetMb: 20, warmKeys: [["hot", 10, 0], ["mid", 10, 0]] });
    const plan = planLoad([n], "oneOff", 10, worth(rates))!;
    expect(plan.evict).toEqual(["mid"]);
    expect(waitForCheaperPlace([n], plan, "oneOff", 10, worth(rates), 0, 2_000)).toBe(false);
    const room = node("b", { memoryBudgetMb: 40, warmKeys: [["hot", 10, 0]], loading: new Map([["tail", 10]]) });
    const free = planLoad([room], "oneOff", 10, worth(rates))!;
    expect(free.evict).toEqual([]);
    expect(waitForCheaperPlace([room], free, "oneOff", 10, worth(rates), 0, 2_000)).toBe(false);
  });

  it("a cheap place on a node too small for the model, or unavailable, is no reason to wait", () => {
    const n = node("a", { memoryBudgetMb: 20, warmKeys: [["hot", 10, 0]] });
    const small = node("s", { memoryBudgetMb: 5, loading: new Map([["tail", 5]]) });
    const down = node("d", { available: false, loading: new Map([["tail", 10]]) });
    const plan = planLoad([n, small, down], "oneOff", 10, worth(rates))!;
    expect(plan.node.id).toBe("a");
    expect(waitForCheaperPlace([n, small, down], plan, "oneOff", 10, worth(rates), 0, 2_000)).toBe(false);
  });
});

describe("one-offs on a full node (fake clock and loads)", () => {
  /**
   * Three places of 10 MB; two hot models called every second (five minutes of history first),
   * and every `everyS` seconds `burst` one-offs at once; a load takes 2 s on the fake clock and a
   * call is served as soon as its model is warm. Returns whether a hot model was ever evicted.
   */
  function replay(everyS: number, burst: number, wait: boolean): { hotEvicted: boolean; loads: number; waitingAtEnd: number } {
    const stats = new Map<string, ModelStats>();
    const statsFor = (k: string) => stats.get(k) ?? stats.set(k, new ModelStats()).get(k)!;
    let now = 1_000_000;
    for (let i = 0; i < 300; i++, now += 1_000) for (const k of ["h1", "h2"]) statsFor(k).arrival(now);
    const warm = new Map([["h1", { memoryMb: 10, lastUsed: now }], ["h2", { memoryMb: 10, lastUsed: now }], ["t0", { memoryMb: 10, lastUsed: now }]]);
    const loading = new Map<string, number>();
    const n = node("a", { memoryBudgetMb: 30, warm, loading });
    const value = (k: string) => keepValue(stats.get(k), 0, now);
    const worth = (k: string) => stats.get(k)?.longRate(now) ?? 0;
    const finishAt = new Map<string, number>();
    const waiting: { key: string; since: number }[] = [];
    let loads = 0;
    let hotEvicted = false;
    let next = 1;
    for (let sec = 1; sec <= 60; sec++, now += 1_000) {
      for (const k of ["h1", "h2"]) {
        statsFor(k).arrival(now);
        if (warm.has(k)) warm.get(k)!.lastUsed = now;
      }
      for (const [k, at] of finishAt) if (at <= now) (loading.delete(k), finishAt.delete(k), warm.set(k, { memoryMb: 10, lastUsed: now }));
      if (sec % everyS === 0) {
        for (let b = 0; b < burst; b++, next++) {
          statsFor(`t${next}`).arrival(now);
          waiting.push({ key: `t${next}`, since: now });
        }
      }
      while (waiting.length > 0) {
        const w = waiting[0]!;
        const plan = planLoad([n], w.key, 10, value);
        if (!plan || (wait && waitForCheaperPlace([n], plan, w.key, 10, worth, now - w.since, 2_000))) break;
        for (const v of plan.evict) {
          warm.delete(v);
          if (v.startsWith("h")) hotEvicted = true;
        }
        loading.set(w.key, 10);
        finishAt.set(w.key, now + 2_000);
        loads++;
        waiting.shift();
      }
    }
    return { hotEvicted, loads, waitingAtEnd: waiting.length };
  }

  it("the long-run rate keeps the hot models: one-offs evict one-offs", () => {
    const r = replay(3, 1, false); // one place keeps up with a one-off every 3 s
    expect(r.hotEvicted).toBe(false);
    expect(r.loads).toBe(20);
  });

  it("a one-off arriving while another loads waits for that place instead of evicting a hot model", () => {
    const without = replay(5, 2, false);
    expect(without.hotEvicted).toBe(true);
    const withWait = replay(5, 2, true);
    expect(withWait.hotEvicted).toBe(false);
    expect(withWait.loads + withWait.waitingAtEnd).toBe(24); // every one-off loaded, or waiting its turn at the end
    expect(withWait.waitingAtEnd).toBeLessThanOrEqual(1);
  });

  it("when the one-offs need more than their place, patience lets them take a hot model's", () => {
    const r = replay(1, 1, true); // a one-off a second needs two places of 2 s loads
    expect(r.hotEvicted).toBe(true);
    expect(r.waitingAtEnd).toBeLessThanOrEqual(2);
  });
});

describe("warm policy", () => {
  const now = 1_000_000;
  it("keeps the floor with no traffic, and the override exactly", () => {
    expect(desiredReplicas(undefined, { keepWarm: 2, replicas: null }, 4, now)).toBe(2);
    expect(desiredReplicas(undefined, { keepWarm: 2, replicas: 5 }, 4, now)).toBe(5);
    expect(desiredReplicas(undefined, undefined, 4, now)).toBe(0);
  });

  it("scales replicas with rate x service time (Little's law)", () => {
    const stats = { rate: 100, trend: 0, serviceS: 0.1, lastCall: now };
    // 100/s x 0.1 s = 10 busy slots; 4 slots per node at 70% -> ceil(10 / 2.8) = 4
    expect(desiredReplicas(stats, undefined, 4, now)).toBe(4);
    expect(desiredReplicas({ ...stats, rate: 1 }, undefined, 4, now)).toBe(1);
  });

  it("pre-warms on a rising trend before the rate itself gets there", () => {
    const flat = { rate: 20, trend: 0, serviceS: 0.1, lastCall: now };
    const rising = { ...flat, trend: 10 };
    expect(desiredReplicas(rising, undefined, 4, now)).toBeGreaterThan(desiredReplicas(flat, undefined, 4, now));
  });

  it("drops to the floor after the idle TTL", () => {
    const stale = { rate: 50, trend: 0, serviceS: 0.1, lastCall: now - WARM_POLICY_DEFAULTS.idleTtlMs - 1 };
    expect(desiredReplicas(stale, { keepWarm: 1, replicas: null }, 4, now)).toBe(1);
    expect(desiredReplicas(stale, undefined, 4, now)).toBe(0);
  });
});

describe("model stats", () => {
  it("tracks rate as an EWMA of per-second counts, and a rising trend", () => {
    const s = new ModelStats();
    let t = 10_000;
    for (let sec = 0; sec < 10; sec++) {
      for (let i = 0; i < sec * 5; i++) s.arrival(t + i);
      t += 1_000;
    }
    s.tick(t);
    expect(s.rate).toBeGreaterThan(5);
    expect(s.trend()).toBeGreaterThan(3);
  });

  it("a long-run rate that tells a steady model from a one-off called a moment ago", () => {
    // Fake time: a model called every 5 s for ten minutes, and a one-off called just now.
    const steady = new ModelStats();
    const oneOff = new ModelStats();
    let t = 1_000_000;
    for (let i = 0; i < 120; i++, t += 5_000) steady.arrival(t);
    oneOff.arrival(t);
    expect(steady.longRate(t)).toBeGreaterThan(0.15);
    expect(steady.longRate(t)).toBeLessThan(0.25); // ~0.2/s
    expect(oneOff.longRate(t)).toBeCloseTo(Math.LN2 / (KEEP_HALF_LIFE_MS / 1000), 6);
    expect(steady.longRate(t)).toBeGreaterThan(20 * oneOff.longRate(t));
    // The short EWMA, by contrast, ranks the one-off first just after its call.
    steady.tick(t + 1_000);
    oneOff.tick(t + 1_000);
    expect(oneOff.rate).toBeGreaterThan(steady.rate);
    // It halves every half-life without calls, and is continuous in time.
    expect(steady.longRate(t + KEEP_HALF_LIFE_MS)).toBeCloseTo(steady.longRate(t) / 2, 6);
    expect(new ModelStats().longRate(t)).toBe(0);
  });

  it("keep value: the long-run rate plus the calls waiting for the model", () => {
    const s = new ModelStats();
    s.arrival(10_000);
    expect(keepValue(s, 0, 10_000)).toBeCloseTo(s.longRate(10_000), 9);
    expect(keepValue(s, 3, 10_000)).toBeCloseTo(s.longRate(10_000) + 3 * QUEUED_CALL_VALUE, 9);
    expect(keepValue(undefined, 0, 10_000)).toBe(0);
  });

  it("reports percentiles of queue and inference times", () => {
    const s = new ModelStats();
    for (let i = 1; i <= 100; i++) s.completed(i, i * 2);
    const p = s.percentiles();
    expect(p.queueMs.p50).toBe(50);
    expect(p.queueMs.p99).toBe(99);
    expect(p.inferMs.p95).toBe(190);
    expect(percentile([], 50)).toBe(0);
  });
});

describe("warm step", () => {
  const now = 5_000_000;
  const busy = { rate: 200, trend: 0, serviceS: 0.1, lastCall: now };

  it("leaves a model with no replica and no floor to on-demand loading", () => {
    expect(warmAction("m", [node("a"), node("b")], busy, undefined, now, 200).kind).toBe("none");
  });

  it("adds replicas for load, evicting only less valuable models", () => {
    const a = node("a", { warmKeys: [["m", 10, now]] });
    const action = warmAction("m", [a, node("b")], busy, undefined, now, 200);
    expect(action).toEqual({ kind: "load", maxEvictValue: 200 });
  });

  it("a keep-warm floor loads even with no traffic and may evict anything unprotected", () => {
    expect(warmAction("m", [node("a")], undefined, { keepWarm: 1, replicas: null }, now, 0)).toEqual({
      kind: "load",
      maxEvictValue: Infinity,
    });
  });

  it("unloads an idle replica past the TTL", () => {
    const a = node("a", { warmKeys: [["m", 10, 0]] });
    const idle = { rate: 0, trend: 0, serviceS: 0.01, lastCall: 1 };
    expect(warmAction("m", [a], idle, undefined, now + WARM_POLICY_DEFAULTS.idleTtlMs, 0)).toEqual({ kind: "unload", nodeId: "a" });
  });

  it("a speculative load never evicts a more valuable model", () => {
    const full = node("a", { memoryBudgetMb: 10, warmKeys: [["hot", 10, 0]] });
    expect(planLoad([full], "new", 10, (k) => (k === "hot" ? 50 : 1), undefined, undefined, 1)).toBeUndefined();
    expect(planLoad([full], "new", 10, (k) => (k === "hot" ? 50 : 1))?.evict).toEqual(["hot"]);
  });
});
