// Fairness between accounts in the region's scheduler (regions/scheduler.ts, regions/fairness.ts)
// with fake nodes: the scheduler's own code decides, the nodes only count slots and hold calls
// until the test ends them. Issue 10, item 7: one account must not starve another.
// Issue 11: a call's slot is the node's until the node confirms the call ended (a caller answered
// at its deadline does not free it), and queues are bounded in bytes of inputs.

import { afterEach, describe, expect, it } from "vitest";
import type { MeshError } from "../protocol/errors.js";
import type { ModelRef, RegionInferRequest } from "../protocol/messages.js";
import type { WireTensor } from "../formats/tensor.js";
import { NodeCallError, type NodeLink } from "../regions/node-link.js";
import { ConfigError, routerConfigFromEnv } from "../regions/config.js";
import { CallFailed, inputBytes, Scheduler, SCHEDULER_DEFAULTS, type SchedulerConfig, type StreamWaiter } from "../regions/scheduler.js";

interface Held {
  account: string;
  finish(yielded?: boolean): void;
  /** As the NodeLink does at the caller's deadline: the caller hears, the node still computes. */
  timeOut?(computeMs: number): void;
}

/** A node with the given models warm: it counts slots and keeps calls until finished. */
class FakeNode {
  inflight = 0;
  streams = 0;
  readonly available = true;
  readonly open = true;
  readonly memoryBudgetMb = 10_000;
  readonly maxModels = 0;
  readonly warm = new Map<string, { memoryMb: number; lastUsed: number }>();
  readonly loading = new Map<string, number>();
  readonly modelInflight = new Map<string, number>();
  readonly calls: Held[] = [];

  constructor(
    readonly id: string,
    readonly slots: number,
    readonly streamSlots: number,
    models: string[],
    private readonly accountOf: (key: string) => string,
  ) {
    for (const m of models) this.warm.set(m, { memoryMb: 1, lastUsed: 0 });
  }

  infer(key: string, _inputs?: unknown, _outputs?: unknown, _timeoutMs?: number, call?: { onEnd?: () => void }): Promise<{ outputs: []; inferMs: number; computeMs: number }> {
    this.inflight++;
    return new Promise((resolve, reject) => {
      let abandoned = false;
      this.calls.push({
        account: this.accountOf(key),
        // The node's word that the call ended: the slot frees (for a timed-out call, only this).
        finish: () => {
          this.inflight--;
          call?.onEnd?.();
          if (!abandoned) resolve({ outputs: [], inferMs: 1, computeMs: 1 });
        },
        timeOut: (computeMs) => {
          abandoned = true;
          reject(new NodeCallError("deadline_exceeded", "the call ran past its deadline and was stopped", false, computeMs));
        },
      });
    });
  }

  load(): Promise<{ loadMs: number }> {
    return new Promise(() => undefined);
  }

  unload(): void {}
}

const DEADLINE_MS = 60_000;
let schedulers: Scheduler[] = [];

afterEach(() => {
  for (const s of schedulers) s.stop();
  schedulers = [];
});

function ref(account: string, model = "m"): ModelRef {
  return { key: `${account}-${model}@1`, account, name: model, version: 1, sha256: "0".repeat(64), size: 10, artifactUrl: "http://x/a", signature: { inputs: [], outputs: [] } } as unknown as ModelRef;
}

