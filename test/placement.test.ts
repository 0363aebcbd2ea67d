// Pure-logic tests of the region's choices: where a call goes, where a load goes and what it
// evicts, how many replicas the warm policy wants, and the traffic statistics behind it.

import { describe, expect, it } from "vitest";
import { ModelStats, percentile } from "../regions/model-stats.js";
import { estimateMemoryMb, pickWarm, planLoad, usedMb, type NodeState } from "../regions/placement.js";
import { desiredReplicas, WARM_POLICY_DEFAULTS, warmAction } from "../regions/warm-policy.js";

function node(id: string, over: Partial<NodeState> & { warmKeys?: [string, number, number][] } = {}): NodeState {
  const warm = new Map((over.warmKeys ?? []).map(([k, mb, lastUsed]) => [k, { memoryMb: mb, lastUsed }]));
  return {
    id,
    available: true,
    inflight: 0,
    slots: 4,
    memoryBudgetMb: 100,
    maxModels: 0,
    warm,
    loading: new Map(),
    modelInflight: new Map(),
    ...over,
  };
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
