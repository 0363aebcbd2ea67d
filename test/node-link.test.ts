// The router's NodeLink against a fake socket: the races around a call's end. The caller hears
// at its deadline, but the slot stays taken until the node confirms the call ended; a result
// racing the deadline settles the caller once; the frames name the sha256 and the deadline.

import { describe, expect, it } from "vitest";
import { createCodec } from "../protocol/codec.js";
import type { RouterToNode } from "../protocol/messages.js";
import type { WireTensor } from "../protocol/tensor.js";
import { NodeCallError, NodeLink } from "../regions/node-link.js";

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
  it("sends the call's sha256 and absolute deadline", () => {
    const { link, sent } = fakeLink();
    const before = Date.now();
    void link.infer("m@1", x, undefined, 5_000, { sha256, requestId: "req_1" }).catch(() => undefined);
    const frame = sent[0] as Extract<RouterToNode, { t: "infer" }>;
    expect(frame).toMatchObject({ t: "infer", key: "m@1", sha256, requestId: "req_1" });
    expect(frame.deadline).toBeGreaterThanOrEqual(before + 5_000);
    link.closed("test over");
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
