// Unit tests for forwardInfer (edge/region-client.ts) with a fake fetch: the call goes to a
// second region only when the first answered that it refused the call before any node got it
// (notStarted); a lost connection, before or after the answer began, ends the call with
// region_error and sets the region aside for a moment (workerd reports a refused connection and
// a reset after sending with the same error, so neither proves the call did not run). A call
// outstanding far past its expected time makes its region suspect (ranked last) for new calls
// until a call to it answers; time is the `now` the ranking is given, no sleeping. A region that
// looks slower than its distance is probed (GET /healthz) while calls go elsewhere (edge/rtt-probe.ts).
// A region that shares no wire version with the edge refuses a call as not started (426).

import { afterEach, beforeAll, beforeEach, describe, expect, it, vi } from "vitest";
import { createCodec } from "../protocol/codec.js";
import { MeshError } from "../protocol/errors.js";
import type { RegionInferRequest, RegionInferResponse } from "../protocol/messages.js";
import { formatWireHeader, localWire } from "../protocol/wire-version.js";

// Imported by path at run time: the Worker's files are type-checked against workers-types
// (edge/tsconfig.json), which this Node project does not load; so its types are restated here.
type RegionConfig = { name: string; url: string; lat: number; lon: number };
type RankedRegion = { region: RegionConfig; estimate: { totalMs: number }; reported: boolean };
type UnsignedInferRequest = Omit<RegionInferRequest, "model"> & { model: Omit<RegionInferRequest["model"], "artifactUrl"> };
type RegionState = { reports: Map<string, unknown>; lastRedisOk: number; redis: "ok" | "unreachable" | "not_configured" };
interface RegionClient {
  forwardInfer(config: unknown, ranked: RankedRegion[], request: UnsignedInferRequest, colo: string): Promise<{ region: string; response: RegionInferResponse; attempts: number }>;
  rankRegions(config: unknown, state: RegionState, caller: { colo: string; lat: number | null; lon: number | null }, modelKey: string, allowed: string[] | null, random: () => number, now: number): RankedRegion[];
  LOST_REGION_MS: number;
  OVERDUE_FLOOR_MS: number;
  OVERDUE_FACTOR: number;
  TIMED_OUT_SUSPECT_MS: number;
  resetLostRegions(): void;
  isSuspect(region: string, now?: number): boolean;
  watchCall(region: string, expectedMs: number, now?: number): { answered(): void; timedOut(): void; ended(): void };
}
let client: RegionClient;
beforeAll(async () => {
  client = (await import(/* @vite-ignore */ "../edge/region-client.js" as string)) as RegionClient;
});
const forwardInfer: RegionClient["forwardInfer"] = (...a) => client.forwardInfer(...a);
const rankRegions: RegionClient["rankRegions"] = (...a) => client.rankRegions(...a);

const codec = createCodec();
const west: RegionConfig = { name: "us-west", url: "http://west.test", lat: 37.34, lon: -121.89 };
const seoul: RegionConfig = { name: "ap-seoul", url: "http://seoul.test", lat: 37.57, lon: 126.98 };

const config = {
  adminToken: "admin",
  regionSecrets: { "us-west": { current: "secret-west", previous: null }, "ap-seoul": { current: "secret-seoul", previous: null } },
  publicOrigin: "http://edge.test",
  regions: [west, seoul],
  redis: null,
  inferTimeoutMs: 10_000,
  streamStallTimeoutMs: 60_000,
  localMode: false,
  simulatedRtt: {},
  explorationShare: 0,
  defaultRateLimit: { perSecond: 10, burst: 10 },
  authFailureLimit: { perSecond: 10, burst: 10 },
};

const ranked: RankedRegion[] = [west, seoul].map((region) => ({
  region,
  estimate: { totalMs: 1 },
  reported: true,
}));

const request = (): UnsignedInferRequest => ({
  requestId: "req-1",
  model: { key: "m@1", account: "acct", name: "m", version: 1, sha256: "ab".repeat(32), size: 10, signature: { inputs: [], outputs: [] } },
  inputs: [],
  deadline: Date.now() + 5_000,
});

