// Pure-logic tests of conversation affinity's choices, with fake nodes and region reports: the
// router sends a follow-up turn to the node that keeps its conversation's KV cache unless that
// node is markedly busier; a region's report lists its nodes' kept conversations (bounded); the
// edge takes the saved prefill off a region's expected time, and only that; the wire checks
// what nodes and edges send.

import { beforeAll, describe, expect, it } from "vitest";
import { parseNodeMessage, parseRegionGenerateRequest, MessageError } from "../protocol/messages.js";
import type { RegionReport } from "../protocol/region-report.js";
import { fakeNode, fakeReport } from "./helpers/fakes.js";
import { AFFINITY_SLACK, pickWarmForStream, regionConversations, type NodeState } from "../regions/placement.js";

const K1 = "a".repeat(32);
const K2 = "b".repeat(32);

function node(id: string, streams: number, conversations: [string, number][] = [], over: Partial<NodeState> = {}): NodeState {
  return fakeNode(id, { warm: new Map([["m", { memoryMb: 10, lastUsed: 0 }]]), streams, streamSlots: 16, conversations: new Map(conversations), ...over });
}

describe("router: a follow-up goes to the node that keeps its conversation", () => {
  it("prefers the holder over a less busy node, within the slack", () => {
    const idle = node("idle", 0);
    const holder = node("holder", 2, [[K1, 30]]);
    expect(pickWarmForStream([idle, holder], "m")?.id).toBe("idle");
    expect(pickWarmForStream([idle, holder], "m", undefined, [K1])?.id).toBe("holder");
    // Another conversation's key, or none: the usual least-streams choice.
    expect(pickWarmForStream([idle, holder], "m", undefined, [K2])?.id).toBe("idle");
  });

  it("does not pile onto a holder that is markedly busier, full, excluded or unavailable", () => {
    const idle = node("idle", 0);
    const slack = Math.floor(16 * AFFINITY_SLACK);
    expect(pickWarmForStream([idle, node("h", slack, [[K1, 30]])], "m", undefined, [K1])?.id).toBe("h");
    expect(pickWarmForStream([idle, node("h", slack + 1, [[K1, 30]])], "m", undefined, [K1])?.id).toBe("idle");
    expect(pickWarmForStream([idle, node("h", 16, [[K1, 30]], { streamSlots: 16 })], "m", undefined, [K1])?.id).toBe("idle");
    expect(pickWarmForStream([idle, node("h", 0, [[K1, 30]])], "m", new Set(["h"]), [K1])?.id).toBe("idle");
    expect(pickWarmForStream([idle, node("h", 0, [[K1, 30]], { available: false })], "m", undefined, [K1])?.id).toBe("idle");
    // A holder where the model is not warm cannot take it at all.
    expect(pickWarmForStream([idle, node("h", 0, [[K1, 30]], { warm: new Map() })], "m", undefined, [K1])?.id).toBe("idle");
  });

  it("of two holders, the less busy", () => {
    expect(pickWarmForStream([node("h1", 3, [[K1, 30]]), node("h2", 1, [[K1, 30]]), node("x", 0)], "m", undefined, [K1])?.id).toBe("h2");
  });
});

describe("region report: kept conversations", () => {
  it("lists each key once with the largest saving, interleaving nodes' most recent first, bounded", () => {
    const a = node("a", 0, [[K1, 10], [K2, 5]]);
    const b = node("b", 0, [["c".repeat(32), 7], [K1, 20]]);
    expect(regionConversations([a, b])).toEqual([
      { key: K1, savedMs: 20 },
      { key: "c".repeat(32), savedMs: 7 },
      { key: K2, savedMs: 5 },
    ]);
    expect(regionConversations([a, b], 2).map((c) => c.key)).toEqual([K1, "c".repeat(32)]);
    expect(regionConversations([node("n", 0)])).toEqual([]);
  });
});