function setup(opts: { slots?: number; streamSlots?: number; nodes?: number; accounts: string[]; config?: Partial<SchedulerConfig> }) {
  const accountOf = (key: string) => key.split("-")[0]!;
  const s = new Scheduler({ ...SCHEDULER_DEFAULTS, ...opts.config });
  schedulers.push(s);
  const nodes: FakeNode[] = [];
  for (let i = 0; i < (opts.nodes ?? 1); i++) {
    const n = new FakeNode(`n${i}`, opts.slots ?? 4, opts.streamSlots ?? 4, opts.accounts.map((a) => ref(a).key), accountOf);
    nodes.push(n);
    s.nodes.set(n.id, n as unknown as NodeLink);
  }
  /** Running streams, in start order. */
  const streams: (Held & { node: FakeNode })[] = [];
  const failed: MeshError[] = [];
  const call = (account: string) => {
    const req: RegionInferRequest = { requestId: "r", model: ref(account), inputs: [], deadline: Date.now() + DEADLINE_MS };
    const p = s.submit(req, performance.now());
    p.catch((e: MeshError) => failed.push(e));
    return p;
  };
  const stream = (account: string) => {
    const r = ref(account);
    const waiter: StreamWaiter = {
      progress: () => undefined,
      start: (node) => {
        const n = node as unknown as FakeNode;
        n.streams++;
        const held = {
          account,
          node: n,
          finish: (yielded = false) => {
            n.streams--;
            streams.splice(streams.indexOf(held), 1);
            s.streamEnded(r, n.id, yielded ? "failed" : "served", 0, 1, yielded);
            s.pumpAll(); // what the node link's onChange does
          },
        };
        streams.push(held);
      },
      fail: (e) => failed.push(e),
    };
    return s.submitStream(r, Date.now() + DEADLINE_MS, performance.now(), waiter);
  };
  const running = (account: string) => nodes.reduce((k, n) => k + n.calls.filter((c) => c.account === account).length, 0);
  const streaming = (account: string) => streams.filter((h) => h.account === account).length;
  /** Ends the oldest running call of `account` and lets the scheduler react. */
  const finishCall = async (account: string) => {
    for (const n of nodes) {
      const i = n.calls.findIndex((c) => c.account === account);
      if (i >= 0) {
        const [c] = n.calls.splice(i, 1);
        c!.finish();
        await new Promise((r) => setImmediate(r));
        return;
      }
    }
    throw new Error(`no call of ${account} running`);
  };
  /** Ends the oldest running stream of `account` (`yielded`: one it was asked to give back). */
  const finishStream = (account: string, yielded = false) => {
    const h = streams.find((x) => x.account === account);
    if (!h) throw new Error(`no stream of ${account} running`);
    h.finish(yielded);
  };
  return { s, nodes, call, stream, running, streaming, finishCall, finishStream, failed, streams };
}

