// The router's NodeLink against a fake socket: the races around a call's end. The caller hears
// at its deadline, but the slot stays taken until the node confirms the call ended; a result
// racing the deadline settles the caller once; the frames name the sha256 and the deadline.
// The node is told to stop a reserve before the caller's deadline, so its confirmation, with the
// compute it spent, reaches the caller's answer; whoever counts the slot hears when it frees.

import { describe, expect, it } from "vitest";
import { createCodec } from "../protocol/codec.js";
import type { RouterToNode } from "../protocol/messages.js";
import type { WireTensor } from "../formats/tensor.js";
import { CONFIRM_RESERVE_MAX_MS, confirmReserveMs, NodeCallError, NodeLink } from "../regions/node-link.js";

function fakeLink() {
  const codec = createCodec();
  const sent: RouterToNode[] = [];
  const ws = { send: (data: Uint8Array) => sent.push(codec.decode(data) as RouterToNode) };
  let changes = 0;
  const link = new NodeLink(
    "n1",
    ws as never,
    { kind: "cpu", name: "cpu", memoryMb: 1024 },
    "cpu",
    1024,
    4,
    0,
    [{ key: "m@1", memoryMb: 1, lastUsed: 0 }],
    "msgpack",
    () => changes++,
  );
  return { link, sent, changes: () => changes };
}

