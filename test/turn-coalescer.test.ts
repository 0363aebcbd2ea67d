// The edge's caller-facing coalescer (edge/turn-coalescer.ts), pure logic: what one turn gathers
// is written once, in order, at the turn's end; the bound flushes early and never lets a write
// pass it unless one item alone does; nothing is written twice or empty.

import { describe, expect, it } from "vitest";
import { TurnCoalescer } from "../edge/turn-coalescer.js";

/** A coalescer whose turn ends when the test says (run()), recording each write. */
function manual(max = 100) {
  const writes: string[][] = [];
  const turns: (() => void)[] = [];
  const c = new TurnCoalescer<string>((items) => writes.push(items), max, (f) => turns.push(f));
  const run = () => {
    for (const f of turns.splice(0)) f();
  };
  return { c, writes, turns, run };
}

describe("TurnCoalescer", () => {
  it("writes a turn's items once, in order, when the turn ends", () => {
    const { c, writes, turns, run } = manual();
    for (const s of ["a", "b", "c"]) c.push(s, 1);
    expect(turns).toHaveLength(1); // one flush scheduled per turn
    expect(writes).toEqual([]);
    expect(c.pending).toBe(3);
    run();
    expect(writes).toEqual([["a", "b", "c"]]);
    c.push("d", 1);
    run();
    expect(writes).toEqual([["a", "b", "c"], ["d"]]);
  });

  it("flush writes at once (before an end), and the turn's end then writes nothing", () => {
    const { c, writes, run } = manual();
    c.push("a", 1);
    c.push("b", 1);
    c.flush();
    expect(writes).toEqual([["a", "b"]]);
    run();
    c.flush();
    expect(writes).toEqual([["a", "b"]]);
  });

  it("the bound: reaching it writes at once, an item that would pass it waits for the next write, and a lone big item goes alone", () => {
    const { c, writes, run } = manual(10);
    c.push("a", 4);
    c.push("b", 4);
    c.push("c", 4); // 12 > 10: a and b leave first
    expect(writes).toEqual([["a", "b"]]);
    c.push("d", 6); // reaches 10: leaves now with c
    expect(writes).toEqual([["a", "b"], ["c", "d"]]);
    c.push("huge", 50);
    expect(writes).toEqual([["a", "b"], ["c", "d"], ["huge"]]);
    c.push("e", 1);
    run();
    expect(writes.at(-1)).toEqual(["e"]);
    for (const w of writes) expect(w.length === 1 || w.length * 4 <= 10).toBe(true);
  });

  it("drop forgets what waits (the reader went away)", () => {
    const { c, writes, run } = manual();
    c.push("a", 1);
    c.drop();
    run();
    expect(writes).toEqual([]);
    expect(c.pending).toBe(0);
  });

  it("on the real schedule, what one synchronous run pushes leaves as one write after it", async () => {
    const writes: number[][] = [];
    const c = new TurnCoalescer<number>((items) => writes.push(items), 1000);
    for (let i = 0; i < 5; i++) c.push(i, 1);
    expect(writes).toEqual([]);
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
    expect(writes).toEqual([[0, 1, 2, 3, 4]]);
  });
});
