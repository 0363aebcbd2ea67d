// The region router and node agents as real processes: a router (regions/main.ts, no Redis),
// node agents running onnxruntime-node, real WebSockets between them, real signals. The test
// plays the edge: signed msgpack calls to the router, artifacts behind signed URLs.
//
// No assertion here is about speed; every wait is bounded only so that a bug fails the test
// instead of hanging it.

import WebSocket from "ws";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createCodec } from "../protocol/codec.js";
import type { ModelRef, RegionInferResponse } from "../protocol/messages.js";
import type { WireTensor } from "../formats/tensor.js";
import { DEMO_MLP_V1, DEMO_MLP_V2, referenceMlp, type MlpWeights } from "../scripts/make-demo-models.js";
import {
  fp32,
  harnessPids,
  maxDiff,
  RegionHarness,
  rowsOf,
  waitUntil,
  within,
  type InferAnswer,
} from "./helpers/region-harness.js";
import { nodeHello } from "./helpers/fakes.js";

const TOL = 1e-5;

let h: RegionHarness;

beforeEach(async () => {
  h = await RegionHarness.create();
});

afterEach(async () => {
  if (!h) return;
  const id = h.id;
  await h.close();
  // No process of this harness may outlive the test.
  await waitUntil("no child process left", 10_000, async () => ((await harnessPids(id)).length === 0 ? true : undefined), 100);
});

// ------------------------------------------------------------------ helpers

function mlpRow(i: number): number[] {
  return [((i * 3) % 7) - 3, (i % 5) / 2, -((i * 2) % 9) / 4, (i % 4) - 1.5];
}

/** Asserts a successful demo-mlp answer matching the reference for `rows`. */
function expectMlp(a: InferAnswer, weights: MlpWeights, rows: number[][]): Extract<RegionInferResponse, { ok: true }> {
  expect(a.status, JSON.stringify(a.response)).toBe(200);
  const r = a.response;
  if (!r.ok) throw new Error(`call failed: ${r.code} ${r.message}`);
  const ref = referenceMlp(weights, rows);
  const logits = r.outputs.find((o) => o.name === "logits");
  const probs = r.outputs.find((o) => o.name === "probs");
  expect(logits?.shape).toEqual([rows.length, 3]);
  expect(probs?.shape).toEqual([rows.length, 3]);
  expect(maxDiff(rowsOf(logits!), ref.logits)).toBeLessThan(TOL);
  expect(maxDiff(rowsOf(probs!), ref.probs)).toBeLessThan(TOL);
  return r;
}

/** Does `a` carry the right demo-mlp answer for `rows` (no assertion)? */
function mlpCorrect(a: InferAnswer, weights: MlpWeights, rows: number[][]): boolean {
  if (a.status !== 200 || !a.response.ok) return false;
  const ref = referenceMlp(weights, rows);
  const logits = a.response.outputs.find((o) => o.name === "logits");
  const probs = a.response.outputs.find((o) => o.name === "probs");
  return !!logits && !!probs && maxDiff(rowsOf(logits), ref.logits) < TOL && maxDiff(rowsOf(probs), ref.probs) < TOL;
}

/**
 * demo-matmul inputs whose product is cheap to check: a[n,n] holds small integers (seeded, so
 * each caller's answer is its own) and b[n,n+extra] is diagonal in its first n columns and zero
 * after, so y[i][j] = a[i][j] * d[j] (0 past column n) exactly in FP32, while onnxruntime still
 * does the whole product. `extra` gives a call a shape of its own (no batching with others).
 */
function matmulInputs(n: number, seed: number, extra = 0): { inputs: WireTensor[]; check: (y: WireTensor) => boolean } {
  const m = n + extra;
  const a = new Float32Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) a[i * n + j] = ((i * 7 + j * 3 + seed) % 11) - 5;
  const b = new Float32Array(n * m);
  const d = (j: number) => (j % 4) + 1;
  for (let j = 0; j < n; j++) b[j * m + j] = d(j);
  const check = (y: WireTensor) => {
    if (y.shape[0] !== n || y.shape[1] !== m) return false;
    const data = y.data as Float32Array;
    for (let i = 0; i < n; i++) for (let j = 0; j < m; j++) if (data[i * m + j] !== (j < n ? a[i * n + j]! * d(j) : 0)) return false;
    return true;
  };
  return {
    inputs: [
      { name: "a", datatype: "FP32", shape: [n, n], data: a },
      { name: "b", datatype: "FP32", shape: [n, m], data: b },
    ],
    check,
  };
}

