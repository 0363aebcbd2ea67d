// Coalesced socket frames (protocol/frame-batch.ts, the `batch` frame of protocol/messages.ts):
// what one turn queues leaves as one message in order, a lone frame leaves plain, the bounds on
// count and bytes split a batch instead of breaking it, and a receiver refuses a hostile batch
// (too many frames, a nested batch, one bad item) as a whole, checking every item by its own
// direction's schema.

import { describe, expect, it } from "vitest";
import { createCodec } from "../protocol/codec.js";
import { FrameBatcher } from "../protocol/frame-batch.js";
import {
  MAX_BATCH_BYTES,
  MAX_BATCH_FRAMES,
  MessageError,
  parseEdgeToRegion,
  parseNodeMessage,
  parseRegionToEdge,
  unbatch,
  type RegionToEdge,
} from "../protocol/messages.js";

const codec = createCodec();
const token = (sid: string, i: number, text = "x"): RegionToEdge => ({ t: "token", sid, i, text, id: i });

/** A batcher whose turn ends when the test says (run()), writing decoded messages to `sent`. */
function manual() {
  const sent: unknown[] = [];
  const turns: (() => void)[] = [];
  const b = new FrameBatcher<RegionToEdge>(codec.encode, (bytes) => sent.push(codec.decode(bytes)), (f) => turns.push(f));
  b.batching = true; // the peer announced `batch` (test/wire-version.test.ts covers a peer that did not)
  const run = () => {
    for (const f of turns.splice(0)) f();
  };
  return { b, sent, run, turns };
}

/** Every frame the messages carried, split and checked as a receiver does. */
const received = (sent: unknown[]) => sent.flatMap((m) => unbatch(m, parseRegionToEdge));

describe("FrameBatcher", () => {
  it("sends a turn's frames as one batch, in order, and the receiver splits them back", () => {
    const { b, sent, run, turns } = manual();
    const frames = [token("a", 0), token("b", 0), token("a", 1), { t: "done" as const, sid: "b", reason: "length" as const, tokens: 1, promptTokens: 1, node: "n", timing: { queueMs: 0, loadMs: 0, ttftMs: 1, genMs: 1, regionMs: 2 } }];
    for (const f of frames) b.push(f);
    expect(turns).toHaveLength(1); // one flush per turn, however many frames
    expect(sent).toHaveLength(0);
    run();
    expect(sent).toHaveLength(1);
    expect((sent[0] as { t: string }).t).toBe("batch");
    expect(received(sent)).toEqual(frames);
  });

  it("a lone frame leaves as itself, not wrapped", () => {
    const { b, sent, run } = manual();
    b.push(token("a", 0));
    run();
    expect(sent).toEqual([token("a", 0)]);
  });

  it("sendNow sends what waits first, then its frame on its own", () => {
    const { b, sent } = manual();
    b.push(token("a", 0));
    b.push(token("a", 1));
    b.sendNow({ t: "pong" });
    expect(received(sent)).toEqual([token("a", 0), token("a", 1), { t: "pong" }]);
    expect(sent).toHaveLength(2);
    expect(b.pending).toBe(0);
  });

  it("splits at the frame-count bound", () => {
    const { b, sent, run } = manual();
    const n = MAX_BATCH_FRAMES * 2 + 3;
    for (let i = 0; i < n; i++) b.push(token("s", i));
    run();
    expect(sent).toHaveLength(3);
    expect(received(sent).map((f) => (f as { i: number }).i)).toEqual(Array.from({ length: n }, (_, i) => i));
  });

  it("splits at the byte bound, keeping order", () => {
    const { b, sent, run } = manual();
    const text = "t".repeat(4000);
    const n = Math.ceil((MAX_BATCH_BYTES * 3) / 4000);
    for (let i = 0; i < n; i++) b.push(token("s", i, text));
    run();
    expect(sent.length).toBeGreaterThan(3);
    for (const m of sent) expect(codec.encode(m).length).toBeLessThanOrEqual(MAX_BATCH_BYTES);
    expect(received(sent).map((f) => (f as { i: number }).i)).toEqual(Array.from({ length: n }, (_, i) => i));
  });

  it("flushes by default at the end of the turn, not on a timer", async () => {
    const sent: Uint8Array[] = [];
    const b = new FrameBatcher<RegionToEdge>(codec.encode, (bytes) => sent.push(bytes));
    b.batching = true;
    b.push(token("a", 0));
    b.push(token("a", 1));
    expect(sent).toHaveLength(0);
    await new Promise((r) => setImmediate(r));
    expect(sent).toHaveLength(1);
  });
});

describe("unbatch refuses a hostile batch whole", () => {
  const refusal = (v: unknown, parse: (v: unknown) => unknown = parseRegionToEdge) => {
    try {
      unbatch(v, parse);
    } catch (err) {
      expect(err).toBeInstanceOf(MessageError);
      return (err as Error).message;
    }
    return null;
  };

  it("more frames than the bound, before any is looked at", () => {
    // Items that would each fail: only the count is reported, so none was read.
    expect(refusal({ t: "batch", frames: new Array(MAX_BATCH_FRAMES + 1).fill(7) })).toBe(`'frames' must be an array of at most ${MAX_BATCH_FRAMES}`);
  });

  it("a batch inside a batch, a non-map item, a malformed list", () => {
    expect(refusal({ t: "batch", frames: [token("a", 0), { t: "batch", frames: [token("a", 1)] }] })).toMatch(/unknown frame type "batch"/);
    expect(refusal({ t: "batch", frames: [token("a", 0), "token"] })).toBe("a batched frame must be a map");
    expect(refusal({ t: "batch", frames: { 0: token("a", 0) } })).toMatch(/'frames' must be an array/);
  });

  it("one bad item refuses the whole batch (each item checked by its direction's schema)", () => {
    expect(refusal({ t: "batch", frames: [token("a", 0), { ...token("a", 1), i: -1 }] })).toMatch(/^'i' must be an integer/);
    // A region's token is no frame of the edge's direction, nor a node's.
    expect(refusal({ t: "batch", frames: [token("a", 0)] }, parseEdgeToRegion)).toMatch(/unknown frame type "token"/);
    expect(refusal({ t: "batch", frames: [{ t: "credit", sid: "a", n: 1 }] }, parseNodeMessage)).toMatch(/unknown frame type "credit"/);
    // Per-frame bounds still hold inside a batch (a credit over the window).
    expect(refusal({ t: "batch", frames: [{ t: "credit", sid: "a", n: 1 }, { t: "credit", sid: "a", n: 1_000_000 }] }, parseEdgeToRegion)).toMatch(/^'n'/);
  });

  it("plain frames pass through as one", () => {
    expect(unbatch({ t: "credit", sid: "a", n: 2 }, parseEdgeToRegion)).toEqual([{ t: "credit", sid: "a", n: 2 }]);
    expect(refusal({ t: "credit", sid: "a", n: -2 }, parseEdgeToRegion)).toMatch(/^'n'/);
  });
});
