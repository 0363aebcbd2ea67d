// The edge's D1 retry (edge/d1-retry.ts) against a fake D1: a statement or batch that meets
// "database is locked" runs again (bounded), any other error passes at once, and a batch hands
// D1 its own statement objects.
import type { D1Database } from "@cloudflare/workers-types";
import { describe, expect, it } from "vitest";
import { isBusy, isTransient, withBusyRetry } from "../edge/d1-retry.js";

const busy = () => new Error("D1_ERROR: database is locked: SQLITE_BUSY");

function fakeD1(failures: (() => Error)[]) {
  const calls: string[] = [];
  const batches: unknown[][] = [];
  const next = async <T>(what: string, value: T): Promise<T> => {
    calls.push(what);
    const f = failures.shift();
    if (f) throw f();
    return value;
  };
  class Stmt {
    constructor(readonly sql: string, readonly values: unknown[] = []) {}
    bind(...v: unknown[]) {
      return new Stmt(this.sql, v);
    }
    first() {
      return next("first", { sql: this.sql, values: this.values });
    }
    run() {
      return next("run", { success: true });
    }
    all() {
      return next("all", { results: [this.values] });
    }
    raw() {
      return next("raw", [[1]]);
    }
  }
  const db = {
    prepare: (sql: string) => new Stmt(sql),
    batch: (stmts: unknown[]) => {
      batches.push(stmts);
      if (!stmts.every((s) => s instanceof Stmt)) throw new Error("batch: not D1 statements");
      return next("batch", stmts.map(() => ({ success: true })));
    },
    exec: (q: string) => Promise.resolve({ count: 1, duration: 0, q }),
  };
  return { db: db as unknown as D1Database, calls, batches };
}

const noSleep = async () => undefined;

describe("D1 busy retry", () => {
  it("names only the lock error as transient", () => {
    expect(isBusy(busy())).toBe(true);
    expect(isBusy(new Error("SQLITE_CONSTRAINT: UNIQUE constraint failed"))).toBe(false);
  });

  it("a statement that met the lock runs again, with its bound values, and answers", async () => {
    const f = fakeD1([busy, busy]);
    const db = withBusyRetry(f.db, noSleep);
    await expect(db.prepare("SELECT ?1").bind(7).first()).resolves.toEqual({ sql: "SELECT ?1", values: [7] });
    expect(f.calls).toEqual(["first", "first", "first"]);
  });

  it("gives up after four attempts with the lock error", async () => {
    const f = fakeD1([busy, busy, busy, busy, busy]);
    await expect(withBusyRetry(f.db, noSleep).prepare("x").all()).rejects.toThrow(/SQLITE_BUSY/);
    expect(f.calls).toHaveLength(4);
  });

  it("D1's 'internal error' is retried for a read (safe to run twice), never for a write", async () => {
    const internal = () => new Error("D1_ERROR: internal error; reference = hlej7f41v725e87s725ca76n");
    expect(isTransient(internal(), true)).toBe(true);
    expect(isTransient(internal(), false)).toBe(false);
    const reads = fakeD1([internal]);
    await expect(withBusyRetry(reads.db, noSleep).prepare("SELECT 1").all()).resolves.toBeDefined();
    expect(reads.calls).toEqual(["all", "all"]);
    const writes = fakeD1([internal]);
    await expect(withBusyRetry(writes.db, noSleep).prepare("INSERT INTO t VALUES (1)").run()).rejects.toThrow(/internal error/);
    expect(writes.calls).toEqual(["run"]);
    const mixed = fakeD1([internal]);
    const db = withBusyRetry(mixed.db, noSleep);
    await expect(db.batch([db.prepare("SELECT 1"), db.prepare("UPDATE t SET a = 1")])).rejects.toThrow(/internal error/);
    const readBatch = fakeD1([internal]);
    const db2 = withBusyRetry(readBatch.db, noSleep);
    await expect(db2.batch([db2.prepare("select 1"), db2.prepare(" SELECT 2")])).resolves.toHaveLength(2);
  });

  it("any other error passes at once", async () => {
    const f = fakeD1([() => new Error("SQLITE_CONSTRAINT")]);
    await expect(withBusyRetry(f.db, noSleep).prepare("x").run()).rejects.toThrow(/CONSTRAINT/);
    expect(f.calls).toEqual(["run"]);
  });

  it("a batch gets D1's own statements and is retried whole", async () => {
    const f = fakeD1([busy]);
    const db = withBusyRetry(f.db, noSleep);
    const out = await db.batch([db.prepare("a").bind(1), db.prepare("b")]);
    expect(out).toHaveLength(2);
    expect(f.calls).toEqual(["batch", "batch"]);
  });

  it("other members are D1's own", async () => {
    const f = fakeD1([]);
    await expect(withBusyRetry(f.db, noSleep).exec("q")).resolves.toMatchObject({ q: "q" });
  });
});