describe("wire: affinity fields are checked", () => {
  const heartbeat = { t: "heartbeat", inflight: 0, queued: 0, utilisation: 0, warm: [] };
  it("a heartbeat's kept conversations must be keys, bounded", () => {
    expect(parseNodeMessage({ ...heartbeat, affinity: [{ key: K1, savedMs: 3.5 }] })).toMatchObject({ affinity: [{ key: K1, savedMs: 3.5 }] });
    expect(() => parseNodeMessage({ ...heartbeat, affinity: [{ key: "not-a-key", savedMs: 1 }] })).toThrow(MessageError);
    expect(() => parseNodeMessage({ ...heartbeat, affinity: Array.from({ length: 300 }, () => ({ key: K1, savedMs: 1 })) })).toThrow(MessageError);
    expect(parseNodeMessage(heartbeat)).not.toHaveProperty("affinity");
  });
  it("a generate request's affinity must be a key", () => {
    const req = {
      requestId: "r",
      model: { key: "m@1", account: "a", name: "m", version: 1, sha256: "0".repeat(64), size: 1, artifactUrl: "http://x", signature: { inputs: [], outputs: [] } },
      prompt: "",
      params: { maxTokens: 1, temperature: 0, topK: 0, topP: 1, repetitionPenalty: 1, stop: [] },
      deadline: 1,
    };
    expect(parseRegionGenerateRequest({ ...req, affinity: K1 }).affinity).toBe(K1);
    expect(() => parseRegionGenerateRequest({ ...req, affinity: "x".repeat(64) })).toThrow(MessageError);
  });
});

// The edge's files are imported by path at run time (they are type-checked against workers-types).
type RegionConfig = { name: string; url: string; lat: number; lon: number };
type Caller = { colo: string; lat: number | null; lon: number | null };
type EdgeConfig = { regions: RegionConfig[]; explorationShare: number };
type RegionState = { reports: Map<string, RegionReport>; lastRedisOk: number; redis: "ok" | "unreachable" | "not_configured" };
let estimate: (c: Caller, r: RegionConfig, rep: RegionReport | undefined, key: string, rtt: number | undefined, affinity?: readonly string[]) => { totalMs: number; savedMs: number };
let rankRegions: (config: EdgeConfig, state: RegionState, caller: Caller, key: string, allowed: string[] | null, random?: () => number, now?: number, affinity?: readonly string[]) => { region: RegionConfig }[];

beforeAll(async () => {
  const path = (p: string) => `../edge/${p}.js`;
  ({ estimate } = await import(path("latency-model")));
  ({ rankRegions } = await import(path("region-client")));
});

describe("edge: the region that keeps the conversation gains the prefill it saves", () => {
  const near: RegionConfig = { name: "near", url: "http://near", lat: 0, lon: 0 };
  const far: RegionConfig = { name: "far", url: "http://far", lat: 0, lon: 0 };
  const caller: Caller = { colo: "X", lat: null, lon: null };
  const model = (inferP50: number) => ({ key: "m", replicas: 1, loading: 0, queued: 0, rate: 1, trend: 0, queueMs: { p50: 0, p95: 0, p99: 0 }, inferMs: { p50: inferP50, p95: inferP50, p99: inferP50 } });
  const report = (region: string, over: Partial<RegionReport> = {}): RegionReport => fakeReport(region, { models: [model(200)], ...over }, ["m"]);
  const config: EdgeConfig = { regions: [near, far], explorationShare: 0 };
  const state = (...reports: RegionReport[]): RegionState => ({ reports: new Map(reports.map((r) => [r.region, r])), lastRedisOk: Date.now(), redis: "ok" });

  it("takes the saving off the holder's expected time, never more than its inference time", () => {
    const holder = report("far", { affinity: [{ key: K1, savedMs: 50 }] });
    const base = estimate(caller, far, holder, "m", 20);
    const withKey = estimate(caller, far, holder, "m", 20, [K1]);
    expect(base.savedMs).toBe(0);
    expect(withKey.savedMs).toBe(50);
    expect(base.totalMs - withKey.totalMs).toBe(50);
    expect(estimate(caller, far, report("far", { affinity: [{ key: K1, savedMs: 5_000 }] }), "m", 20, [K1]).savedMs).toBe(200);
    // A garbled report entry is ignored, not trusted.
    expect(estimate(caller, far, report("far", { affinity: [{ key: K1, savedMs: "9" as unknown as number }] }), "m", 20, [K1]).savedMs).toBe(0);
  });

  it("between regions otherwise equal, a follow-up goes to the one that keeps its conversation; other keys change nothing", () => {
    const s = state(report("near"), report("far", { affinity: [{ key: K1, savedMs: 50 }] }));
    // Equal priors (unknown location): the first listed wins without a key; the holder with it.
    expect(rankRegions(config, s, caller, "m", null, () => 1)[0]!.region.name).toBe("near");
    expect(rankRegions(config, s, caller, "m", null, () => 1, Date.now(), [K1])[0]!.region.name).toBe("far");
    expect(rankRegions(config, s, caller, "m", null, () => 1, Date.now(), [K2])[0]!.region.name).toBe("near");
  });
});
