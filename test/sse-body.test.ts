// The SSE body's credit and stall bound (edge/sse-body.ts), with a real ReadableStream read the
// way the runtime reads it (one read at a time, a pull after each) and a recording generation in
// place of the region. Fake timers: the stall bound is a setTimeout and Date.now. Pure logic;
// the wire (a reader gone, the node stopping) is test/generation-cancel.test.ts.

import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { SseBody, type SseFeed } from "../edge/sse-body.js";

const WINDOW = 4;
const STALL_MS = 1000;

function setup() {
  const credits: number[] = [];
  const stops: string[] = [];
  const stalled: { queued: number; running: boolean }[] = [];
  const feed: SseFeed = { credit: (n) => credits.push(n), stop: (why) => stops.push(why) };
  const body = new SseBody(feed, WINDOW, STALL_MS, (i) => stalled.push({ queued: i.queued, running: i.running }));
  const reader = body.stream.getReader();
  const decoder = new TextDecoder();
  const read = async () => {
    const r = await reader.read();
    return r.done ? null : decoder.decode(r.value);
  };
  return { body, reader, read, credits, stops, stalled, granted: () => credits.reduce((a, b) => a + b, 0) };
}

/** Lets the stream's promise jobs (pulls) run. */
const settle = () => vi.advanceTimersByTimeAsync(0);

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe("SseBody", () => {
  it("grants a token's credit as the reader takes its event, never more than the window in flight", async () => {
    const s = setup();
    await settle();
    // The generation started with WINDOW of credit: an empty queue grants nothing more.
    expect(s.granted()).toBe(0);
    for (let i = 0; i < WINDOW; i++) s.body.write(`t${i}\n`, true);
    expect(s.granted()).toBe(0);
    expect(await s.read()).toBe("t0\n");
    await settle();
    expect(s.granted()).toBe(1);
    s.body.write("t4\n", true);
    // Taken, granted: queued events plus outstanding credit stay at the window.
    for (let i = 1; i <= 4; i++) expect(await s.read()).toBe(`t${i}\n`);
    await settle();
    expect(s.granted()).toBe(WINDOW + 1);
    s.body.write("done\n", false);
    s.body.end();
    expect(await s.read()).toBe("done\n");
    expect(await s.read()).toBeNull();
    expect(s.stops).toEqual([]);
  });

  it("a reader that keeps taking, however slowly, is never given up on", async () => {
    const s = setup();
    await settle();
    for (let i = 0; i < WINDOW; i++) s.body.write(`t${i}\n`, true);
    // One event taken a little within the bound each time, and the next token comes on its credit.
    for (let i = 0; i < 20; i++) {
      await vi.advanceTimersByTimeAsync(STALL_MS - 1);
      expect(await s.read()).toBe(`t${i}\n`);
      await settle();
      expect(s.granted()).toBe(i + 1);
      s.body.write(`t${i + WINDOW}\n`, true);
    }
    // Past the window (a progress event carries no credit), a read brings no pull: the check still sees it.
    s.body.write("progress\n", false);
    for (let i = 20; i < 24; i++) {
      await vi.advanceTimersByTimeAsync(STALL_MS - 1);
      expect(await s.read()).toBe(`t${i}\n`);
    }
    expect(s.stops).toEqual([]);
    expect(s.stalled).toEqual([]);
  });

  it("a reader that takes nothing while events wait: the generation is stopped and the body errored", async () => {
    const s = setup();
    await settle();
    expect(await Promise.all([s.read(), Promise.resolve(s.body.write("t0\n", true))]).then(([t]) => t)).toBe("t0\n");
    for (let i = 1; i <= WINDOW; i++) s.body.write(`t${i}\n`, true);
    await vi.advanceTimersByTimeAsync(STALL_MS - 1);
    expect(s.stops).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(s.stops).toEqual(["stalled"]);
    expect(s.stalled).toEqual([{ queued: WINDOW, running: true }]);
    expect(s.body.closed).toBe(true);
    // What it held is dropped with the connection: the next read fails.
    await expect(s.read()).rejects.toThrow(/took nothing/);
    // Events after that are not taken.
    s.body.write("late\n", true);
    expect(s.stops).toEqual(["stalled"]);
  });

  it("a tail the reader never takes once the generation ended: the body is errored, nothing to stop", async () => {
    const s = setup();
    await settle();
    s.body.write("t0\n", true);
    s.body.write("done\n", false);
    s.body.end();
    await vi.advanceTimersByTimeAsync(STALL_MS);
    expect(s.stops).toEqual([]);
    expect(s.stalled).toEqual([{ queued: 2, running: false }]);
    await expect(s.read()).rejects.toThrow(/took nothing/);
  });

  it("a reader gone (the body cancelled, or request.signal) stops the generation once", async () => {
    const s = setup();
    await settle();
    s.body.write("t0\n", true);
    await s.reader.cancel();
    s.body.gone();
    expect(s.stops).toEqual(["gone"]);
    await vi.advanceTimersByTimeAsync(STALL_MS * 2);
    expect(s.stalled).toEqual([]);
    const t = setup();
    await settle();
    t.body.gone();
    expect(t.stops).toEqual(["gone"]);
  });
});