describe("fair shares between accounts", () => {
  it("a hog with 100 queued calls does not hold up another account's one call", async () => {
    const t = setup({ slots: 4, accounts: ["hog", "b"] });
    for (let i = 0; i < 104; i++) void t.call("hog");
    expect(t.running("hog")).toBe(4);
    expect(t.s.queued).toBe(100);
    const b = t.call("b");
    // Every slot is the hog's: b waits for the first one that frees, not for the hog's queue.
    expect(t.running("b")).toBe(0);
    await t.finishCall("hog");
    expect(t.running("b")).toBe(1);
    expect(t.running("hog")).toBe(3);
    await t.finishCall("b");
    await expect(b).resolves.toMatchObject({ node: "n0" });
    // b gone, the hog alone again: it takes the whole node back.
    expect(t.running("hog")).toBe(4);
  });

  it("a hog with 100 queued streams does not hold up another account's stream", () => {
    const t = setup({ streamSlots: 4, accounts: ["hog", "b"] });
    for (let i = 0; i < 104; i++) t.stream("hog");
    expect(t.streaming("hog")).toBe(4);
    t.stream("b");
    expect(t.streaming("b")).toBe(0);
    t.finishStream("hog");
    expect(t.streaming("b")).toBe(1);
    expect(t.streaming("hog")).toBe(3);
  });

  it("an account alone gets every slot of every node", async () => {
    const t = setup({ slots: 3, streamSlots: 5, nodes: 2, accounts: ["solo"] });
    for (let i = 0; i < 10; i++) void t.call("solo");
    for (let i = 0; i < 12; i++) t.stream("solo");
    expect(t.running("solo")).toBe(6);
    expect(t.streaming("solo")).toBe(10);
    expect(t.failed).toEqual([]);
  });

  it("while both wait, each ends with its share of the node, and the one that leaves gives its slots back", () => {
    const t = setup({ streamSlots: 8, accounts: ["a", "b"] });
    for (let i = 0; i < 20; i++) t.stream("a");
    expect(t.streaming("a")).toBe(8);
    for (let i = 0; i < 20; i++) t.stream("b");
    // Streams end one by one; each freed slot goes to the account holding fewer.
    for (let i = 0; i < 12; i++) t.finishStream(i % 2 === 0 ? "a" : "b");
    expect([t.streaming("a"), t.streaming("b")]).toEqual([4, 4]);
    // b's queue runs dry (its waiting streams are done waiting): a may fill the node again.
    while (t.s.fair.waitingOf("stream", "b") > 0) t.finishStream("b");
    while (t.streaming("b") > 0) t.finishStream("b");
    expect(t.streaming("a")).toBe(8);
  });

  it("a third account joining gets a third", () => {
    const t = setup({ streamSlots: 9, accounts: ["a", "b", "c"] });
    for (let i = 0; i < 20; i++) t.stream("a");
    for (let i = 0; i < 20; i++) t.stream("b");
    for (let i = 0; i < 20; i++) t.stream("c");
    for (let i = 0; i < 30 && !(t.streaming("a") === 3 && t.streaming("b") === 3 && t.streaming("c") === 3); i++) {
      const most = ["a", "b", "c"].sort((x, y) => t.streaming(y) - t.streaming(x))[0]!;
      t.finishStream(most);
    }
    expect(["a", "b", "c"].map(t.streaming)).toEqual([3, 3, 3]);
  });

  it("weights divide the slots in proportion", () => {
    const t = setup({ streamSlots: 8, accounts: ["big", "small"], config: { accountWeights: { big: 3 } } });
    for (let i = 0; i < 20; i++) t.stream("small");
    for (let i = 0; i < 20; i++) t.stream("big");
    for (let i = 0; i < 40 && t.streaming("big") < 6; i++) t.finishStream(t.streaming("small") > 2 ? "small" : "big");
    expect([t.streaming("big"), t.streaming("small")]).toEqual([6, 2]);
  });

  it("with fairness off, first come first served as before", () => {
    const t = setup({ streamSlots: 4, accounts: ["hog", "b"], config: { fairShare: false } });
    for (let i = 0; i < 10; i++) t.stream("hog");
    t.stream("b");
    t.finishStream("hog");
    expect(t.streaming("b")).toBe(0);
  });

  it("an account that can use only one node gets its share there; no slot idles", async () => {
    const t = setup({ slots: 4, nodes: 2, accounts: ["a"] });
    // b's model is warm on n0 only.
    t.nodes[0]!.warm.set(ref("b").key, { memoryMb: 1, lastUsed: 0 });
    for (let i = 0; i < 20; i++) void t.call("a");
    expect(t.running("a")).toBe(8);
    for (let i = 0; i < 10; i++) void t.call("b");
    for (let i = 0; i < 8; i++) await t.finishCall("a");
    const on = (n: number, account: string) => t.nodes[n]!.calls.filter((c) => c.account === account).length;
    // Every slot is busy, b holds n0's while a holds the node b cannot use.
    expect([on(0, "a"), on(0, "b"), on(1, "a"), on(1, "b")]).toEqual([0, 4, 4, 0]);
  });
});

describe("admission", () => {
  it("a hog that filled MAX_INFLIGHT cannot shut another account out; past it, each is held to its share", async () => {
    const t = setup({ slots: 1, accounts: ["hog", "b"], config: { maxInflight: 10, maxQueuePerModel: 100 } });
    const tick = () => new Promise((r) => setImmediate(r));
    for (let i = 0; i < 10; i++) void t.call("hog");
    await tick();
    expect(t.failed).toEqual([]);
    void t.call("hog");
    await tick();
    expect(t.failed.map((e) => e.code)).toEqual(["no_capacity"]);
    for (let i = 0; i < 5; i++) void t.call("b");
    await tick();
    expect(t.failed.length).toBe(1);
    expect(t.s.inflight).toBe(15);
    // b at its share (5 of 10) of a full region: refused too.
    void t.call("b");
    await tick();
    expect(t.failed.map((e) => e.code)).toEqual(["no_capacity", "no_capacity"]);
    // Below MAX_INFLIGHT nobody is refused for its share: the queue is not held back.
    const t2 = setup({ slots: 1, accounts: ["a", "b"], config: { maxInflight: 10, maxQueuePerModel: 100 } });
    void t2.call("b");
    for (let i = 0; i < 9; i++) void t2.call("a");
    await tick();
    expect(t2.failed).toEqual([]);
  });
});