function matmulCorrect(a: InferAnswer, check: (y: WireTensor) => boolean): boolean {
  if (a.status !== 200 || !a.response.ok) return false;
  const y = a.response.outputs.find((o) => o.name === "y");
  return !!y && check(y);
}

/** Sends bursts of small concurrent calls until `nodes` all hold `ref` warm. */
async function warmOn(ref: ModelRef, nodes: string[], call: () => Promise<InferAnswer>, burst = 12): Promise<void> {
  await waitUntil(`${ref.key} warm on ${nodes.join(", ")}`, 30_000, async () => {
    const answers = await Promise.all(Array.from({ length: burst }, call));
    for (const a of answers) expect(a.status, JSON.stringify(a.response)).toBe(200);
    const st = await h.status();
    return nodes.every((id) => st.nodes.find((n) => n.id === id)?.warm.includes(ref.key)) ? true : undefined;
  }, 0);
}

/** Opens a raw node socket with `token`; resolves once open, with its close event. */
async function rawNodeSocket(token: string): Promise<{ ws: WebSocket; closed: Promise<{ code: number; reason: string }> }> {
  const ws = new WebSocket(h.nodeSocketUrl, { headers: { authorization: `Bearer ${token}` }, perMessageDeflate: false });
  ws.on("error", () => undefined); // the close event is what the tests look at
  const closed = new Promise<{ code: number; reason: string }>((r) => ws.once("close", (code, reason) => r({ code, reason: reason.toString() })));
  await within(
    new Promise<void>((resolve, reject) => {
      ws.once("open", () => resolve());
      ws.once("unexpected-response", (_req, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
    }),
    10_000,
    "raw node socket open",
  );
  return { ws, closed };
}

/** Runs `tasks` with at most `limit` at once; calls onDone after each. */
async function pool<T>(tasks: (() => Promise<T>)[], limit: number, onDone: (done: number) => void = () => undefined): Promise<T[]> {
  const out: T[] = new Array(tasks.length);
  let next = 0;
  let done = 0;
  const worker = async () => {
    while (next < tasks.length) {
      const i = next++;
      out[i] = await tasks[i]!();
      onDone(++done);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, tasks.length) }, worker));
  return out;
}

/** The node's own record of loads and unloads of each model, in order. */
function loadSequence(node: string): { msg: string; key: string }[] {
  return h
    .child(node)
    .lines.map((l) => l.json)
    .filter((j): j is Record<string, unknown> => !!j && (j.msg === "model loaded" || j.msg === "model unloaded"))
    .map((j) => ({ msg: j.msg as string, key: j.key as string }));
}

// ------------------------------------------------------------------ tests