const okAnswer: RegionInferResponse = { ok: true, outputs: [], node: "n1", timing: { queueMs: 0, loadMs: 0, inferMs: 1, regionMs: 1 } };
const answer = (a: RegionInferResponse, status = 200) => new Response(codec.encode(a), { status });

/** workerd's error for a refused connection and for a reset after sending alike (checked against workerd). */
const lost = () => Object.assign(new Error("Network connection lost."), { remote: true, retryable: true });

/** A fake fetch answering per region (by URL host), recording which regions were called. */
function fakeFetch(byHost: Record<string, () => Promise<Response>>) {
  const calls: string[] = [];
  const fn = vi.fn(async (url: string | URL | Request) => {
    const host = new URL(String(url)).hostname;
    calls.push(host);
    const h = byHost[host];
    if (!h) throw new Error(`no fake for ${host}`);
    return h();
  });
  vi.stubGlobal("fetch", fn);
  return calls;
}

/** A response whose headers arrived but whose body is cut off by a reset. */
function resetMidBody(): Response {
  const body = new ReadableStream<Uint8Array>({
    start(c) {
      c.enqueue(new Uint8Array([0x82]));
      c.error(lost());
    },
  });
  return new Response(body, { status: 200 });
}

async function rejection(p: Promise<unknown>): Promise<MeshError> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(MeshError);
  return err as MeshError;
}

const noReports = (): RegionState => ({ reports: new Map(), lastRedisOk: 0, redis: "not_configured" });

describe("rankRegions without reports", () => {
  const at = (redis: RegionState["redis"]): RegionState => ({ reports: new Map(), lastRedisOk: redis === "ok" ? Date.now() : 0, redis });
  const sjc = { colo: "SJC", lat: null, lon: null };
  beforeEach(() => client.resetLostRegions());

  it("while reports flow, a region without a fresh report is down: not tried blind (a call sent to a closed port could only fail)", () => {
    const now = Date.now();
    const westReport = { region: "us-west", updatedAt: now, healthy: true, nodes: [{}] };
    const state: RegionState = { reports: new Map([["us-west", westReport]]), lastRedisOk: now, redis: "ok" };
    // A model kept in ap-seoul, whose router stopped (its report deleted): nothing to try.
    expect(rankRegions(config, state, sjc, "m@1", ["ap-seoul"], () => 1, now)).toEqual([]);
  });

  it("with Redis answering but no report anywhere (e.g. Redis just restarted), every allowed region by prior", () => {
    expect(rankRegions(config, at("ok"), sjc, "m@1", null, () => 1, Date.now()).map((r) => r.region.name)).toEqual(["us-west", "ap-seoul"]);
  });

  it("without Redis, every allowed region by prior", () => {
    expect(rankRegions(config, at("not_configured"), sjc, "m@1", null, () => 1, Date.now()).map((r) => r.region.name)).toEqual(["us-west", "ap-seoul"]);
  });
});