describe("slots follow the node's word", () => {
  const tick = () => new Promise((r) => setImmediate(r));

  it("a call answered at its deadline keeps its region slot while the node still runs it: no new call is let in on it", async () => {
    const t = setup({ slots: 1, accounts: ["a"], config: { maxInflight: 1, fairShare: false } });
    void t.call("a");
    await tick();
    expect(t.running("a")).toBe(1);
    const held = t.nodes[0]!.calls[0]!;
    held.timeOut!(1_000);
    await tick();
    // The caller heard its 504, with what the node said it spent.
    expect(t.failed).toHaveLength(1);
    expect(t.failed[0]).toBeInstanceOf(CallFailed);
    expect(t.failed[0]).toMatchObject({ code: "deadline_exceeded", computeMs: 1_000 });
    // The node still computes: the region is still full (before, `running` dropped at the deadline and this got in).
    expect(t.s.running).toBe(1);
    void t.call("a");
    await tick();
    expect(t.failed.map((e) => e.code)).toEqual(["deadline_exceeded", "no_capacity"]);
    // The node confirms the stop: now the slot is free and the next call runs.
    t.nodes[0]!.calls.splice(0, 1);
    held.finish();
    await tick();
    expect(t.s.running).toBe(0);
    void t.call("a");
    await tick();
    expect(t.running("a")).toBe(1);
    expect(t.failed).toHaveLength(2);
  });

  it("the fair-share ledger counts a timed-out call against its account until the node confirms", async () => {
    const t = setup({ slots: 2, accounts: ["a", "b"] });
    void t.call("a");
    void t.call("b");
    await tick();
    // a's call times out; the node still runs it, so a still holds one of the two slots.
    const aHeld = t.nodes[0]!.calls.find((c) => c.account === "a")!;
    aHeld.timeOut!(50);
    await tick();
    void t.call("a"); // waits first...
    await tick();
    void t.call("b"); // ...but b holds no more than a, and a's stopped call still runs
    await tick();
    await t.finishCall("b");
    // The freed slot goes to b: a holds one (its stopped call). Before, a's count dropped at the
    // deadline, so the tie went to a's older call and a held both slots.
    expect(t.running("b")).toBe(1);
    expect(t.running("a")).toBe(1);
  });
});

