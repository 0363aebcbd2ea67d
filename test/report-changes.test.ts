// What the edge routes by reaches it soon after it changes, not a report interval later.
//
// The router side: a node joining or leaving (through the real node socket acceptor and
// scheduler) makes the report publisher publish soon, coalesced: a burst of joins costs a couple
// of publishes, never two in flight, and nothing is published after stop() deleted the report.
// The publisher's interval is an hour here, so every publish seen is one a change asked for.
//
// The edge side (edge/region-state.ts, against a fake Upstash REST endpoint): a call its view
// would refuse re-reads the reports first when the view is older than RECHECK_MS, at most once
// per RECHECK_MS, so refusals during a real outage do not each cost a Redis read. Time is the
// faked clock; nothing sleeps.

import { EventEmitter } from "node:events";
import { afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import type { WebSocket } from "ws";
import { createCodec } from "../protocol/codec.js";
import type { Logger } from "../protocol/log.js";
import type { RegionReport } from "../protocol/region-report.js";
import { nodeSocketAcceptor } from "../regions/node-sockets.js";
import { REPORT_COALESCE_MS, startReportPublisher, type ReportStore } from "../regions/report-publisher.js";
import { regionReport } from "../regions/reports.js";
import { Scheduler, SCHEDULER_DEFAULTS } from "../regions/scheduler.js";
import { fakeReport, nodeHello } from "./helpers/fakes.js";

const quiet: Logger = () => undefined;
const codec = createCodec();
const HOUR = 3_600_000;

/** A node socket as the acceptor sees one: the test says hello on it and closes it. */
class FakeNodeSocket extends EventEmitter {
  send(): void {}
  ping(): void {}
  terminate(): void {
    this.close(1006);
  }
  close(code = 1000): void {
    this.emit("close", code, Buffer.from(""));
  }
  hello(id: string): void {
    this.emit("message", Buffer.from(codec.encode(nodeHello(id))), true);
  }
}

/** A router's scheduler, node sockets and publisher, wired as regions/server.ts wires them, over a fake store whose sets take `setMs`. */
function router(setMs: number) {
  const scheduler = new Scheduler(SCHEDULER_DEFAULTS);
  const accept = nodeSocketAcceptor({ region: "r", pingIntervalMs: HOUR, wireFeatures: ["batch"] }, scheduler, quiet);
  const published: { at: number; nodes: string[] }[] = [];
  let inflight = 0;
  let mostInflight = 0;
  let deletedAt: number | null = null;
  const store: ReportStore = {
    async set(_key, value) {
      inflight++;
      mostInflight = Math.max(mostInflight, inflight);
      await new Promise((r) => setTimeout(r, setMs));
      published.push({ at: Date.now(), nodes: value.nodes.map((n) => n.id).sort() });
      inflight--;
      return "OK";
    },
    async del() {
      deletedAt = Date.now();
      return 1;
    },
  };
  const publisher = startReportPublisher(store, "r", HOUR, () => regionReport("r", scheduler, false), quiet);
  scheduler.onReportChange = () => publisher.changed();
  const sockets = new Map<string, FakeNodeSocket>();
  return {
    publisher,
    published,
    get mostInflight() {
      return mostInflight;
    },
    get deletedAt() {
      return deletedAt;
    },
    join(id: string): void {
      const ws = new FakeNodeSocket();
      accept(ws as unknown as WebSocket);
      ws.hello(id);
      sockets.set(id, ws);
    },
    leave(id: string): void {
      sockets.get(id)!.close();
      sockets.delete(id);
    },
    /** The nodes the scheduler holds open now. */
    joined: () => [...scheduler.nodes.values()].filter((n) => n.open).map((n) => n.id),
  };
}

const ids = (n: number) => Array.from({ length: n }, (_, i) => `n${String(i).padStart(2, "0")}`);

describe("the router publishes its report soon after nodes join or leave", () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it("a node joining a router that just published is in a report within the coalescing window", async () => {
    vi.useFakeTimers();
    const r = router(5);
    const first = r.publisher.publishNow(); // a router's first report, before any node joined
    await vi.advanceTimersByTimeAsync(5);
    await first;
    expect(r.published.map((p) => p.nodes)).toEqual([[]]);
    const joinedAt = Date.now();
    r.join("n1");
    await vi.advanceTimersByTimeAsync(REPORT_COALESCE_MS);
    expect(r.published.map((p) => p.nodes)).toEqual([[], ["n1"]]);
    expect(r.published[1]!.at - joinedAt).toBeLessThanOrEqual(REPORT_COALESCE_MS);
    // And leaving: the node is gone from the next report as soon.
    await vi.advanceTimersByTimeAsync(REPORT_COALESCE_MS);
    const leftAt = Date.now();
    r.leave("n1");
    await vi.advanceTimersByTimeAsync(REPORT_COALESCE_MS);
    expect(r.published.map((p) => p.nodes)).toEqual([[], ["n1"], []]);
    expect(r.published[2]!.at - leftAt).toBeLessThanOrEqual(REPORT_COALESCE_MS);
    await r.publisher.stop();
  });

  it("20 nodes joining over 100 ms: two publishes, the last lists all 20, never two in flight", async () => {
    vi.useFakeTimers();
    const r = router(30);
    for (const id of ids(20)) {
      r.join(id);
      await vi.advanceTimersByTimeAsync(5);
    }
    await vi.advanceTimersByTimeAsync(2 * REPORT_COALESCE_MS);
    expect(r.published.length).toBeLessThanOrEqual(2);
    expect(r.published.at(-1)!.nodes).toEqual(ids(20));
    expect(r.mostInflight).toBe(1);
    await r.publisher.stop();
  });

  it("a Redis slower than the changes: one publish at a time, at most one per window, the last one true; none after stop", async () => {
    vi.useFakeTimers();
    const r = router(250);
    const t0 = Date.now();
    // For 1 s, every 10 ms a node joins (or reconnects) or one leaves, while each set takes 250 ms.
    for (let i = 0; i < 100; i++) {
      if (i % 3 === 2) r.leave(r.joined()[0]!);
      else r.join(`n${i % 7}`);
      await vi.advanceTimersByTimeAsync(10);
    }
    await vi.advanceTimersByTimeAsync(1_000);
    expect(r.mostInflight).toBe(1);
    expect(r.published.length).toBeLessThanOrEqual(Math.ceil((Date.now() - t0) / REPORT_COALESCE_MS));
    expect(r.published.at(-1)!.nodes).toEqual(r.joined().sort());
    // A stopped publisher's delete is the last word: nodes leaving after it publish nothing.
    await r.publisher.stop();
    const count = r.published.length;
    for (const id of r.joined()) r.leave(id);
    await vi.advanceTimersByTimeAsync(1_000);
    expect(r.published.length).toBe(count);
    expect(r.deletedAt).not.toBeNull();
  });
});

