// Calls that cannot hang (issue 11): every Redis call is bounded, periodic Redis work skips a
// tick while the last is still in flight, and the edge<->region stream sockets find a peer that
// stopped answering.
//
// Pieces first, with real sockets where the point is a socket: the Redis clients against a TCP
// server that accepts and never answers; the router's publisher and policy reader with a store
// that never resolves; the router's StreamHub against ws clients, one of which does not answer
// pings; the edge's RegionChannel against the real StreamHub and against a server that reads
// and says nothing. Then one mesh (one region, one node, real redis-server, workerd, router and
// node): redis-server frozen with SIGSTOP while calls keep answering and /v1/regions says Redis
// is unreachable, the router publishing again once it is thawed; stream sockets that live across
// many router pings (workerd answers them); and a router frozen mid-generation, whose stream
// fails with a region_error instead of waiting forever.
//
// No assertion is about speed: that a call completes at all (inside generous bounds) and the
// state it leaves is what is checked.

import { createServer, type Server } from "node:http";
import { createServer as createTcpServer, type Server as TcpServer, type Socket } from "node:net";
import { mkdtemp, rm } from "node:fs/promises";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "@upstash/redis";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import WebSocket, { WebSocketServer } from "ws";
import { createCodec } from "../protocol/codec.js";
import type { Logger } from "../protocol/log.js";
import type { RegionGenerateRequest, RegionToEdge } from "../protocol/messages.js";
import { regionReportKey, type RegionReport } from "../protocol/region-report.js";
import { routerRedis, startPeriodic } from "../regions/redis-client.js";
import { startPolicyReader, type PolicyStore } from "../regions/policy-reader.js";
import { startReportPublisher, type ReportStore } from "../regions/report-publisher.js";
import type { Scheduler } from "../regions/scheduler.js";
import { StreamHub } from "../regions/streams.js";
import { startMesh, type MeshHandle } from "../local/mesh.js";
import { call } from "./helpers/mesh-client.js";
import { waitUntil, within } from "./helpers/region-harness.js";
import { StreamClient } from "./helpers/stream-client.js";
import { LEGACY_AGREEMENT, type WireAgreement } from "../protocol/wire-version.js";

const quiet: Logger = () => undefined;
const never = <T>() => new Promise<T>(() => undefined);

