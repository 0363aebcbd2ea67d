// Usage: one row per inference call (account, key, model, version, region, node, status, and
// edge/queue/infer ms; shadow copies flagged), buffered in the isolate and written to D1 in
// batches after the answer has gone (waitUntil), so recording never slows a caller. A batch goes
// out when FLUSH_ROWS rows are waiting or FLUSH_MS after the first one. If D1 refuses a batch it
// is kept (bounded) for the next flush. The cost of batching: an isolate killed abruptly loses
// at most its last unflushed batch.
//
// `usageReport` answers GET /v1/usage from those rows: counts, errors and compute-milliseconds
// per model and version, for billing. Compute is the node's session time (compute_ms), failed
// calls that ran included (a call stopped at its deadline costs what it ran); rows without it
// (written before the column, generations) count their infer_ms.

import { sql } from "drizzle-orm";
import type { DrizzleD1Database } from "drizzle-orm/d1";
import { usageEvents } from "../schema/schema.js";
import { log } from "./log.js";

export const FLUSH_MS = 500;
const FLUSH_ROWS = 200;
const MAX_BUFFERED = 20_000;
/** D1 binds at most 100 parameters per statement; a row has 17 (with the token counts and compute). */
const ROWS_PER_STATEMENT = 5;

export type UsageEvent = typeof usageEvents.$inferInsert;

let buffer: UsageEvent[] = [];
let timerArmed = false;
let flushing: Promise<void> | null = null;
let dropped = 0;
const MAX_ATTEMPTS = 3;
const attempts = new WeakMap<UsageEvent, number>();

export function recordUsage(db: DrizzleD1Database, event: UsageEvent, waitUntil: (p: Promise<unknown>) => void): void {
  if (buffer.length >= MAX_BUFFERED) {
    buffer.shift();
    if (dropped++ % 1000 === 0) log("warn", event.requestId, "usage buffer full: oldest rows dropped", { dropped });
  }
  buffer.push(event);
  if (buffer.length >= FLUSH_ROWS) {
    waitUntil(flushUsage(db));
  } else if (!timerArmed) {
    timerArmed = true;
    waitUntil(
      new Promise((r) => setTimeout(r, FLUSH_MS)).then(() => {
        timerArmed = false;
        return flushUsage(db);
      }),
    );
  }
}

/** Writes what is buffered (one flush at a time). */
export async function flushUsage(db: DrizzleD1Database): Promise<void> {
  while (flushing) await flushing;
  if (buffer.length === 0) return;
  const rows = buffer.splice(0, FLUSH_ROWS * 5);
  flushing = (async () => {
    try {
      const statements = [];
      for (let i = 0; i < rows.length; i += ROWS_PER_STATEMENT) statements.push(db.insert(usageEvents).values(rows.slice(i, i + ROWS_PER_STATEMENT)));
      await db.batch(statements as [(typeof statements)[number], ...(typeof statements)[number][]]);
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
