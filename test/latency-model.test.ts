// Pure-logic tests of the edge's region choice: the latency model's parts and the ranking.

import { beforeAll, describe, expect, it } from "vitest";
import type { RegionReport } from "../protocol/region-report.js";
import { fakeReport } from "./helpers/fakes.js";

// Imported by path at run time: the Worker's files are type-checked against workers-types
// (edge/tsconfig.json), which this Node project does not load.
type RegionConfig = { name: string; url: string; lat: number; lon: number };
type Caller = { colo: string; lat: number | null; lon: number | null };
type EdgeConfig = { regions: RegionConfig[]; explorationShare: number };
type RegionState = { reports: Map<string, RegionReport>; lastRedisOk: number; redis: "ok" | "unreachable" | "not_configured" };
type Estimate = { rttMs: number; coldMs: number };
let COLOS: Record<string, [number, number]>;
let DEFAULT_COLD_START_MS: number;
let estimate: (c: Caller, r: RegionConfig, rep: RegionReport | undefined, key: string, rtt: number | undefined) => Estimate;
let priorRttMs: (c: Caller, r: RegionConfig) => number;
let rankRegions: (
  config: EdgeConfig,
  state: RegionState,
  caller: Caller,
  key: string,
  allowed: string[] | null,
  random?: () => number,
) => { region: RegionConfig }[];

beforeAll(async () => {
  const path = (p: string) => `../edge/${p}.js`;
  ({ COLOS } = await import(path("geo")));
  ({ DEFAULT_COLD_START_MS, estimate, priorRttMs } = await import(path("latency-model")));
  ({ rankRegions } = await import(path("region-client")));
});

const usWest: RegionConfig = { name: "us-west", url: "http://us", lat: 37.34, lon: -121.89 };
const seoul: RegionConfig = { name: "ap-seoul", url: "http://kr", lat: 37.57, lon: 126.98 };
const at = (colo: string) => ({ colo, lat: COLOS[colo]![0], lon: COLOS[colo]![1] });

const report = (region: string, over: Partial<RegionReport> = {}): RegionReport => fakeReport(region, over);

const config: EdgeConfig = { regions: [usWest, seoul], explorationShare: 0 };
const stateOf = (...reports: RegionReport[]): RegionState => ({
  reports: new Map(reports.map((r) => [r.region, r])),
  lastRedisOk: Date.now(),
  redis: "ok",
});

describe("latency model", () => {
  it("puts a Seoul caller nearer Seoul and a San Jose caller nearer US West by prior", () => {
    expect(priorRttMs(at("ICN"), seoul)).toBeLessThan(priorRttMs(at("ICN"), usWest));
    expect(priorRttMs(at("SJC"), usWest)).toBeLessThan(priorRttMs(at("SJC"), seoul));
  });

  it("uses the measured round trip instead of the prior once there is one", () => {
    expect(estimate(at("ICN"), seoul, report("ap-seoul", { warm: ["m"] }), "m", 42).rttMs).toBe(42);
  });

  it("charges a cold start only where the model is not warm", () => {
    const cold = estimate(at("ICN"), seoul, report("ap-seoul", { coldStartMs: 1500 }), "m", 10);
    const warm = estimate(at("ICN"), seoul, report("ap-seoul", { warm: ["m"] }), "m", 10);
    expect(cold.coldMs).toBe(1500);
    expect(warm.coldMs).toBe(0);
    expect(estimate(at("ICN"), seoul, report("ap-seoul"), "m", 10).coldMs).toBe(DEFAULT_COLD_START_MS);
  });
});

describe("rankRegions", () => {
  it("sends a caller to the warm region when the near one would have to load the model first", () => {
    const state = stateOf(report("ap-seoul", { coldStartMs: 2000 }), report("us-west", { warm: ["m"] }));
    expect(rankRegions(config, state, at("ICN"), "m", null)[0]!.region.name).toBe("us-west");
    const bothWarm = stateOf(report("ap-seoul", { warm: ["m"] }), report("us-west", { warm: ["m"] }));
    expect(rankRegions(config, bothWarm, at("ICN"), "m", null)[0]!.region.name).toBe("ap-seoul");
  });

  it("skips stale and unhealthy regions, and never leaves a model's allowed regions", () => {
    const stale = stateOf(report("ap-seoul", { updatedAt: Date.now() - 60_000, warm: ["m"] }), report("us-west"));
    expect(rankRegions(config, stale, at("ICN"), "m", null).map((r) => r.region.name)).toEqual(["us-west"]);
    const sick = stateOf(report("ap-seoul", { healthy: false }), report("us-west"));
    expect(rankRegions(config, sick, at("ICN"), "m", null).map((r) => r.region.name)).toEqual(["us-west"]);
    expect(rankRegions(config, sick, at("SJC"), "m", ["ap-seoul"])).toEqual([]);
  });

  it("explores the runner-up for the configured share of calls", () => {
    const both = stateOf(report("ap-seoul", { warm: ["m"] }), report("us-west", { warm: ["m"] }));
    const exploring: EdgeConfig = { ...config, explorationShare: 0.1 };
    expect(rankRegions(exploring, both, at("ICN"), "m", null, () => 0.05)[0]!.region.name).toBe("us-west");
    expect(rankRegions(exploring, both, at("ICN"), "m", null, () => 0.5)[0]!.region.name).toBe("ap-seoul");
  });
});