describe("the edge re-reads the reports before refusing a call on an old view", () => {
  // Imported by path at run time: the Worker's files are type-checked against workers-types
  // (edge/tsconfig.json), which this Node project does not load; so its types are restated here.
  type State = { reports: Map<string, RegionReport> };
  interface RegionStateModule {
    RECHECK_MS: number;
    mayRecheck(now: number, viewAt: number, lastRecheck: number): boolean;
    rankOnFreshView<T>(config: unknown, waitUntil: (p: Promise<unknown>) => void, rank: (s: State) => T[]): Promise<T[]>;
  }
  let edge: RegionStateModule;
  beforeAll(async () => {
    edge = (await import(/* @vite-ignore */ "../edge/region-state.js" as string)) as RegionStateModule;
  });
  afterEach(() => {
    vi.useRealTimers();
    vi.unstubAllGlobals();
  });

  it("mayRecheck: only a view older than RECHECK_MS, and only once per RECHECK_MS", () => {
    const B = edge.RECHECK_MS;
    expect(edge.mayRecheck(10_000, 10_000 - B + 1, 0)).toBe(false); // a view this fresh is the truth
    expect(edge.mayRecheck(10_000, 10_000 - B, 0)).toBe(true);
    expect(edge.mayRecheck(10_000, 0, 10_000 - B + 1)).toBe(false); // re-read moments ago: refuse
    expect(edge.mayRecheck(10_000, 0, 10_000 - B)).toBe(true);
  });

  it("a region whose node joined after the view was read: the refused call re-reads and goes there; refusals meanwhile read once per RECHECK_MS", async () => {
    vi.useFakeTimers({ toFake: ["Date"] });
    const B = edge.RECHECK_MS;
    const config = { redis: { url: "http://redis.test", token: "t" }, regions: [{ name: "r", url: "http://r.test", lat: 0, lon: 0 }] };
    // What Redis holds: the restarted router's first report, with no node yet.
    let stored = fakeReport("r", { nodes: [], healthy: false });
    let reads = 0;
    const b64 = (s: string) => Buffer.from(s).toString("base64");
    // The Upstash REST pipeline: MGET of the reports, HGETALL of the round trips, nothing else here.
    vi.stubGlobal(
      "fetch",
      vi.fn(async (url: string | URL | Request) => {
        expect(new URL(String(url)).pathname).toBe("/pipeline");
        reads++;
        return new Response(JSON.stringify([{ result: [b64(JSON.stringify({ ...stored, updatedAt: Date.now() }))] }, { result: [] }]), { headers: { "content-type": "application/json" } });
      }),
    );
    const takers = (s: State) => [...s.reports.values()].filter((r) => r.healthy && r.nodes.length > 0).map((r) => r.region);
    const rank = () => edge.rankOnFreshView(config, () => undefined, takers);
    const at = (ms: number) => vi.setSystemTime(t0 + ms);
    const t0 = Date.now();

    expect(await rank()).toEqual([]); // the first read (awaited): no node, and a view this fresh is not read again
    expect(reads).toBe(1);
    stored = fakeReport("r"); // the node rejoined, and the router published at once
    at(B - 1);
    expect(await rank()).toEqual([]); // the view is younger than RECHECK_MS: refused on it
    expect(reads).toBe(1);
    at(B);
    expect(await rank()).toEqual(["r"]); // re-read, and the call goes to the region
    expect(reads).toBe(2);

    // A real outage: the region loses its node for good, and the edge's next refresh (in the
    // background, REFRESH_MS on) reads that. Refused calls then re-read at most once per RECHECK_MS.
    stored = fakeReport("r", { nodes: [], healthy: false });
    const background: Promise<unknown>[] = [];
    const t1 = B + 1_001;
    at(t1);
    expect(await edge.rankOnFreshView(config, (p) => background.push(p), takers)).toEqual(["r"]); // on the view it had
    await Promise.all(background);
    expect(reads).toBe(3);
    for (let round = 1; round <= 3; round++) {
      for (let ms = 0; ms < B; ms += 10) {
        at(t1 + (round - 1) * B + ms);
        expect(await rank()).toEqual([]);
      }
      // The first refusal of each round re-read (the first round's view was read at its start).
      expect(reads).toBe(3 + round - 1);
    }
  });
});
