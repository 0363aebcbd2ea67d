// The per-request context: typed services built once by the init middleware, so handlers read
// `c.get("db")` and `c.get("config")` instead of rebuilding them, and `services(c)` hands the
// lookup layers what they need (database, config, and waitUntil for background work).
// `deadlineOf` is a call's deadline, the one rule for every route that runs on a model.

import type { DrizzleD1Database } from "drizzle-orm/d1";
import type { Context } from "hono";
import type { KeyRecord } from "./api-keys.js";
import type { EdgeConfig, Env } from "./env.js";
import type { TraceContext } from "../protocol/trace-context.js";

export interface Vars {
  requestId: string;
  startedAt: number;
  config: EdgeConfig;
  db: DrizzleD1Database;
  key: KeyRecord;
  /** The edge's span for this request, under the caller's traceparent when it sent a valid one. */
  trace: TraceContext;
}

export type AppEnv = { Bindings: Env; Variables: Vars };
export type AppContext = Context<AppEnv>;

export interface Services {
  db: DrizzleD1Database;
  config: EdgeConfig;
  waitUntil: (p: Promise<unknown>) => void;
}

/** `waitUntil` of the request, or (in-process tests, no execution context) a detached promise. */
export function waitUntilOf(c: AppContext): (p: Promise<unknown>) => void {
  let ctx: { waitUntil(p: Promise<unknown>): void } | null = null;
  try {
    ctx = c.executionCtx;
  } catch {
    ctx = null;
  }
  return ctx ? (p) => ctx.waitUntil(p) : (p) => void p.catch(() => undefined);
}

export function services(c: AppContext): Services {
  return { db: c.get("db"), config: c.get("config"), waitUntil: waitUntilOf(c) };
}

/** A call's deadline: INFER_TIMEOUT_MS after `startedAt`, or sooner when `x-mesh-timeout-ms` asks. */
export function deadlineOf(c: AppContext, startedAt: number): number {
  const max = c.get("config").inferTimeoutMs;
  const asked = Number(c.req.header("x-mesh-timeout-ms"));
  return startedAt + (Number.isFinite(asked) && asked > 0 ? Math.min(asked, max) : max);
}