const x: WireTensor[] = [{ name: "x", datatype: "FP32", shape: [1], data: new Float32Array(1) }];
const sha256 = "a".repeat(64);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("NodeLink call slots", () => {
  it("sends the call's sha256 and an absolute deadline the reserve before the caller's", () => {
    const { link, sent } = fakeLink();
    const before = Date.now();
    void link.infer("m@1", x, undefined, 5_000, { sha256, requestId: "req_1" }).catch(() => undefined);
    const after = Date.now();
    const frame = sent[0] as Extract<RouterToNode, { t: "infer" }>;
    expect(frame).toMatchObject({ t: "infer", key: "m@1", sha256, requestId: "req_1" });
    expect(frame.deadline).toBeGreaterThanOrEqual(before + 5_000 - CONFIRM_RESERVE_MAX_MS);
    expect(frame.deadline).toBeLessThanOrEqual(after + 5_000 - CONFIRM_RESERVE_MAX_MS);
    expect([confirmReserveMs(1_000), confirmReserveMs(60_000), confirmReserveMs(5)]).toEqual([100, CONFIRM_RESERVE_MAX_MS, 0]);
    link.closed("test over");
  });

  it("a node that confirms its stop within the reserve: the caller's 504 carries the compute the node spent, and the slot frees once", async () => {
    const { link, sent } = fakeLink();
    let ended = 0;
    const call = link.infer("m@1", x, undefined, 400, { sha256, onEnd: () => ended++ });
    const id = (sent[0] as { id: string }).id;
    // The cancel goes at the node's deadline (360 ms in), before the caller's.
    while (!sent.some((f) => f.t === "cancel")) await sleep(5);
    expect(ended).toBe(0);
    link.handle({ t: "error", id, code: "deadline_exceeded", message: "the call ran past its deadline and was stopped", computeMs: 361 });
    expect(ended).toBe(1);
    const err = await call.then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(NodeCallError);
    expect(err).toMatchObject({ code: "deadline_exceeded", computeMs: 361, retryable: false });
    expect(link.inflight).toBe(0);
    link.closed("test over");
    expect(ended).toBe(1);
  });

  it("a node that answers the router's stop cancel with 'cancelled' has its caller told deadline_exceeded, not cancelled", async () => {
    const { link, sent } = fakeLink();
    const call = link.infer("m@1", x, undefined, 200, { sha256 });
    while (!sent.some((f) => f.t === "cancel")) await sleep(5);
    link.handle({ t: "error", id: (sent[0] as { id: string }).id, code: "cancelled", message: "cancelled", computeMs: 185 });
    await expect(call).rejects.toMatchObject({ code: "deadline_exceeded", computeMs: 185 });
  });

  it("a node silent past the reserve: the caller hears at its deadline, billed the time the call held the node, and the slot waits for the node's word", async () => {
    const { link, sent } = fakeLink();
    let ended = 0;
    const started = performance.now();
    const call = link.infer("m@1", x, undefined, 100, { sha256, onEnd: () => ended++ });
    const err = (await call.catch((e: unknown) => e)) as NodeCallError;
    expect(err.code).toBe("deadline_exceeded");
    expect(err.computeMs).toBeGreaterThanOrEqual(90);
    expect(err.computeMs).toBeLessThanOrEqual(performance.now() - started + 1);
    expect(ended).toBe(0);
    expect(link.inflight).toBe(1);
    link.handle({ t: "error", id: (sent[0] as { id: string }).id, code: "cancelled", message: "cancelled", computeMs: 130 });
    expect(ended).toBe(1);
    expect(link.inflight).toBe(0);
  });

  it("an error frame passes the node's compute on; a socket that closes ends every slot's count once", async () => {
    const { link, sent } = fakeLink();
    let ended = 0;
    const failed = link.infer("m@1", x, undefined, 5_000, { sha256, onEnd: () => ended++ });
    link.handle({ t: "error", id: (sent[0] as { id: string }).id, code: "input_rejected", message: "Add: shapes do not agree", computeMs: 3 });
    await expect(failed).rejects.toMatchObject({ code: "input_rejected", computeMs: 3, retryable: false });
    expect(ended).toBe(1);
    const a = link.infer("m@1", x, undefined, 5_000, { sha256, onEnd: () => ended++ });
    const b = link.infer("m@1", x, undefined, 5_000, { sha256, onEnd: () => ended++ });
    link.closed("gone");
    await expect(a).rejects.toMatchObject({ code: "node_error" });
    await expect(b).rejects.toMatchObject({ code: "node_error" });
    expect(ended).toBe(3);
  });

  it("at the deadline the caller hears deadline_exceeded, the node is told to cancel, and the slot stays taken until the node confirms", async () => {
    const { link, sent } = fakeLink();
    const call = link.infer("m@1", x, undefined, 20, { sha256 });
    await expect(call).rejects.toMatchObject({ code: "deadline_exceeded" });
    expect(sent.map((f) => f.t)).toEqual(["infer", "cancel"]);
    // The node still computes: no new work may count on this slot.
    expect(link.inflight).toBe(1);
    expect(link.modelInflight.get("m@1")).toBe(1);
    link.handle({ t: "error", id: (sent[0] as { id: string }).id, code: "cancelled", message: "cancelled", computeMs: 30 });
    expect(link.inflight).toBe(0);
    expect(link.modelInflight.has("m@1")).toBe(false);
  });

  it("a result that arrives after the deadline only frees the slot; one that beats it resolves the caller once", async () => {
    const { link, sent, changes } = fakeLink();
    const late = link.infer("m@1", x, undefined, 20, { sha256 });
    const lateId = (sent[0] as { id: string }).id;
    await expect(late).rejects.toBeInstanceOf(NodeCallError);
    const before = changes();
    link.handle({ t: "result", id: lateId, outputs: x, inferMs: 25, computeMs: 25 });
    expect(link.inflight).toBe(0);
    expect(changes()).toBe(before + 1);

    const onTime = link.infer("m@1", x, undefined, 30, { sha256 });
    const id = (sent[sent.length - 1] as { id: string }).id;
    link.handle({ t: "result", id, outputs: x, inferMs: 5, computeMs: 4 });
    await expect(onTime).resolves.toMatchObject({ inferMs: 5, computeMs: 4 });
    await sleep(50); // the deadline timer would have fired by now: nothing more happens
    expect(link.inflight).toBe(0);
    expect(sent.filter((f) => f.t === "cancel")).toHaveLength(1); // only the late call's
  });

  it("a socket that closes frees abandoned slots with the rest, and tells no caller twice", async () => {
    const { link } = fakeLink();
    const call = link.infer("m@1", x, undefined, 10, { sha256 });
    await expect(call).rejects.toMatchObject({ code: "deadline_exceeded" });
    expect(link.closed("gone")).toBe(1);
    expect(link.inflight).toBe(0);
  });
});