describe("forwardInfer: re-sent only on proof the call did not start", () => {
  beforeEach(() => client.resetLostRegions());
  afterEach(() => vi.unstubAllGlobals());

  it("a region that answers notStarted: the call goes to the next region", async () => {
    const calls = fakeFetch({
      "west.test": async () => answer({ ok: false, code: "no_capacity", message: "region is draining", notStarted: true }, 503),
      "seoul.test": async () => answer(okAnswer),
    });
    const r = await forwardInfer(config, ranked, request(), "SJC");
    expect(calls).toEqual(["west.test", "seoul.test"]);
    expect(r).toMatchObject({ region: "ap-seoul", attempts: 2, response: { ok: true } });
  });

  it("both regions refuse before dispatch: no_region_available, each tried once", async () => {
    const calls = fakeFetch({
      "west.test": async () => answer({ ok: false, code: "no_capacity", message: "no node", notStarted: true }, 503),
      "seoul.test": async () => answer({ ok: false, code: "no_capacity", message: "queue full", notStarted: true }, 503),
    });
    const err = await rejection(forwardInfer(config, ranked, request(), "SJC"));
    expect(err.code).toBe("no_region_available");
    expect(calls).toEqual(["west.test", "seoul.test"]);
  });

  it("a region that shares no wire version with the edge (426, not started): the next region; none left, no_region_available naming it", async () => {
    const sent: (string | null)[] = [];
    const refusal = () => answer({ ok: false, code: "wire_version_unsupported", message: "wire_version_unsupported: edge speaks wire 1-2, region 3", notStarted: true }, 426);
    const calls = fakeFetch({ "west.test": async () => refusal(), "seoul.test": async () => answer(okAnswer) });
    const seen = vi.mocked(fetch);
    const r = await forwardInfer(config, ranked, request(), "SJC");
    expect(calls).toEqual(["west.test", "seoul.test"]);
    expect(r).toMatchObject({ region: "ap-seoul", attempts: 2, response: { ok: true } });
    // Every call announces the edge's versions and features (protocol/wire-version.ts).
    for (const [, init] of seen.mock.calls) sent.push(new Headers((init as RequestInit).headers).get("x-mesh-wire"));
    expect(sent).toEqual([formatWireHeader(localWire()), formatWireHeader(localWire())]);
    vi.unstubAllGlobals();
    fakeFetch({ "west.test": async () => refusal(), "seoul.test": async () => refusal() });
    const err = await rejection(forwardInfer(config, ranked, request(), "SJC"));
    expect(err.code).toBe("no_region_available");
    expect(err.message).toMatch(/wire_version_unsupported: edge speaks wire 1-2, region 3/);
  });

  it("a lost connection before any answer (a refused connection looks the same in workerd): region_error, no other region, and the region is set aside", async () => {
    const calls = fakeFetch({
      "west.test": async () => {
        throw lost();
      },
      "seoul.test": async () => answer(okAnswer),
    });
    const err = await rejection(forwardInfer(config, ranked, request(), "SJC"));
    expect(err.code).toBe("region_error");
    expect(err.message).toMatch(/may have run/);
    expect(calls).toEqual(["west.test"]);
    // The next calls in this isolate rank us-west out for a few seconds, then back in.
    const now = Date.now();
    const names = (at: number) => rankRegions(config, noReports(), { colo: "SJC", lat: null, lon: null }, "m@1", null, () => 1, at).map((r) => r.region.name);
    expect(names(now)).toEqual(["ap-seoul"]);
    expect(names(now + client.LOST_REGION_MS + 1)).toContain("us-west");
  });

  it("a reset after the answer began: region_error, not re-sent", async () => {
    const calls = fakeFetch({
      "west.test": async () => resetMidBody(),
      "seoul.test": async () => answer(okAnswer),
    });
    const err = await rejection(forwardInfer(config, ranked, request(), "SJC"));
    expect(err.code).toBe("region_error");
    expect(calls).toEqual(["west.test"]);
  });

  it("a failure without notStarted (the call may have run) goes back to the caller as it is", async () => {
    const calls = fakeFetch({
      "west.test": async () => answer({ ok: false, code: "node_error", message: "node went away during the call" }, 502),
      "seoul.test": async () => answer(okAnswer),
    });
    const r = await forwardInfer(config, ranked, request(), "SJC");
    expect(calls).toEqual(["west.test"]);
    expect(r.response).toMatchObject({ ok: false, code: "node_error" });
    // So is a no_capacity that does not say notStarted (a region of an older version).
    const again = fakeFetch({
      "west.test": async () => answer({ ok: false, code: "no_capacity", message: "full" }, 503),
      "seoul.test": async () => answer(okAnswer),
    });
    const r2 = await forwardInfer(config, ranked, request(), "SJC");
    expect(again).toEqual(["west.test"]);
    expect(r2.response).toMatchObject({ ok: false, code: "no_capacity" });
  });

  it("an answer the region gave a repeated request id (x-mesh-repeat) carries no compute: the first call's row bills it", async () => {
    const ran = { ...okAnswer, timing: { ...okAnswer.timing, computeMs: 42 } };
    fakeFetch({ "west.test": async () => new Response(codec.encode(ran), { status: 200, headers: { "x-mesh-repeat": "1" } }) });
    const r = await forwardInfer(config, ranked, request(), "SJC");
    expect(r.response).toMatchObject({ ok: true, timing: { computeMs: 0 } });
    fakeFetch({ "west.test": async () => answer(ran) });
    expect((await forwardInfer(config, ranked, request(), "SJC")).response).toMatchObject({ ok: true, timing: { computeMs: 42 } });
  });

  it("a region that does not answer by the deadline: deadline_exceeded, not re-sent", async () => {
    const calls = fakeFetch({
      "west.test": async () => {
        throw Object.assign(new Error("The operation was aborted due to timeout"), { name: "TimeoutError" });
      },
      "seoul.test": async () => answer(okAnswer),
    });
    const err = await rejection(forwardInfer(config, ranked, request(), "SJC"));
    expect(err.code).toBe("deadline_exceeded");
    expect(calls).toEqual(["west.test"]);
  });
});

