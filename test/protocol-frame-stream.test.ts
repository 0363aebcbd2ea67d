// The length-prefixed frames of a streamed HTTP generation (protocol/frame-stream.ts): frames
// split however the bytes arrive, and a length over the bound refused before anything is buffered.

import { describe, expect, it } from "vitest";
import { FrameSplitter, FrameStreamError, frameBytes } from "../protocol/frame-stream.js";

const bytes = (...n: number[]) => new Uint8Array(n);

describe("frame stream", () => {
  it("gives back each frame whole, whatever the chunking", () => {
    const frames = [bytes(1), bytes(), bytes(2, 3, 4), new Uint8Array(300).fill(7)];
    const wire = new Uint8Array(frames.reduce((n, f) => n + 4 + f.length, 0));
    let at = 0;
    for (const f of frames) {
      wire.set(frameBytes(f), at);
      at += 4 + f.length;
    }
    for (const size of [1, 2, 3, 5, 64, wire.length]) {
      const s = new FrameSplitter();
      const out: Uint8Array[] = [];
      for (let i = 0; i < wire.length; i += size) out.push(...s.push(wire.slice(i, i + size)).map((f) => f.slice()));
      expect(out, `chunks of ${size}`).toEqual(frames);
      expect(s.pending).toBe(0);
    }
  });

  it("keeps an incomplete frame as pending", () => {
    const s = new FrameSplitter();
    expect(s.push(frameBytes(bytes(1, 2, 3)).subarray(0, 5))).toEqual([]);
    expect(s.pending).toBe(5);
  });

  it("refuses a length over the bound from its prefix alone", () => {
    const s = new FrameSplitter(16);
    const prefix = bytes(0, 0, 0, 17);
    expect(() => s.push(prefix)).toThrow(FrameStreamError);
    expect(() => new FrameSplitter().push(bytes(0xff, 0xff, 0xff, 0xff))).toThrow(/over the/);
  });
});