/** A TCP server that accepts connections and never says a word: a hung Redis or REST endpoint. */
async function silentServer(): Promise<{ url: string; accepted: () => number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  let accepted = 0;
  const server: TcpServer = createTcpServer((s) => {
    accepted++;
    sockets.add(s);
    s.on("data", () => undefined);
    s.on("close", () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    accepted: () => accepted,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

describe("every Redis call is bounded", () => {
  let silent: Awaited<ReturnType<typeof silentServer>>;
  beforeAll(async () => {
    silent = await silentServer();
  });
  afterAll(() => silent.close());

  it("the router's client gives up on a Redis that accepts and never answers, and says so", async () => {
    const redis = routerRedis({ url: silent.url, token: "t" }, 300);
    await expect(within(redis.get("k"), 20_000, "router redis get")).rejects.toThrow(/abort|timeout/i);
    await expect(within(redis.set("k", "v", { ex: 5 }), 20_000, "router redis set")).rejects.toThrow(/abort|timeout/i);
    expect(silent.accepted()).toBeGreaterThan(0);
  });

  it("the edge's general client and shared store give up too (each request its own timeout)", async () => {
    // By path at run time: the root project does not type-check edge/ (workers types).
    const edgeRedis = (await import(/* @vite-ignore */ "../edge/redis.js" as string)) as {
      redisFor(config: unknown): Redis;
      sharedStoreFor(config: unknown): { run<T>(op: (r: Redis) => Promise<T>): Promise<T>; available(): boolean };
    };
    const config = { redis: { url: silent.url, token: "t" } };
    const general = edgeRedis.redisFor(config);
    // Twice: a timeout that fired once must not leave later requests unbounded.
    for (let i = 0; i < 2; i++) {
      await expect(within(general.mget("a", "b"), 20_000, "edge redis mget")).rejects.toThrow(/abort|timeout/i);
    }
    const p = general.pipeline();
    p.get("a");
    p.hgetall("b");
    await expect(within(p.exec(), 20_000, "edge redis pipeline")).rejects.toThrow(/abort|timeout/i);
    const shared = edgeRedis.sharedStoreFor(config);
    await expect(within(shared.run((r) => r.get("k")), 20_000, "shared store get")).rejects.toThrow(/abort|timeout/i);
    expect(shared.available()).toBe(false); // the breaker opened: the next lookups skip Redis
  });
});

describe("periodic Redis work skips a tick while the last is in flight", () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  const report = (n: number): RegionReport => ({ region: "r", updatedAt: n }) as unknown as RegionReport;

  it("the report publisher: one stuck set, ticks skipped meanwhile, publishing again once it ends", async () => {
    vi.useFakeTimers({ toFake: ["setInterval", "clearInterval"] });
    const pending: (() => void)[] = [];
    const sets: RegionReport[] = [];
    let deleted = 0;
    const store: ReportStore = {
      set: (_key, value) => {
        sets.push(value);
        // The first set hangs until released; later ones answer at once.
        return sets.length === 1 ? new Promise<void>((r) => pending.push(r)) : Promise.resolve("OK");
      },
      del: async () => {
        deleted++;
        return 1;
      },
    };
    let n = 0;
    const pub = startReportPublisher(store, "r", 100, () => report(++n), quiet);
    vi.advanceTimersByTime(100);
    expect(sets.length).toBe(1);
    vi.advanceTimersByTime(1_000);
    expect(sets.length).toBe(1); // no pile-up behind the stuck request
    expect(pub.skipped).toBe(10);
    pending.shift()!();
    await waitUntil("stuck set ended", 5_000, () => {
      vi.advanceTimersByTime(100);
      return sets.length >= 3 ? true : undefined;
    });
    expect(sets.map((s) => s.updatedAt)).toEqual([...sets.keys()].map((i) => i + 1));
    await pub.stop();
    expect(deleted).toBe(1);
  });

  it("the report publisher's stop waits for a publish in flight, so the delete lands last", async () => {
    const order: string[] = [];
    let release!: () => void;
    const store: ReportStore = {
      set: () => new Promise<void>((r) => (release = () => (order.push("set"), r()))),
      del: async () => (order.push("del"), 1),
    };
    const pub = startReportPublisher(store, "r", 3_600_000, () => report(1), quiet);
    void pub.publishNow();
    const stopped = pub.stop();
    await Promise.resolve();
    expect(order).toEqual([]);
    release();
    await stopped;
    expect(order).toEqual(["set", "del"]);
  });

  it("the policy reader: a read that never answers blocks no later tick from being skipped, and keeps the last policies", async () => {
    vi.useFakeTimers({ toFake: ["setInterval", "clearInterval"] });
    let reads = 0;
    const store: PolicyStore = {
      hgetall: <T>() => {
        reads++;
        return never<T | null>();
      },
    };
    const policies = new Map<string, unknown>([["kept", { keepWarm: 1 }]]);
    const scheduler = { policies } as unknown as Scheduler;
    const reader = startPolicyReader("r", store, "secret", 50, scheduler, quiet);
    expect(reads).toBe(1); // the first read starts at once
    vi.advanceTimersByTime(500);
    expect(reads).toBe(1);
    expect(reader.skipped).toBe(10);
    expect([...policies.keys()]).toEqual(["kept"]);
    reader.stop();
  });

  it("runNow after a run in flight waits for it instead of running beside it", async () => {
    let running = 0;
    let most = 0;
    const releases: (() => void)[] = [];
    const loop = startPeriodic(async () => {
      running++;
      most = Math.max(most, running);
      await new Promise<void>((r) => releases.push(r));
      running--;
    }, 3_600_000);
    const a = loop.runNow();
    const b = loop.runNow();
    await waitUntil("first run started", 5_000, () => (releases.length === 1 ? true : undefined));
    releases[0]!();
    await a;
    await waitUntil("second run started", 5_000, () => (releases.length === 2 ? true : undefined));
    releases[1]!();
    await b;
    expect(most).toBe(1);
    await loop.stop();
  });
});

// ------------------------------------------------------------------ stream socket liveness

/** A router StreamHub on a real port, with a scheduler that queues every stream forever. */
async function hubServer(pingIntervalMs: number) {
  const submitted: string[] = [];
  let cancelled = 0;
  const scheduler = {
    submitStream: (model: { key: string }) => {
      submitted.push(model.key);
      return { cancel: () => cancelled++ };
    },
  } as unknown as Scheduler;
  const request = (): RegionGenerateRequest =>
    ({
      requestId: "req-1",
      model: { key: "m@1", account: "acct", tokenizer: { sha256: "x", size: 1, url: "http://x" } },
      prompt: "hi",
      params: {},
      deadline: Date.now() + 600_000,
    }) as unknown as RegionGenerateRequest;
  const hub = new StreamHub(scheduler, { stallTimeoutMs: 600_000, maxStreamsPerSocket: 8, maxBufferedBytes: 1 << 20, pingIntervalMs }, quiet, async () => request());
  const wss = new WebSocketServer({ noServer: true });
  const server: Server = createServer((_req, res) => res.end());
  server.on("upgrade", (req, socket, head) => wss.handleUpgrade(req, socket, head, (ws) => hub.accept(ws)));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    hub,
    url: `ws://127.0.0.1:${(server.address() as AddressInfo).port}`,
    submitted,
    cancelled: () => cancelled,
    close: () =>
      new Promise<void>((r) => {
        hub.closeAll(1001, "test over");
        wss.close();
        server.close(() => r());
      }),
  };
}

const codec = createCodec();

function connect(url: string, opts: { autoPong?: boolean } = {}): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { autoPong: opts.autoPong ?? true, perMessageDeflate: false });
    ws.binaryType = "arraybuffer";
    ws.once("open", () => resolve(ws));
    ws.once("error", reject);
  });
}