describe("a silent region: overdue calls turn new calls away", () => {
  beforeEach(() => client.resetLostRegions());
  afterEach(() => vi.unstubAllGlobals());
  const sjc = { colo: "SJC", lat: null, lon: null };
  const names = (at: number, allowed: string[] | null = null) => rankRegions(config, noReports(), sjc, "m@1", allowed, () => 1, at).map((r) => r.region.name);
  /** A fetch that hangs until its signal aborts (a link that drops every packet), then rejects as workerd does. */
  const silent = (init?: RequestInit) =>
    new Promise<Response>((_, reject) => {
      init?.signal?.addEventListener("abort", () => reject(init.signal!.reason));
    });

  it("a call outstanding past max(floor, factor x expected): its region is ranked last for new calls, and the call is not re-sent", async () => {
    const calls: string[] = [];
    vi.stubGlobal(
      "fetch",
      vi.fn(async (url: string, init?: RequestInit) => {
        calls.push(new URL(url).hostname);
        return silent(init);
      }),
    );
    const t0 = Date.now();
    const pending = rejection(forwardInfer(config, ranked, { ...request(), deadline: Date.now() + 300 }, "SJC"));
    await vi.waitFor(() => expect(calls).toEqual(["west.test"]));
    // Expected 1 ms: overdue at the floor, not before.
    expect(names(t0 + client.OVERDUE_FLOOR_MS - 50)).toEqual(["us-west", "ap-seoul"]);
    expect(names(t0 + client.OVERDUE_FLOOR_MS + 50)).toEqual(["ap-seoul", "us-west"]);
    // Suspect, not refused: a model that may only run there still goes there.
    expect(names(t0 + client.OVERDUE_FLOOR_MS + 50, ["us-west"])).toEqual(["us-west"]);
    const err = await pending;
    expect(err.code).toBe("deadline_exceeded");
    expect(calls).toEqual(["west.test"]);
    // Timed out: suspect a little longer, then back in its place.
    const ended = Date.now();
    expect(client.isSuspect("us-west", ended + 10)).toBe(true);
    expect(names(ended + client.TIMED_OUT_SUSPECT_MS + 1)).toEqual(["us-west", "ap-seoul"]);
  });

  it("the overdue point scales with the expected time: factor x expected above the floor", () => {
    const t0 = 1_000_000;
    client.watchCall("us-west", 400, t0);
    expect(client.isSuspect("us-west", t0 + client.OVERDUE_FACTOR * 400 - 1)).toBe(false);
    expect(client.isSuspect("us-west", t0 + client.OVERDUE_FACTOR * 400)).toBe(true);
    expect(client.isSuspect("ap-seoul", t0 + 10_000)).toBe(false);
  });

  it("a call to the region that answers clears the suspicion, even while an older call is still stuck", () => {
    const t0 = Date.now();
    const stuck = client.watchCall("us-west", 1, t0 - 10_000);
    expect(client.isSuspect("us-west", t0)).toBe(true);
    client.watchCall("us-west", 1, t0 - 1).answered();
    expect(client.isSuspect("us-west", t0 + 10_000)).toBe(false);
    // A call sent after that answer and overdue in turn makes it suspect again.
    client.watchCall("us-west", 1, t0 + 1);
    expect(client.isSuspect("us-west", t0 + 1 + client.OVERDUE_FLOOR_MS)).toBe(true);
    stuck.ended();
  });

  it("an answer also ends a timeout's suspicion; a call that ends otherwise leaves it as it was", () => {
    const t0 = Date.now();
    client.watchCall("us-west", 1, t0).timedOut();
    expect(client.isSuspect("us-west", Date.now() + 1)).toBe(true);
    client.watchCall("us-west", 1).ended();
    expect(client.isSuspect("us-west", Date.now() + 1)).toBe(true);
    client.watchCall("us-west", 1).answered();
    expect(client.isSuspect("us-west", Date.now() + 1)).toBe(false);
  });

  it("after a timeout and until an answer, the region is probed one call at a time", () => {
    const t0 = Date.now();
    client.watchCall("us-west", 1, t0).timedOut();
    const later = Date.now() + client.TIMED_OUT_SUSPECT_MS + 1;
    expect(client.isSuspect("us-west", later)).toBe(false);
    // The probe: suspect from the moment it is out, not only once overdue.
    const probe = client.watchCall("us-west", 1000, later);
    expect(client.isSuspect("us-west", later + 1)).toBe(true);
    probe.answered();
    // Answered: calls go there freely again, suspect only once overdue.
    const next = client.watchCall("us-west", 1, Date.now() + 1);
    expect(client.isSuspect("us-west", Date.now() + 2)).toBe(false);
    next.ended();
  });

  it("a region answering in time is never suspect", async () => {
    fakeFetch({ "west.test": async () => answer(okAnswer) });
    const t0 = Date.now();
    await forwardInfer(config, ranked, request(), "SJC");
    expect(names(t0 + 60_000)).toEqual(["us-west", "ap-seoul"]);
  });
});