describe("queues bounded in bytes", () => {
  const tick = () => new Promise((r) => setImmediate(r));
  const tensor = (bytes: number): WireTensor[] => [{ name: "x", datatype: "UINT8", shape: [bytes], data: new Uint8Array(bytes) }];

  it("the region's queue and a model's queue hold at most their bytes; a call alone always gets in; bytes come back when calls leave", async () => {
    // No node holds anything: every call waits (for a load that never finishes).
    const s = new Scheduler({ ...SCHEDULER_DEFAULTS, maxQueuedBytes: 1_000 });
    schedulers.push(s);
    const failed: MeshError[] = [];
    const submit = (model: string, bytes: number, deadlineMs = DEADLINE_MS) => {
      const p = s.submit({ requestId: "r", model: ref("a", model), inputs: tensor(bytes), deadline: Date.now() + deadlineMs }, performance.now());
      p.catch((e: MeshError) => failed.push(e));
    };
    expect(inputBytes(tensor(300))).toBe(300);
    expect(inputBytes([{ name: "s", datatype: "BYTES", shape: [2], data: ["hé", "x"] }])).toBe(4);
    // A model's queue: a quarter (250 bytes), but a call alone in it gets in whatever its size.
    submit("m1", 300);
    await tick();
    expect(failed).toEqual([]);
    submit("m1", 10);
    await tick();
    expect(failed.map((e) => [e.code, e.headers["retry-after"]])).toEqual([["no_capacity", "1"]]);
    expect(failed[0]!.message).toMatch(/bytes queued for this model/);
    // Other models fill the region to 900 bytes; the next is past 1,000.
    submit("m2", 300);
    submit("m3", 300);
    await tick();
    expect(failed).toHaveLength(1);
    expect(s.queuedBytes).toBe(900);
    submit("m4", 200);
    await tick();
    expect(failed).toHaveLength(2);
    expect(failed[1]!.message).toMatch(/region's queue is full/);
    // A call that leaves the queue (its deadline) gives its bytes back.
    submit("m5", 1, 30);
    await tick();
    expect(s.queuedBytes).toBe(901);
    await new Promise((r) => setTimeout(r, 60));
    expect(s.queuedBytes).toBe(900);
    expect(failed.at(-1)!.code).toBe("deadline_exceeded");
  });

  it("MAX_QUEUED_BYTES: 512 MiB by default, at least 1 KiB", () => {
    const base = { MESH_REGION: "x", MESH_SECRET: "s".repeat(16), NODE_TOKEN: "t".repeat(16) };
    expect(routerConfigFromEnv(base).maxQueuedBytes).toBe(512 * 1024 * 1024);
    expect(routerConfigFromEnv({ ...base, MAX_QUEUED_BYTES: "4096" }).maxQueuedBytes).toBe(4_096);
    for (const bad of ["100", "1.5", "lots"]) expect(() => routerConfigFromEnv({ ...base, MAX_QUEUED_BYTES: bad })).toThrow(ConfigError);
  });
});

describe("stalled streams give their slot back", () => {
  it("only when another account waits, only while at the share, once per slot waited for", () => {
    const t = setup({ streamSlots: 4, accounts: ["hog", "b"] });
    for (let i = 0; i < 6; i++) t.stream("hog");
    expect(t.s.shouldYieldStream("hog", "n0")).toBe(false); // nobody else waits
    t.stream("b");
    expect(t.s.shouldYieldStream("hog", "n0")).toBe(true);
    // One slot is on its way back for b's one stream: no second stream has to go.
    expect(t.s.shouldYieldStream("hog", "n0")).toBe(false);
    expect(t.s.shouldYieldStream("b", "n0")).toBe(false);
    // The yielded stream ends; b takes its slot.
    t.finishStream("hog", true);
    expect(t.streaming("b")).toBe(1);
    expect(t.s.shouldYieldStream("hog", "n0")).toBe(false); // b waits for nothing now
  });

  it("an account under its share keeps its stalled stream", () => {
    const t = setup({ streamSlots: 4, accounts: ["a", "b"] });
    t.stream("a");
    for (let i = 0; i < 10; i++) t.stream("b");
    expect(t.streaming("b")).toBe(3);
    expect(t.s.shouldYieldStream("a", "n0")).toBe(false);
  });
});

describe("a model loading for another account", () => {
  it("keeps the slots it needs: the hog does not take them back while it loads, and no more of its streams are ended", () => {
    const t = setup({ streamSlots: 4, accounts: ["hog"] });
    const n = t.nodes[0]!;
    for (let i = 0; i < 10; i++) t.stream("hog");
    expect(t.streaming("hog")).toBe(4);
    // b's model is loading on the node (as the scheduler's load plan would have it).
    n.loading.set(ref("b").key, 1);
    t.stream("b");
    expect(t.s.shouldYieldStream("hog", "n0")).toBe(true);
    t.finishStream("hog", true); // the yielded one ends
    expect(t.streaming("hog")).toBe(3); // the free slot waits for b's model
    expect(t.s.shouldYieldStream("hog", "n0")).toBe(false); // a slot is free already
    n.loading.delete(ref("b").key);
    n.warm.set(ref("b").key, { memoryMb: 1, lastUsed: 0 });
    t.s.pumpAll();
    expect(t.streaming("b")).toBe(1);
  });
});

describe("the router's fairness settings", () => {
  const base = { MESH_REGION: "x", MESH_SECRET: "s".repeat(16), NODE_TOKEN: "t".repeat(16) };

  it("default to fair shares, equal weights and a 5 s stall bound under contention", () => {
    expect(routerConfigFromEnv(base)).toMatchObject({ fairShare: true, accountWeights: {}, streamStallWhenContendedMs: 5_000 });
    expect(routerConfigFromEnv({ ...base, FAIR_SHARE: "0", ACCOUNT_WEIGHTS: '{"acc_1":2.5}', STREAM_STALL_WHEN_CONTENDED_MS: "1000" })).toMatchObject({
      fairShare: false,
      accountWeights: { acc_1: 2.5 },
      streamStallWhenContendedMs: 1_000,
    });
  });

  it("refuse what they cannot mean", () => {
    for (const bad of [{ FAIR_SHARE: "yes" }, { ACCOUNT_WEIGHTS: "[1]" }, { ACCOUNT_WEIGHTS: '{"a":0}' }, { ACCOUNT_WEIGHTS: "{" }, { STREAM_STALL_WHEN_CONTENDED_MS: "5" }]) {
      expect(() => routerConfigFromEnv({ ...base, ...bad }), JSON.stringify(bad)).toThrow(ConfigError);
    }
  });
});
