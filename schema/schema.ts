// The control plane's tables in D1 (SQLite), through drizzle. Migrations in schema/migrations
// are generated from this file (`npm run db:generate`) and applied by the launcher and the tests.

import { sql } from "drizzle-orm";
import { index, integer, primaryKey, sqliteTable, text, uniqueIndex } from "drizzle-orm/sqlite-core";

const createdAt = () =>
  integer("created_at", { mode: "number" })
    .notNull()
    .default(sql`(unixepoch('subsec') * 1000)`);

export const accounts = sqliteTable("accounts", {
  id: text("id").primaryKey(),
  name: text("name").notNull(),
  /** Requests per calendar month (UTC) over all keys; null = no quota. Set by the operator. */
  monthlyRequestQuota: integer("monthly_request_quota"),
  /** Per-key rate limit for this account's keys (requests/s, burst); null = the edge default. */
  ratePerSecond: integer("rate_per_second"),
  rateBurst: integer("rate_burst"),
  createdAt: createdAt(),
});

export const apiKeys = sqliteTable(
  "api_keys",
  {
    id: text("id").primaryKey(),
    accountId: text("account_id")
      .notNull()
      .references(() => accounts.id),
    name: text("name").notNull().default(""),
    /** sha256 of the whole key, hex; the plaintext is shown once and never stored. */
    hash: text("hash").notNull(),
    /** The readable prefix plus a few characters, for telling keys apart in lists. */
    start: text("start").notNull(),
    /** JSON array of scopes: "infer", "manage". */
    scopes: text("scopes", { mode: "json" }).$type<string[]>().notNull(),
    /** A tighter rate limit for this key than its account's (null = the account's). */
    ratePerSecond: integer("rate_per_second"),
    rateBurst: integer("rate_burst"),
    createdAt: createdAt(),
    revokedAt: integer("revoked_at", { mode: "number" }),
  },
  (t) => [uniqueIndex("api_keys_hash_idx").on(t.hash), index("api_keys_account_idx").on(t.accountId)],
);

export const models = sqliteTable(
  "models",
  {
    id: text("id").primaryKey(),
    accountId: text("account_id")
      .notNull()
      .references(() => accounts.id),
    name: text("name").notNull(),
    /** Replicas held warm per region whatever the traffic (the keep-warm floor). */
    keepWarm: integer("keep_warm").notNull().default(0),
    /** Manual override: exactly this many replicas per region; null lets traffic decide. */
    replicas: integer("replicas"),
    /** Data residency: JSON list of the only regions that may serve the model; null = any. */
    regions: text("regions", { mode: "json" }).$type<string[]>(),
    createdAt: createdAt(),
  },
  (t) => [uniqueIndex("models_account_name_idx").on(t.accountId, t.name)],
);

export interface SignatureJson {
  inputs: { name: string; datatype: string; shape: number[] }[];
  outputs: { name: string; datatype: string; shape: number[] }[];
}

export const modelVersions = sqliteTable(
  "model_versions",
  {
    id: text("id").primaryKey(),
    modelId: text("model_id")
      .notNull()
      .references(() => models.id),
    version: integer("version").notNull(),
    sha256: text("sha256").notNull(),
    size: integer("size").notNull(),
    runtime: text("runtime").notNull().default("onnx"),
    signature: text("signature", { mode: "json" }).$type<SignatureJson>().notNull(),
    createdAt: createdAt(),
    /** Deleted versions keep their row, so a version number is never reused. */
    deletedAt: integer("deleted_at", { mode: "number" }),
    /** Generative models: sha256 of the version's tokenizer.json (in R2 by hash); set once. */
    tokenizerSha256: text("tokenizer_sha256"),
    tokenizerSize: integer("tokenizer_size"),
    /**
     * A bundle's data files (ONNX external data), each written next to the graph under its name
     * on the node; null for a single-file version. The bytes are in R2 by sha256 like artifacts.
     */
    files: text("files", { mode: "json" }).$type<{ name: string; sha256: string; size: number }[]>(),
  },
  (t) => [uniqueIndex("model_versions_model_version_idx").on(t.modelId, t.version)],
);

export const aliases = sqliteTable(
  "aliases",
  {
    modelId: text("model_id")
      .notNull()
      .references(() => models.id),
    name: text("name").notNull(),
    version: integer("version").notNull(),
    updatedAt: integer("updated_at", { mode: "number" }).notNull(),
  },
  (t) => [primaryKey({ columns: [t.modelId, t.name] })],
);

export const trafficRules = sqliteTable("traffic_rules", {
  modelId: text("model_id")
    .primaryKey()
    .references(() => models.id),
  /** JSON: weighted split and shadow copies over versions. */
  rule: text("rule", { mode: "json" }).notNull(),
  updatedAt: integer("updated_at", { mode: "number" }).notNull(),
});

export const usageEvents = sqliteTable(
  "usage_events",
  {
    id: integer("id").primaryKey({ autoIncrement: true }),
    requestId: text("request_id").notNull(),
    accountId: text("account_id").notNull(),
    keyId: text("key_id").notNull(),
    modelId: text("model_id").notNull(),
    version: integer("version").notNull(),
    region: text("region"),
    node: text("node"),
    status: integer("status").notNull(),
    edgeMs: integer("edge_ms").notNull(),
    queueMs: integer("queue_ms").notNull(),
    inferMs: integer("infer_ms").notNull(),
    /**
     * Session time the node spent on the call, ms rounded up: what compute is billed on, a call
     * stopped at its deadline or failed in the runtime included. Null on rows written before it
     * existed and on generations (their infer_ms is what they cost).
     */
    computeMs: integer("compute_ms"),
    /** For a shadow copy: the version whose call it shadowed (null for a caller's call). */
    shadowOf: integer("shadow_of"),
    /** For a shadow copy: 1 when its outputs matched the served call's, 0 when not, null unknown. */
    matched: integer("matched"),
    /** Generations: prompt tokens read and tokens generated (0 for tensor calls). */
    tokensIn: integer("tokens_in").notNull().default(0),
    tokensOut: integer("tokens_out").notNull().default(0),
    createdAt: createdAt(),
  },
  (t) => [
    index("usage_account_model_time_idx").on(t.accountId, t.modelId, t.createdAt),
    index("usage_account_time_idx").on(t.accountId, t.createdAt),
  ],
);