// edge/rtt-probe.ts: while a call is out, a region measured far slower than its distance is
// re-measured with two GET /healthz (the shorter counts: the first may open a new connection).
describe("a region that looks slower than its distance is probed while calls go elsewhere", () => {
  interface Probes {
    probeSlowRegions(config: unknown, chosen: string, callMs: number, colo: string, now?: number): Promise<void>[];
    resetProbes(): void;
    PROBE_INTERVAL_MS: number;
  }
  interface State {
    recordRtt(colo: string, region: string, ms: number): void;
    measuredRtt(colo: string, region: string): number | undefined;
  }
  let probes: Probes;
  let state: State;
  beforeAll(async () => {
    probes = (await import(/* @vite-ignore */ "../edge/rtt-probe.js" as string)) as Probes;
    state = (await import(/* @vite-ignore */ "../edge/region-state.js" as string)) as State;
  });
  // A colo per test, in order (the averages are module state), none that another test here measures from;
  // each near or far from a region as its test needs.
  let colo = "";
  const colos = ["ICN", "NRT", "FRA", "AMS", "KIX", "HKG"];
  beforeEach(() => {
    colo = colos.shift()!;
    client.resetLostRegions();
    probes.resetProbes();
  });
  afterEach(() => {
    vi.useRealTimers();
    vi.unstubAllGlobals();
  });
  const healthy = () => Promise.resolve(new Response('{"status":"ok"}'));

  it("ICN's link to ap-seoul measured at 600 ms: a call to us-west probes it, and the shorter of the two round trips counts", async () => {
    state.recordRtt(colo, "ap-seoul", 600);
    vi.useFakeTimers({ toFake: ["Date"] });
    // The first probe request opens a connection (three round trips of 10 ms), the second reuses it.
    const took = [30, 10];
    const calls: string[] = [];
    vi.stubGlobal(
      "fetch",
      vi.fn(async (url: string | URL | Request) => {
        const u = new URL(String(url));
        calls.push(`${u.hostname}${u.pathname}`);
        if (u.hostname === "west.test") return answer(okAnswer);
        vi.setSystemTime(Date.now() + took.shift()!);
        return healthy();
      }),
    );
    // us-west, 130 ms away, is where the call goes: ap-seoul could answer a probe well within it.
    const toWest = ranked.map((r) => ({ ...r, estimate: { totalMs: 150 } }));
    const r = await forwardInfer(config, toWest, request(), colo);
    expect(r.region).toBe("us-west");
    // The probe went out with the call, which did not wait for it.
    // (A second sample: the first few count by their minimum.)
    await vi.waitFor(() => expect(state.measuredRtt(colo, "ap-seoul")).toBe(10));
    expect(calls.filter((c) => c === "seoul.test/healthz")).toHaveLength(2);
  });

  it("a colo's first round trips count by their minimum (an outlier first call does not stand as the average); later ones by the EWMA", () => {
    const c = "SYD";
    state.recordRtt(c, "ap-seoul", 400); // a cold isolate's first call
    state.recordRtt(c, "ap-seoul", 12);
    expect(state.measuredRtt(c, "ap-seoul")).toBe(12);
    state.recordRtt(c, "ap-seoul", 14);
    expect(state.measuredRtt(c, "ap-seoul")).toBe(12);
    state.recordRtt(c, "ap-seoul", 112); // past the first three: the average follows the link up
    expect(state.measuredRtt(c, "ap-seoul")).toBeCloseTo(12 + 0.2 * 100, 5);
  });

    it("at most one probe per region every PROBE_INTERVAL_MS", () => {
    state.recordRtt(colo, "ap-seoul", 600);
    const calls = fakeFetch({ "seoul.test": healthy });
    const t0 = Date.now();
    expect(probes.probeSlowRegions(config, "us-west", 150, colo, t0)).toHaveLength(1);
    expect(probes.probeSlowRegions(config, "us-west", 150, colo, t0 + probes.PROBE_INTERVAL_MS - 1)).toHaveLength(0);
    expect(probes.probeSlowRegions(config, "us-west", 150, colo, t0 + probes.PROBE_INTERVAL_MS)).toHaveLength(1);
    expect(calls.length).toBeGreaterThan(0);
  });

  it("a region at about its distance, the chosen region, and an unmeasured one are not probed", () => {
    state.recordRtt(colo, "us-west", 140);
    fakeFetch({});
    expect(probes.probeSlowRegions(config, "ap-seoul", 1_000, colo)).toHaveLength(0);
    state.recordRtt(colo, "ap-seoul", 900);
    expect(probes.probeSlowRegions(config, "ap-seoul", 1_000, colo)).toHaveLength(0);
  });

  it("a region farther than the chosen region's whole call is not probed (it would be cancelled mid-handshake with the call)", () => {
    // us-west measured at 500 ms from this colo (new connections on rare calls), calls to ap-seoul taking 20 ms.
    state.recordRtt(colo, "us-west", 500);
    fakeFetch({});
    expect(probes.probeSlowRegions(config, "ap-seoul", 20, colo)).toHaveLength(0);
    expect(probes.probeSlowRegions(config, "ap-seoul", 400, colo)).toHaveLength(1);
  });

  it("a probe that fails records nothing", async () => {
    state.recordRtt(colo, "ap-seoul", 600);
    fakeFetch({ "seoul.test": () => Promise.reject(lost()) });
    await Promise.all(probes.probeSlowRegions(config, "us-west", 150, colo));
    expect(state.measuredRtt(colo, "ap-seoul")).toBe(600);
  });

  it("with a simulated distance (one machine), no probe: over loopback it would undo the distance", () => {
    state.recordRtt(colo, "ap-seoul", 600);
    fakeFetch({});
    const local = { ...config, localMode: true, simulatedRtt: { [colo]: { "ap-seoul": 250 } } };
    expect(probes.probeSlowRegions(local, "us-west", 150, colo)).toHaveLength(0);
  });
});