describe("region router with real node agents", () => {
  it("sends the second call for a model to the node that loaded it, warm (loadMs 0); the first paid the load", async () => {
    await h.startRouter();
    await Promise.all([h.startNode("node-a"), h.startNode("node-b")]);
    const ref = await h.model("demo-mlp", 1);
    const rows = [mlpRow(1), mlpRow(2)];

    const first = expectMlp(await h.infer(ref, [fp32("x", rows)]), DEMO_MLP_V1, rows);
    expect(first.timing.loadMs).toBeGreaterThan(0);
    expect(await h.waitForCount(first.node, "model loaded", 1, { key: ref.key })).toBe(1);

    const second = expectMlp(await h.infer(ref, [fp32("x", rows)]), DEMO_MLP_V1, rows);
    expect(second.node).toBe(first.node);
    expect(second.timing.loadMs).toBe(0);

    // One load in all: nothing else was loaded anywhere.
    expect(h.count("node-a", "model loaded") + h.count("node-b", "model loaded")).toBe(1);
    expect((await h.status()).loads).toBe(1);
  }, 60_000);

  it("turns 20 concurrent calls to a cold model into exactly one load on one node, all answered correctly", async () => {
    await h.startRouter();
    // Enough slots that the 20 calls fit on the first warm node: a second replica would be the
    // scheduler's choice for a queue longer than the slots, not a duplicate load.
    await Promise.all([h.startNode("node-a", { NODE_SLOTS: "32" }), h.startNode("node-b", { NODE_SLOTS: "32" })]);
    const ref = await h.model("demo-mlp", 2);

    const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => h.infer(ref, [fp32("x", [mlpRow(i)])])));
    const nodes = new Set<string>();
    answers.forEach((a, i) => nodes.add(expectMlp(a, DEMO_MLP_V2, [mlpRow(i)]).node));

    expect(nodes.size).toBe(1);
    expect(await h.waitForCount([...nodes][0]!, "model loaded", 1, { key: ref.key })).toBe(1);
    const loads = ["node-a", "node-b"].map((n) => h.count(n, "model loaded", { key: ref.key }));
    expect(loads.reduce((s, n) => s + n, 0)).toBe(1);
    expect(h.artifactHits.served).toBe(1);
    expect((await h.status()).loads).toBe(1);
  }, 60_000);

  it("serves two models that do not fit together on one node by evicting and reloading, never loading one twice at once", async () => {
    await h.startRouter();
    // A node that holds one model at a time. (A 1 MB budget no longer does it: the node
    // measures each session's real memory, a few MiB even for a demo model, and refuses a model
    // over its budget.)
    await h.startNode("small", { MAX_MODELS: "1" });
    const A = await h.model("demo-mlp", 1);
    const B = await h.model("demo-mlp", 2);
    const weights = (ref: ModelRef) => (ref === A ? DEMO_MLP_V1 : DEMO_MLP_V2);

    // Alternating, one at a time.
    for (let i = 0; i < 8; i++) {
      const ref = i % 2 === 0 ? A : B;
      const rows = [mlpRow(i)];
      expectMlp(await h.infer(ref, [fp32("x", rows)]), weights(ref), rows);
    }
    // Alternating, all at once.
    const mixed = Array.from({ length: 12 }, (_, i) => ({ ref: i % 2 === 0 ? A : B, rows: [mlpRow(100 + i)] }));
    const answers = await Promise.all(mixed.map((c) => h.infer(c.ref, [fp32("x", c.rows)])));
    answers.forEach((a, i) => expectMlp(a, weights(mixed[i]!.ref), mixed[i]!.rows));
    // And alternating again after the concurrent round.
    for (let i = 0; i < 4; i++) {
      const ref = i % 2 === 0 ? A : B;
      expectMlp(await h.infer(ref, [fp32("x", [mlpRow(i)])]), weights(ref), [mlpRow(i)]);
    }

    const st = await h.status();
    expect(st.evictions).toBeGreaterThan(0);
    expect(await h.waitForCount("router", "evicted model to make room", st.evictions)).toBe(st.evictions);
    await h.waitForCount("small", "model loaded", st.loads);
    // Each load the router asked for happened once on the node, and a model was only loaded
    // again after it had been unloaded.
    const seq = loadSequence("small");
    expect(seq.filter((e) => e.msg === "model loaded").length).toBe(st.loads);
    expect(st.loads).toBeGreaterThan(2);
    const held = new Set<string>();
    for (const e of seq) {
      if (e.msg === "model loaded") {
        expect(held.has(e.key), `${e.key} loaded twice without an unload in between: ${JSON.stringify(seq)}`).toBe(false);
        held.add(e.key);
      } else {
        held.delete(e.key);
      }
    }
  }, 60_000);

  it("answers every call of a 200-call burst while a node is killed with -9: correct results, 503/504, or 502 node_error for calls the dead node held (never re-run), none hangs, most succeed", async () => {
    await h.startRouter();
    await Promise.all([h.startNode("node-a", { NODE_SLOTS: "2" }), h.startNode("node-b", { NODE_SLOTS: "2" })]);
    const ref = await h.model("demo-mlp", 1);
    await warmOn(ref, ["node-a", "node-b"], () => h.infer(ref, [fp32("x", [mlpRow(0)])]));

    const DEADLINE_MS = 10_000;
    const outcomes: ("ok" | "wrong" | "no_capacity" | "node_error" | "deadline" | "other" | "hung")[] = [];
    const details: string[] = [];
    let killed = false;
    const tasks = Array.from({ length: 200 }, (_, i) => async () => {
      const rows = [mlpRow(i), mlpRow(i + 1)];
      try {
        const a = await within(h.infer(ref, [fp32("x", rows)], { deadlineMs: DEADLINE_MS }), DEADLINE_MS + 5_000, `call ${i}`);
        if (a.status === 200) outcomes[i] = mlpCorrect(a, DEMO_MLP_V1, rows) ? "ok" : "wrong";
        else if (a.status === 503 && !a.response.ok && a.response.code === "no_capacity") outcomes[i] = "no_capacity";
        else if (a.status === 504) outcomes[i] = "deadline";
        // A call node-a had started when it died: at most once, so not re-run on node-b.
        else if (a.status === 502 && !a.response.ok && a.response.code === "node_error") outcomes[i] = "node_error";
        else outcomes[i] = "other";
        if (outcomes[i] !== "ok") details.push(`${i}: ${a.status} ${JSON.stringify(a.response).slice(0, 200)}`);
      } catch (err) {
        outcomes[i] = "hung";
        details.push(`${i}: ${String(err)}`);
      }
    });
    await pool(tasks, 20, (done) => {
      if (done === 40 && !killed) {
        killed = true;
        h.kill("node-a", "SIGKILL");
      }
    });

    expect(killed).toBe(true);
    expect((await h.waitExit("node-a")).signal).toBe("SIGKILL");
    const tally = (k: string) => outcomes.filter((o) => o === k).length;
    expect(outcomes.length).toBe(200);
    expect(tally("hung"), details.join("\n")).toBe(0);
    expect(tally("wrong"), details.join("\n")).toBe(0);
    expect(tally("other"), details.join("\n")).toBe(0);
    // Only calls in flight on node-a at the kill (at most the pool's 20) fail that way.
    expect(tally("node_error"), details.join("\n")).toBeLessThanOrEqual(20);
    expect(tally("ok"), details.join("\n")).toBeGreaterThanOrEqual(150);
    // The survivor carries on alone.
    const st = await h.status();
    expect(st.nodes.map((n) => n.id)).toEqual(["node-b"]);
    expectMlp(await h.infer(ref, [fp32("x", [mlpRow(7)])]), DEMO_MLP_V1, [mlpRow(7)]);
  }, 90_000);

  it("closes a node socket that sends bad msgpack (1002), a frame of the wrong shape (1002) or an oversize frame (1009), and keeps serving", async () => {
    await h.startRouter({ MAX_FRAME_BYTES: "65536" });
    await h.startNode("real");
    const ref = await h.model("demo-mlp", 1);
    const rows = [mlpRow(3)];
    expectMlp(await h.infer(ref, [fp32("x", rows)]), DEMO_MLP_V1, rows);
    const codec = createCodec();

    const hello = nodeHello("fake-node");
    const cases: { what: string; frames: Uint8Array[]; code: number }[] = [
      { what: "truncated msgpack", frames: [Uint8Array.from([0x92, 0x01])], code: 1002 },
      { what: "unknown frame type", frames: [codec.encode({ t: "takeover", nodeId: "x" })], code: 1002 },
      { what: "hello without its fields", frames: [codec.encode({ t: "hello", nodeId: "fake-node" })], code: 1002 },
      { what: "result without outputs after a hello", frames: [codec.encode(hello), codec.encode({ t: "result", id: "1" })], code: 1002 },
      { what: "oversize frame", frames: [new Uint8Array(100_000).fill(0x90)], code: 1009 },
    ];
    for (const c of cases) {
      const { ws, closed } = await rawNodeSocket(h.nodeToken);
      for (const f of c.frames) ws.send(f, { binary: true });
      const { code } = await within(closed, 10_000, `close after ${c.what}`);
      expect(code, c.what).toBe(c.code);
      // The router still serves through its real node.
      expectMlp(await h.infer(ref, [fp32("x", rows)]), DEMO_MLP_V1, rows);
    }
    expect(await h.waitForCount("router", "closing node socket after a bad frame", 4)).toBe(4);
    const st = await h.status();
    expect(st.nodes.map((n) => n.id)).toEqual(["real"]);
    expect(h.child("real").exited).toBeNull();
  }, 60_000);

  it("drains a busy node on SIGTERM: its in-flight calls complete correctly, the other node takes the rest, it exits 0 after closing with 1001", async () => {
    await h.startRouter();
    // drain-a has more slots than onnxruntime runs at once (the batcher runs 2), so calls wait
    // on it while it computes; batching is off (a matmul's inputs share no batch dimension).
    const env = { NODE_SLOTS: "4", BATCH_MAX: "1" };
    await Promise.all([h.startNode("drain-a", env), h.startNode("drain-b", env)]);
    const ref = await h.model("demo-matmul", 1);
    await warmOn(ref, ["drain-a", "drain-b"], () => {
      const { inputs, check } = matmulInputs(8, 0);
      return h.infer(ref, inputs).then((a) => (matmulCorrect(a, check) ? a : { ...a, status: -1 }));
    });

    const N = 400;
    let answered = 0;
    const call = (seed: number) => {
      const { inputs, check } = matmulInputs(N, seed);
      return within(h.infer(ref, inputs, { deadlineMs: 30_000 }), 35_000, `call ${seed}`).then(
        (a) => ({ seed, node: a.response.ok ? a.response.node : `${a.status} ${JSON.stringify(a.response).slice(0, 200)}`, ok: matmulCorrect(a, check) }),
        (err: unknown) => ({ seed, node: `no answer: ${String(err)}`, ok: false }),
      ).finally(() => answered++);
    };

    // Wave 1 (24 calls for 8 slots) keeps both nodes busy with calls queued behind; SIGTERM
    // once a quarter is answered, while drain-a's slots are still full; wave 2 comes after.
    const wave1 = Array.from({ length: 24 }, (_, i) => call(i));
    await waitUntil("6 answers of wave 1", 30_000, () => (answered >= 6 ? true : undefined), 5);
    h.kill("drain-a", "SIGTERM");
    const wave2 = Array.from({ length: 12 }, (_, i) => call(100 + i));
    const [first, second] = [await Promise.all(wave1), await Promise.all(wave2)];

    // Every call was answered, correctly: what drain-a held finished (there, or re-run on
    // drain-b by the router; a caller cannot tell), nothing was lost.
    expect([...first, ...second].filter((r) => !r.ok)).toEqual([]);
    expect(first.some((r) => r.node === "drain-a")).toBe(true);
    // Once drain-a said it was draining, calls went to drain-b.
    expect(second.filter((r) => r.node === "drain-b").length).toBeGreaterThan(0);

    const exit = await h.waitExit("drain-a", 20_000);
    expect(exit, h.tail("drain-a")).toEqual({ code: 0, signal: null });
    const gone = await h.waitForLog("router", "node disconnected", { node: "drain-a" });
    expect(gone.code).toBe(1001);
    // The drained node answered every call the router had sent it before it closed: none had
    // to be retried elsewhere (a kill -9 leaves pending > 0, as the burst test shows).
    expect(gone.pending).toBe(0);
    expect(h.count("drain-a", "SIGTERM: draining")).toBe(1);
    const st = await h.status();
    expect(st.nodes.map((n) => n.id)).toEqual(["drain-b"]);
    const last = await call(999);
    expect(last).toEqual({ seed: 999, node: "drain-b", ok: true });
  }, 90_000);

  it("survives a router restart: the node reconnects by itself and calls work again", async () => {
    const first = await h.startRouter();
    const port = h.routerPort;
    // A low back-off ceiling keeps the test short; the back-off itself is the agent's.
    await h.startNode("node-a", { RECONNECT_MAX_MS: "2000" });
    const ref = await h.model("demo-mlp", 1);
    const rows = [mlpRow(5)];
    expectMlp(await h.infer(ref, [fp32("x", rows)]), DEMO_MLP_V1, rows);

    h.kill("router", "SIGTERM");
    expect(await within(first.exit, 15_000, "router exit")).toEqual({ code: 0, signal: null });
    await h.waitForLog("node-a", "disconnected; reconnecting");

    await h.startRouter({}, { port });
    await h.waitForNode("node-a", 30_000);
    const again = expectMlp(await h.infer(ref, [fp32("x", rows)]), DEMO_MLP_V1, rows);
    expect(again.node).toBe("node-a");
    // The node kept its model through the outage and told the new router so.
    expect(again.timing.loadMs).toBe(0);
    expect(h.count("node-a", "model loaded")).toBe(1);
    expect(await h.waitForCount("node-a", "connected to router", 2)).toBe(2);
    expect(h.child("node-a").exited).toBeNull();
  }, 60_000);

  it("refuses a node with a wrong token, and the node stops with exit code 3 instead of retrying", async () => {
    await h.startRouter();
    await h.startNode("intruder", { NODE_TOKEN: "not-the-right-token-at-all" }, { waitConnected: false });
    expect(await h.waitExit("intruder", 30_000)).toEqual({ code: 3, signal: null });
    expect(await h.waitForCount("router", "refused node without a valid token", 1)).toBe(1);
    expect(h.count("intruder", "router refused this node's token; not retrying")).toBe(1);
    expect(h.count("intruder", "disconnected; reconnecting")).toBe(0);
    expect((await h.status()).nodes).toEqual([]);
  }, 60_000);

  it("batches 16 concurrent single-row calls and gives each caller its own row's answer", async () => {
    await h.startRouter();
    await h.startNode("batcher", { BATCH_WINDOW_MS: "20", NODE_SLOTS: "16" });
    const ref = await h.model("demo-mlp", 1);
    expectMlp(await h.infer(ref, [fp32("x", [mlpRow(0)])]), DEMO_MLP_V1, [mlpRow(0)]); // warm

    const rows = Array.from({ length: 16 }, (_, i) => mlpRow(i * 5 + 1));
    const answers = await Promise.all(rows.map((r) => h.infer(ref, [fp32("x", [r])])));
    answers.forEach((a, i) => {
      const r = expectMlp(a, DEMO_MLP_V1, [rows[i]!]);
      expect(r.node).toBe("batcher");
    });
  }, 60_000);
});
