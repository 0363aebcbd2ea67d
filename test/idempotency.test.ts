// Unit tests for regions/idempotency.ts: the request id as an idempotency key at the router,
// with fake runs (promises the test settles) and a fake clock.

import { describe, expect, it } from "vitest";
import { IdempotentCalls, type StoredAnswer } from "../regions/idempotency.js";

const answer = (text: string, status = 200, notStarted = false): StoredAnswer => ({
  status,
  body: new TextEncoder().encode(text),
  notStarted,
});

/** A run the test ends by hand, counting how often it was started. */
function fakeRun() {
  let runs = 0;
  let settle!: (a: StoredAnswer) => void;
  const run = () => {
    runs++;
    return new Promise<StoredAnswer>((r) => (settle = r));
  };
  return { run, finish: (a: StoredAnswer) => settle(a), runs: () => runs };
}

const text = (a: StoredAnswer) => new TextDecoder().decode(a.body);

describe("IdempotentCalls", () => {
  it("a duplicate while the first runs waits for it: one run, the same answer twice", async () => {
    const calls = new IdempotentCalls();
    const f = fakeRun();
    const first = calls.call("acct", "req-1", "fp", f.run);
    const second = calls.call("acct", "req-1", "fp", f.run);
    await Promise.resolve();
    expect(f.runs()).toBe(1);
    f.finish(answer("result"));
    const [a, b] = await Promise.all([first, second]);
    expect(a).toMatchObject({ kind: "answer", shared: false });
    expect(b).toMatchObject({ kind: "answer", shared: true });
    if (a.kind !== "answer" || b.kind !== "answer") throw new Error("unreachable");
    expect(b.answer.body).toBe(a.answer.body);
    expect(text(b.answer)).toBe("result");
    expect(calls.shared).toBe(1);
  });

  it("a duplicate after the first finished gets the stored answer without running", async () => {
    const calls = new IdempotentCalls();
    const f = fakeRun();
    const first = calls.call("acct", "req-1", "fp", f.run);
    f.finish(answer("result"));
    await first;
    const again = await calls.call("acct", "req-1", "fp", f.run);
    expect(f.runs()).toBe(1);
    expect(again).toMatchObject({ kind: "answer", shared: true });
    if (again.kind === "answer") expect(text(again.answer)).toBe("result");
  });

  it("a failure after dispatch is kept like a result (the call may have run); a refusal before dispatch is not", async () => {
    const calls = new IdempotentCalls();
    const failed = fakeRun();
    const p = calls.call("acct", "ran", "fp", failed.run);
    failed.finish(answer("node_error", 502));
    await p;
    const again = await calls.call("acct", "ran", "fp", failed.run);
    expect(failed.runs()).toBe(1);
    if (again.kind === "answer") expect(again.answer.status).toBe(502);

    const refused = fakeRun();
    const q = calls.call("acct", "refused", "fp", refused.run);
    refused.finish(answer("no_capacity", 503, true));
    await q;
    const retry = calls.call("acct", "refused", "fp", refused.run);
    await Promise.resolve();
    expect(refused.runs()).toBe(2);
    refused.finish(answer("result"));
    expect(await retry).toMatchObject({ kind: "answer", shared: false });
  });

  it("a duplicate that joined a call refused before dispatch gets the refusal too, and nothing is kept", async () => {
    const calls = new IdempotentCalls();
    const f = fakeRun();
    const a = calls.call("acct", "r", "fp", f.run);
    const b = calls.call("acct", "r", "fp", f.run);
    f.finish(answer("no_capacity", 503, true));
    const [ra, rb] = await Promise.all([a, b]);
    expect(ra.kind === "answer" && ra.answer.notStarted).toBe(true);
    expect(rb.kind === "answer" && rb.answer.notStarted).toBe(true);
    expect(calls.size.entries).toBe(0);
  });

  it("the key is scoped by account: another tenant's same id runs its own call", async () => {
    const calls = new IdempotentCalls();
    const f = fakeRun();
    const p = calls.call("tenant-a", "guessable", "fp", f.run);
    f.finish(answer("a's secret result"));
    await p;
    const g = fakeRun();
    const q = calls.call("tenant-b", "guessable", "fp", g.run);
    await Promise.resolve();
    expect(g.runs()).toBe(1);
    g.finish(answer("b's result"));
    const r = await q;
    if (r.kind === "answer") expect(text(r.answer)).toBe("b's result");
  });

  it("the same id with other inputs is a conflict, while running and after", async () => {
    const calls = new IdempotentCalls();
    const f = fakeRun();
    const p = calls.call("acct", "id", "fp-1", f.run);
    expect(await calls.call("acct", "id", "fp-2", f.run)).toEqual({ kind: "conflict" });
    f.finish(answer("result"));
    await p;
    expect(await calls.call("acct", "id", "fp-2", f.run)).toEqual({ kind: "conflict" });
    expect(f.runs()).toBe(1);
  });

  it("keeps answers for the TTL only", async () => {
    let now = 1_000;
    const calls = new IdempotentCalls({ maxEntries: 10, maxBytes: 1_000, ttlMs: 100 }, () => now);
    const f = fakeRun();
    const p = calls.call("acct", "id", "fp", f.run);
    f.finish(answer("x"));
    await p;
    now += 99;
    expect(await calls.call("acct", "id", "fp", f.run)).toMatchObject({ shared: true });
    now += 1;
    const again = calls.call("acct", "id", "fp", f.run);
    await Promise.resolve();
    expect(f.runs()).toBe(2);
    f.finish(answer("y"));
    await again;
  });

  it("is bounded in entries and in bytes, evicting the oldest first", async () => {
    const calls = new IdempotentCalls({ maxEntries: 3, maxBytes: 10, ttlMs: 60_000 });
    const store = async (id: string, body: string) => {
      const f = fakeRun();
      const p = calls.call("acct", id, "fp", f.run);
      f.finish(answer(body));
      await p;
    };
    for (const id of ["a", "b", "c", "d"]) await store(id, "12");
    expect(calls.size).toEqual({ entries: 3, bytes: 6 });
    // "a" was evicted: it runs again.
    const f = fakeRun();
    const p = calls.call("acct", "a", "fp", f.run);
    await Promise.resolve();
    expect(f.runs()).toBe(1);
    f.finish(answer("1234567"));
    await p;
    // 7 more bytes: over 10, so the oldest ("b", "c") go.
    expect(calls.size).toEqual({ entries: 2, bytes: 9 });
    // An answer bigger than the whole budget is not kept at all.
    await store("huge", "x".repeat(11));
    expect(calls.size.bytes).toBeLessThanOrEqual(10);
    const h = fakeRun();
    const q = calls.call("acct", "huge", "fp", h.run);
    await Promise.resolve();
    expect(h.runs()).toBe(1);
    h.finish(answer("x"));
    await q;
  });
});