describe("the router finds an edge stream socket that stopped answering", () => {
  it("terminates the socket that does not pong (cancelling its streams) and keeps the one that does", async () => {
    const h = await hubServer(200);
    try {
      const mute = await connect(h.url, { autoPong: false });
      const live = await connect(h.url);
      let muteClosed = false;
      mute.on("close", () => (muteClosed = true));
      mute.send(codec.encode({ t: "generate", sid: "s1", req: new Uint8Array([1]), grant: {}, window: 4 }), { binary: true });
      await waitUntil("stream queued", 10_000, () => (h.submitted.length === 1 ? true : undefined));
      await waitUntil("mute socket terminated", 20_000, () => (muteClosed ? true : undefined));
      // Its queued stream was cancelled (its slot would otherwise wait for the stall bound).
      expect(h.cancelled()).toBe(1);
      // The socket that answered every ping in the same intervals is still there.
      expect(live.readyState).toBe(WebSocket.OPEN);
      expect(h.hub.stats().sockets).toBe(1);
      // Frames count as life too, and a ping frame is answered with a pong frame.
      const pong = new Promise<RegionToEdge>((r) => live.once("message", (d) => r(codec.decode(new Uint8Array(d as ArrayBuffer)) as RegionToEdge)));
      live.send(codec.encode({ t: "ping" }), { binary: true });
      expect(await within(pong, 10_000, "pong")).toEqual({ t: "pong" });
      live.close();
    } finally {
      await h.close();
    }
  });
});

interface EdgeChannel {
  open: boolean;
  onClose(l: (reason: string) => void): void;
  register(sid: string, h: (f: RegionToEdge) => void): void;
  close(): void;
}

