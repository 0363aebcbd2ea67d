// The usage writer (edge/usage.ts) against a real D1 (Miniflare's, in workerd; the schema from
// schema/migrations): the rows written through the prepared inserts are the rows drizzle's
// query builder wrote for the same calls, column for column (defaults, nulls, shadow flags,
// quotes and non-ASCII text, every rows-per-statement count); and rows recorded through the
// isolate buffer are all written once the promises handed to waitUntil settle.

import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { D1Database } from "@cloudflare/workers-types";
import { drizzle } from "drizzle-orm/d1";
import { Miniflare } from "miniflare";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { withBusyRetry } from "../edge/d1-retry.js";
import { flushUsage, recordUsage, writePrepared, writeWithDrizzle, type UsageEvent, type UsageWriteMode, type UsageWriter } from "../edge/usage.js";
import { ROOT } from "../local/mesh.js";

let mf: Miniflare;
let d1: D1Database;

beforeAll(async () => {
  mf = new Miniflare({
    modules: true,
    script: "export default { fetch() { return new Response('') } }",
    compatibilityDate: "2026-04-01",
    d1Databases: { DB: "usage-write-test" },
  });
  d1 = (await mf.getD1Database("DB")) as unknown as D1Database;
  const dir = join(ROOT, "schema/migrations");
  for (const file of readdirSync(dir).filter((f) => f.endsWith(".sql")).sort()) {
    for (const stmt of readFileSync(join(dir, file), "utf8").split("--> statement-breakpoint")) {
      if (stmt.trim()) await d1.prepare(stmt).run();
    }
  }
}, 60_000);

afterAll(async () => {
  await mf?.dispose();
});

/** The edge's database as the middleware makes it: drizzle over the retrying binding. */
const edgeDb = () => drizzle(withBusyRetry(d1));

/** Rows unlike each other in every way a row can differ; `tag` prefixes the request ids. */
function rows(tag: string, n: number): UsageEvent[] {
  return Array.from({ length: n }, (_, i) => {
    const row: UsageEvent = {
      requestId: `${tag}-${i}`,
      accountId: `acct_'"${i % 3}`,
      keyId: `key_ü${i}`,
      modelId: `model_${i % 2}`,
      version: 1 + (i % 4),
      region: i % 5 === 0 ? null : "ap-seoul",
      node: i % 5 === 0 ? null : `node-${i}`,
      status: [200, 400, 429, 500, 504][i % 5]!,
      edgeMs: i,
      queueMs: 2 * i,
      inferMs: 3 * i,
      computeMs: i % 3 === 0 ? null : 4 * i,
      shadowOf: i % 4 === 1 ? 1 : null,
      matched: i % 4 === 1 ? i % 2 : null,
      createdAt: 1_790_000_000_000 + i,
    };
    // Optional columns left out: the token counts' default (0), compute's null.
    if (i % 2 === 0) Object.assign(row, { tokensIn: 10 + i, tokensOut: 20 + i });
    if (i % 7 === 3) delete row.computeMs;
    return row;
  });
}

/** The rows of `tag` as D1 holds them, id dropped and the tag taken off the request id. */
async function written(tag: string): Promise<Record<string, unknown>[]> {
  const { results } = await d1.prepare("SELECT * FROM usage_events WHERE request_id LIKE ? ORDER BY id").bind(`${tag}-%`).all<Record<string, unknown>>();
  return results.map(({ id: _id, ...r }) => ({ ...r, request_id: String(r.request_id).slice(tag.length) }));
}

describe("usage rows: prepared inserts against drizzle's", () => {
  // 1..6 rows: every rows-per-statement count and a second statement; 13: two full ones and a tail.
  for (const n of [1, 2, 3, 4, 5, 6, 13]) {
    it(`${n} rows: the same rows, column for column`, async () => {
      const db = edgeDb();
      await writeWithDrizzle(db, rows(`old${n}`, n));
      await writePrepared(db, rows(`new${n}`, n));
      const before = await written(`old${n}`);
      expect(before).toHaveLength(n);
      expect(await written(`new${n}`)).toEqual(before);
    });
  }

  it("the values are the calls' own: given values, a left-out token count is 0, a left-out compute null", async () => {
    await writePrepared(edgeDb(), rows("vals", 4));
    const [r0, r1, , r3] = await written("vals");
    expect(r0).toMatchObject({ request_id: "-0", account_id: `acct_'"0`, key_id: "key_ü0", region: null, status: 200, compute_ms: null, tokens_in: 10, tokens_out: 20, created_at: 1_790_000_000_000 });
    expect(r1).toMatchObject({ request_id: "-1", shadow_of: 1, matched: 1, compute_ms: 4, tokens_in: 0, tokens_out: 0 });
    expect(r3).toMatchObject({ compute_ms: null, tokens_in: 0 });
  });
});

describe("usage rows through the isolate's buffer", () => {
  const sink = (usageWrite: UsageWriteMode, pending: Promise<unknown>[]) => ({
    db: edgeDb(),
    config: { usageWrite },
    waitUntil: (p: Promise<unknown>) => void pending.push(p),
  });

  const record = async (tag: string, write: UsageWriteMode, n: number) => {
    const pending: Promise<unknown>[] = [];
    const s = sink(write, pending);
    for (const r of rows(tag, n)) recordUsage(s, r);
    // What waitUntil holds past the answers: every row is written once it settles.
    while (pending.length) await pending.shift();
  };

  it("every recorded row is written once the promises handed to waitUntil settle, the same rows either way", async () => {
    // 450: two flushes of FLUSH_ROWS on the way, the rest on the timer's.
    await record("bufold", "drizzle", 450);
    await record("bufnew", "prepared", 450);
    const before = await written("bufold");
    expect(before).toHaveLength(450);
    expect(await written("bufnew")).toEqual(before);
  });

  it("a flush with nothing buffered writes nothing", async () => {
    const { results } = await d1.prepare("SELECT COUNT(*) AS n FROM usage_events").all<{ n: number }>();
    await flushUsage(edgeDb());
    const after = await d1.prepare("SELECT COUNT(*) AS n FROM usage_events").all<{ n: number }>();
    expect(after.results[0]!.n).toBe(results[0]!.n);
  });

  it("rows D1 refused are kept and written by the next flush", async () => {
    const refusing: UsageWriter = () => Promise.reject(new Error("D1_ERROR: simulated refusal"));
    const pending: Promise<unknown>[] = [];
    for (const r of rows("kept", 7)) recordUsage(sink("prepared", pending), r);
    // The buffer is module state: flush it once through a writer that fails, then for real.
    await flushUsage(edgeDb(), refusing);
    expect(await written("kept")).toHaveLength(0);
    while (pending.length) await pending.shift();
    expect(await written("kept")).toHaveLength(7);
  });
});
