// The per-request context: typed services built once by the init middleware, so handlers read
// `c.get("db")` and `c.get("config")` instead of rebuilding them.

import type { DrizzleD1Database } from "drizzle-orm/d1";
import type { Context } from "hono";
import type { KeyRecord } from "./api-keys.js";
import type { EdgeConfig, Env } from "./env.js";

export interface Vars {
  requestId: string;
  startedAt: number;
  config: EdgeConfig;
  db: DrizzleD1Database;
  key: KeyRecord;
}

export type AppEnv = { Bindings: Env; Variables: Vars };
export type AppContext = Context<AppEnv>;