describe("the edge finds a region stream socket that stopped answering", () => {
  let mod: { RegionChannel: unknown; PING_INTERVAL_MS: number; PING_MISSES: number };
  beforeAll(async () => {
    // By path at run time: the root project does not type-check edge/ (workers types).
    mod = (await import(/* @vite-ignore */ "../edge/stream-client.js" as string)) as typeof mod;
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  /** A RegionChannel over a ws client (it speaks the same WebSocket API as workerd's). */
  const channelOver = (ws: WebSocket): EdgeChannel => {
    // A region from before wire versions: no batches either way.
    const C = mod.RegionChannel as new (region: string, secret: string, ws: unknown, delayMs: number, wire: WireAgreement, takesBatch: boolean) => EdgeChannel;
    return new C("r1", "secret", ws, 0, LEGACY_AGREEMENT, false);
  };

  it("stays open across many pings while the router answers them", async () => {
    const h = await hubServer(3_600_000);
    try {
      vi.useFakeTimers({ toFake: ["setInterval", "clearInterval"] });
      const ch = channelOver(await connect(h.url));
      for (let i = 0; i < 2 * mod.PING_MISSES + 2; i++) {
        vi.advanceTimersByTime(mod.PING_INTERVAL_MS);
        expect((ch as unknown as { missed: number }).missed).toBe(1); // a ping went out
        // The pong resets the count; waiting for that is waiting for the router's answer.
        await waitUntil("pong", 10_000, () => ((ch as unknown as { missed: number }).missed === 0 ? true : undefined));
      }
      expect(ch.open).toBe(true);
      ch.close();
    } finally {
      await h.close();
    }
  });

  it("shuts a socket whose region says nothing, with a reason its streams can report", async () => {
    const wss = new WebSocketServer({ port: 0, host: "127.0.0.1" });
    await new Promise<void>((r) => wss.once("listening", () => r()));
    let pings = 0;
    wss.on("connection", (ws) => ws.on("message", () => pings++));
    try {
      vi.useFakeTimers({ toFake: ["setInterval", "clearInterval"] });
      const ch = channelOver(await connect(`ws://127.0.0.1:${(wss.address() as AddressInfo).port}`));
      let reason = "";
      ch.onClose((r) => (reason = r));
      for (let i = 0; i < mod.PING_MISSES; i++) {
        vi.advanceTimersByTime(mod.PING_INTERVAL_MS);
        await waitUntil("ping sent", 10_000, () => (pings === i + 1 ? true : undefined));
        expect(ch.open).toBe(true);
      }
      vi.advanceTimersByTime(mod.PING_INTERVAL_MS);
      expect(ch.open).toBe(false);
      expect(reason).toMatch(/region r1 stopped answering on the stream socket/);
    } finally {
      vi.useRealTimers();
      await new Promise<void>((r) => {
        for (const c of wss.clients) c.terminate();
        wss.close(() => r());
      });
    }
  });
});

// ------------------------------------------------------------------ the real mesh

describe("in a running mesh", () => {
  let mesh: MeshHandle;
  let dir: string;
  const REGION = "us-west";
  const X = [[0.1, 0.2, 0.3, 0.4]];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "hang-bounds-"));
    mesh = await startMesh({
      stateDir: dir,
      regions: [{ name: REGION, lat: 37.34, lon: -121.89, nodes: 1 }],
      nodeEnv: { HEARTBEAT_MS: "200", MESH_SIMULATED_TOKEN_MS: "20", MESH_EXECUTION_PROVIDER: "cpu" },
      // Router pings every second: a stream socket that lives several seconds sees several.
      routerEnv: { PING_INTERVAL_MS: "1000", REPORT_INTERVAL_MS: "500", POLICY_INTERVAL_MS: "500" },
      progress: (l) => process.env.MESH_TEST_VERBOSE && console.log(l),
    });
  });

  afterAll(async () => {
    mesh?.resumeRedis();
    await mesh?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const infer = () =>
    call(`${mesh.edge}/v2/models/demo-mlp/infer`, { key: mesh.apiKey, json: { inputs: [{ name: "x", datatype: "FP32", shape: [1, 4], data: X }] } });
  const regionsView = async () => (await call(`${mesh.edge}/v1/regions`, { key: mesh.adminToken })).body as { redis: string; regions: { name: string; health: string }[] };

  it("a frozen Redis: calls keep answering, /v1/regions answers and says Redis is unreachable, and the router publishes again once it is back", async () => {
    expect((await infer()).status).toBe(200);
    await waitUntil("redis ok", 30_000, async () => ((await regionsView()).redis === "ok" ? true : undefined), 250);

    mesh.pauseRedis();
    try {
      for (let i = 0; i < 5; i++) {
        const a = await within(infer(), 30_000, `call ${i} while Redis is frozen`);
        expect(a.status, JSON.stringify(a.body)).toBe(200);
      }
      // Each probe must itself come back: before the bound, this request never answered.
      const view = await waitUntil(
        "edge says Redis unreachable",
        60_000,
        async () => {
          const v = await within(regionsView(), 30_000, "GET /v1/regions while Redis is frozen");
          return v.redis === "unreachable" ? v : undefined;
        },
        250,
      );
      // Routing goes on from the last known report.
      expect(view.regions.find((r) => r.name === REGION)?.health).toBe("healthy");
    } finally {
      mesh.resumeRedis();
    }
    const thawedAt = Date.now();
    const redis = new Redis({ url: mesh.redis.url, token: mesh.redis.token, enableTelemetry: false });
    await waitUntil(
      "router publishing again",
      30_000,
      async () => ((await redis.get<RegionReport>(regionReportKey(REGION)))?.updatedAt ?? 0) > thawedAt || undefined,
      250,
    );
    await waitUntil("edge says Redis ok", 30_000, async () => ((await regionsView()).redis === "ok" ? true : undefined), 250);
    expect((await infer()).status).toBe(200);
  }, 240_000);

  const wsUrl = () => `${mesh.edge.replace(/^http/, "ws")}/v2/models/demo-chat/stream`;

  it("a stream socket lives across many router pings: workerd answers them", async () => {
    const ws = await StreamClient.open(wsUrl(), { key: mesh.apiKey });
    try {
      // 300 tokens at 20 ms each: several seconds, several router pings (PING_INTERVAL_MS=1000).
      const ended = await within(
        ws.generate("long", { text_input: "The river", parameters: { max_tokens: 300, temperature: 0.8, seed: 3 } }, { autoAck: true }),
        60_000,
        "long generation",
      );
      expect(ended.end.ev, JSON.stringify(ended.end.ev)).toMatchObject({ type: "done", finish_reason: "length" });
      expect(ended.tokens.length).toBe(300);
    } finally {
      ws.close();
    }
  }, 120_000);

  it("a router frozen mid-generation: the stream fails with a region_error saying why, instead of waiting forever", async () => {
    const router = mesh.processes.find((p) => p.name === `router-${REGION}` && p.child.exitCode === null)!;
    const ws = await StreamClient.open(wsUrl(), { key: mesh.apiKey });
    try {
      const ended = ws.generate("frozen", { text_input: "The river", parameters: { max_tokens: 4000, temperature: 0.8, seed: 4 } }, { autoAck: true });
      await ws.waitTokens("frozen", 5, 30_000);
      process.kill(router.child.pid!, "SIGSTOP");
      try {
        const end = (await within(ended, 45_000, "frozen router's stream")).end.ev;
        expect(end).toMatchObject({ type: "error", code: "region_error" });
        expect(end.error).toMatch(/stopped answering/);
      } finally {
        process.kill(router.child.pid!, "SIGCONT");
      }
    } finally {
      ws.close();
    }
  }, 120_000);
});
