// Usage: one row per inference call (account, key, model, version, region, node, status, and
// edge/queue/infer ms; shadow copies flagged), buffered in the isolate and written to D1 in
// batches after the answer has gone (waitUntil), so recording never slows a caller. A batch goes
// out when FLUSH_ROWS rows are waiting or FLUSH_MS after the first one. If D1 refuses a batch it
// is kept (bounded) for the next flush. The cost of batching: an isolate killed abruptly loses
// at most its last unflushed batch.
//
// The rows go through D1 statements prepared once per isolate (one per rows-per-statement
// count), their SQL written by drizzle from the schema: a flush only binds values. Building the
// insert with drizzle's query builder on every flush was 7-13% of the edge isolate's CPU under
// load, now about 1% (docs/benchmarks.md, issue 14); USAGE_WRITE=drizzle (local mode only) keeps
// that path as bench/usage-write.ts's baseline.
//
// `usageReport` answers GET /v1/usage from those rows: counts, errors and compute-milliseconds
// per model and version, for billing. Compute is the node's session time (compute_ms), failed
// calls that ran included (a call stopped at its deadline costs what it ran); rows without it
// (written before the column, generations) count their infer_ms.

import type { D1Database, D1PreparedStatement } from "@cloudflare/workers-types";
import { getTableColumns, sql } from "drizzle-orm";
import type { DrizzleD1Database } from "drizzle-orm/d1";
import type { SQLiteColumn } from "drizzle-orm/sqlite-core";
import { usageEvents } from "../schema/schema.js";
import { log } from "./log.js";

export const FLUSH_MS = 500;
const FLUSH_ROWS = 200;
const MAX_BUFFERED = 20_000;
/** D1 binds at most 100 parameters per statement; a row binds 17 (all its columns but the id). */
const ROWS_PER_STATEMENT = 5;

/** A row as the edge writes it: D1 numbers it; its time is the call's start (the edge's clock). */
export type UsageEvent = Omit<typeof usageEvents.$inferInsert, "id" | "createdAt"> & { createdAt: number };

/** Which writer (USAGE_WRITE): "drizzle" only as a bench's baseline. */
export type UsageWriteMode = "prepared" | "drizzle";

/** Where a row goes: the request's database and waitUntil, and the config (a Services is one). */
export interface UsageSink {
  db: DrizzleD1Database;
  config: { usageWrite: UsageWriteMode };
  waitUntil: (p: Promise<unknown>) => void;
}

let buffer: UsageEvent[] = [];
let timerArmed = false;
let flushing: Promise<void> | null = null;
let dropped = 0;
const MAX_ATTEMPTS = 3;
const attempts = new WeakMap<UsageEvent, number>();

export function recordUsage(s: UsageSink, event: UsageEvent): void {
  if (buffer.length >= MAX_BUFFERED) {
    buffer.shift();
    if (dropped++ % 1000 === 0) log("warn", event.requestId, "usage buffer full: oldest rows dropped", { dropped });
  }
  buffer.push(event);
  const write = s.config.usageWrite === "drizzle" ? writeWithDrizzle : writePrepared;
  if (buffer.length >= FLUSH_ROWS) {
    s.waitUntil(flushUsage(s.db, write));
  } else if (!timerArmed) {
    timerArmed = true;
    s.waitUntil(
      new Promise((r) => setTimeout(r, FLUSH_MS)).then(() => {
        timerArmed = false;
        return flushUsage(s.db, write);
      }),
    );
  }
}

/** Inserts `rows` as one D1 batch (one transaction). */
export type UsageWriter = (db: DrizzleD1Database, rows: UsageEvent[]) => Promise<unknown>;

/** Writes what is buffered (one flush at a time). */
export async function flushUsage(db: DrizzleD1Database, write: UsageWriter = writePrepared): Promise<void> {
  while (flushing) await flushing;
  if (buffer.length === 0) return;
  const rows = buffer.splice(0, FLUSH_ROWS * 5);
  flushing = (async () => {
    try {
      await write(db, rows);
    } catch (err) {
      // Kept for the next flush, but not forever: a batch D1 keeps refusing must not block the rows behind it.
      const again = rows.filter((r) => (attempts.get(r) ?? 0) < MAX_ATTEMPTS);
      for (const r of again) attempts.set(r, (attempts.get(r) ?? 0) + 1);
      log(again.length ? "warn" : "error", rows[0]?.requestId ?? "-", "usage rows not written", {
        rows: rows.length,
        keptForRetry: again.length,
        error: String(err).slice(0, 300),
      });
      buffer = again.concat(buffer).slice(-MAX_BUFFERED);
    }
  })();
  try {
    await flushing;
  } finally {
    flushing = null;
  }
}

/** Every column the edge binds, in the table's order (drizzle's insert order): all but the id. */
const BOUND = Object.entries(getTableColumns(usageEvents)).filter(([k]) => k !== "id") as [keyof UsageEvent, SQLiteColumn][];

/** The D1 binding under `db` (drizzle() keeps it as $client; its type leaves it out of DrizzleD1Database). */
const clientOf = (db: DrizzleD1Database): D1Database => (db as DrizzleD1Database & { $client: D1Database }).$client;

/** Per database client: the insert of 1..ROWS_PER_STATEMENT rows, prepared once (index = rows - 1). */
const prepared = new WeakMap<D1Database, D1PreparedStatement[]>();

