// The decode loop's race with its callers, on a fake engine: a stream added from a continuation
// of the event that ended the last one (after the loop's last check, before it let go) still runs.

import { describe, expect, it, vi } from "vitest";
import type { DecodeEngine, EngineEvent } from "../gpu-node/decoder/engine.js";
import { DecodeLoop } from "../gpu-node/decoder/loop.js";

/** One "stream" is one step of work that ends with a done event. */
function fakeEngine() {
  let pending = 0;
  let steps = 0;
  const engine = {
    get hasWork() {
      return pending > 0;
    },
    async step(): Promise<EngineEvent[]> {
      await Promise.resolve();
      steps++;
      pending--;
      return [{ type: "done" } as unknown as EngineEvent];
    },
  };
  return { engine: engine as unknown as DecodeEngine, add: () => pending++, steps: () => steps };
}

describe("decode loop", () => {
  it("runs a stream added from a continuation of the last stream's done event", async () => {
    const f = fakeEngine();
    let dones = 0;
    const loop: DecodeLoop = new DecodeLoop(f.engine, () => {
      // The caller reacts to the done later, as a promise continuation would.
      if (++dones === 1)
        void Promise.resolve().then(() => {
          f.add();
          loop.kick();
        });
    });
    f.add();
    loop.kick();
    await vi.waitFor(() => expect(f.steps()).toBe(2));
    await loop.idle();
    expect(loop.running).toBe(false);
  });
});