function insertOf(db: DrizzleD1Database, n: number): D1PreparedStatement {
  const client = clientOf(db);
  let list = prepared.get(client);
  if (!list) prepared.set(client, (list = []));
  let stmt = list[n - 1];
  if (!stmt) {
    // drizzle writes the SQL, from the schema, for n rows with every bound column set: each a
    // "?" in BOUND's order; the id is left to SQLite ("null": the next rowid).
    const sample = Object.fromEntries(BOUND.map(([k]) => [k, 0])) as unknown as UsageEvent;
    stmt = list[n - 1] = client.prepare(db.insert(usageEvents).values(Array.from({ length: n }, () => sample)).toSQL().sql);
  }
  return stmt;
}

/**
 * The rows bound to the prepared inserts. A value a row leaves out is what drizzle would write:
 * the column's default (the token counts' 0), else null.
 */
export function preparedInserts(db: DrizzleD1Database, rows: readonly UsageEvent[]): D1PreparedStatement[] {
  const out: D1PreparedStatement[] = [];
  for (let i = 0; i < rows.length; i += ROWS_PER_STATEMENT) {
    const n = Math.min(ROWS_PER_STATEMENT, rows.length - i);
    const values: unknown[] = [];
    for (let r = i; r < i + n; r++) {
      const row = rows[r]!;
      for (const [k, col] of BOUND) {
        const v = row[k];
        values.push(v === undefined ? (col.default ?? null) : col.mapToDriverValue(v));
      }
    }
    out.push(insertOf(db, n).bind(...values));
  }
  return out;
}

/** The writer: the bound statements as one D1 batch, through the request's (retrying) binding. */
export const writePrepared: UsageWriter = (db, rows) => clientOf(db).batch(preparedInserts(db, rows));

/** The former writer, drizzle's query builder on every flush: USAGE_WRITE=drizzle, the bench's baseline. */
export const writeWithDrizzle: UsageWriter = (db, rows) => {
  const statements = [];
  for (let i = 0; i < rows.length; i += ROWS_PER_STATEMENT) statements.push(db.insert(usageEvents).values(rows.slice(i, i + ROWS_PER_STATEMENT)));
  return db.batch(statements as [(typeof statements)[number], ...(typeof statements)[number][]]);
};

export interface UsageRow {
  model: string;
  version: number;
  calls: number;
  /** Calls answered with a 4xx or 5xx. */
  errors: number;
  /** Of those, 5xx. */
  serverErrors: number;
  /** Sum of the nodes' session time, ms (what compute is billed on), failed calls that ran included. */
  computeMs: number;
  /** Sum of time spent queued in regions, ms. */
  queueMs: number;
  /** Mean time the edge spent before forwarding, ms. */
  meanEdgeMs: number;
  /** Shadow copies this version ran (not returned to callers); tokens: shadow generations'. */
  shadow: { calls: number; errors: number; computeMs: number; mismatches: number; promptTokens: number; completionTokens: number };
  /** Generations: prompt tokens read and tokens generated (0 for tensor calls). */
  promptTokens: number;
  completionTokens: number;
}

export async function usageReport(
  db: DrizzleD1Database,
  accountId: string,
  from: number,
  to: number,
  modelId: string | null,
): Promise<UsageRow[]> {
  const rows = await db.all<{
    model: string;
    version: number;
    shadow: number;
    calls: number;
    errors: number;
    server_errors: number;
    compute_ms: number;
    queue_ms: number;
    edge_ms: number;
    mismatches: number;
    tokens_in: number;
    tokens_out: number;
  }>(sql`
    SELECT m.name AS model, u.version AS version, (u.shadow_of IS NOT NULL) AS shadow,
           COUNT(*) AS calls,
           SUM(u.status >= 400) AS errors,
           SUM(u.status >= 500) AS server_errors,
           SUM(COALESCE(u.compute_ms, u.infer_ms)) AS compute_ms,
           SUM(u.queue_ms) AS queue_ms,
           SUM(u.edge_ms) AS edge_ms,
           SUM(u.matched = 0) AS mismatches,
           SUM(u.tokens_in) AS tokens_in,
           SUM(u.tokens_out) AS tokens_out
    FROM usage_events u JOIN models m ON m.id = u.model_id
    WHERE u.account_id = ${accountId} AND u.created_at >= ${from} AND u.created_at < ${to}
      ${modelId ? sql`AND u.model_id = ${modelId}` : sql``}
    GROUP BY u.model_id, u.version, shadow
    ORDER BY m.name, u.version DESC`);
  const out = new Map<string, UsageRow>();
  for (const r of rows) {
    const k = `${r.model}@${r.version}`;
    let row = out.get(k);
    if (!row) {
      row = { model: r.model, version: r.version, calls: 0, errors: 0, serverErrors: 0, computeMs: 0, queueMs: 0, meanEdgeMs: 0, shadow: { calls: 0, errors: 0, computeMs: 0, mismatches: 0, promptTokens: 0, completionTokens: 0 }, promptTokens: 0, completionTokens: 0 };
      out.set(k, row);
    }
    if (r.shadow) {
      row.shadow = {
        calls: r.calls,
        errors: r.errors ?? 0,
        computeMs: r.compute_ms ?? 0,
        mismatches: r.mismatches ?? 0,
        promptTokens: r.tokens_in ?? 0,
        completionTokens: r.tokens_out ?? 0,
      };
    } else {
      row.calls = r.calls;
      row.errors = r.errors ?? 0;
      row.serverErrors = r.server_errors ?? 0;
      row.computeMs = r.compute_ms ?? 0;
      row.queueMs = r.queue_ms ?? 0;
      row.meanEdgeMs = r.calls ? Math.round(((r.edge_ms ?? 0) / r.calls) * 100) / 100 : 0;
      row.promptTokens = r.tokens_in ?? 0;
      row.completionTokens = r.tokens_out ?? 0;
    }
  }
  return [...out.values()];
}
