// API keys: random bytes behind a readable prefix and a checksum, stored only as sha256 (unique
// index), with a short `start` kept for display. A key is checked in three layers (this
// isolate's memory, Redis, D1; see layered-cache.ts), with stale-while-revalidate, de-duplicated
// loads, and "not found" cached too.
//
// The revocation bound: a key revoked at time T is refused by every isolate for every call that
// starts after T + REVOCATION_BOUND_MS. Enforced by the cache's age rule (no key decision rests
// on a D1 read older than KEY_MAX_AGE_MS), not by eviction messages that could be lost; the
// isolate that revokes evicts at once, and so does Redis, which makes it quicker in practice.
//
// The key format (prefix, random body, checksum) is in key-format.ts.

import { eq, sql } from "drizzle-orm";
import type { DrizzleD1Database } from "drizzle-orm/d1";
import { equalDigests, sha256Hex } from "../protocol/signing.js";
import { accounts, apiKeys } from "../schema/schema.js";
import { plausibleKey } from "./key-format.js";
import { LayeredCache, redisLayer, type LookupContext } from "./layered-cache.js";
import type { RateLimit } from "./rate-limit.js";
import { sharedStoreFor } from "./redis.js";
import type { Services } from "./context.js";

export { KEY_PREFIX, newApiKey, plausibleKey, randomId } from "./key-format.js";
export type { RateLimit } from "./rate-limit.js";

/** The documented bound: a revoked key is refused everywhere for calls starting this long after. */
export const REVOCATION_BOUND_MS = 2_000;
/** Key records are never served older than this; the rest of the bound covers the reload itself. */
export const KEY_MAX_AGE_MS = 1_500;
/** Younger than this, a key check does no I/O; older (up to the max age), it revalidates in the background. */
export const KEY_FRESH_MS = 750;
/** Unknown and revoked keys: both stay that way, so "no" is kept longer. */
export const KEY_NEGATIVE_FRESH_MS = 30_000;
export const KEY_NEGATIVE_MAX_AGE_MS = 60_000;

export const SCOPES = ["infer", "manage"] as const;
export type Scope = (typeof SCOPES)[number];

export interface KeyRecord {
  id: string;
  accountId: string;
  scopes: string[];
  /** sha256 of the key, compared in constant time against the presented key's hash. */
  hash: string;
  /** The key's own limit, an extra bucket on top of its account's (so only ever tighter); null = none. */
  rateLimit: RateLimit | null;
  /** The account's limit, one bucket shared by all its keys; null = the edge default. */
  accountRateLimit: RateLimit | null;
  /** The account's monthly request quota; null = none. */
  monthlyQuota: number | null;
}

const cache = new LayeredCache<KeyRecord>({
  positive: { freshMs: KEY_FRESH_MS, maxAgeMs: KEY_MAX_AGE_MS },
  negative: { freshMs: KEY_NEGATIVE_FRESH_MS, maxAgeMs: KEY_NEGATIVE_MAX_AGE_MS },
  maxEntries: 50_000,
});

function lookupContext(s: Services): LookupContext<KeyRecord> {
  return { shared: redisLayer<KeyRecord>(sharedStoreFor(s.config), "mesh:key:"), waitUntil: s.waitUntil };
}

/** The key's row query, built and prepared once per database (a reload binds the hash only). */
function keyQuery(db: DrizzleD1Database) {
  return db
    .select({
      id: apiKeys.id,
      accountId: apiKeys.accountId,
      scopes: apiKeys.scopes,
      hash: apiKeys.hash,
      revokedAt: apiKeys.revokedAt,
      keyRate: apiKeys.ratePerSecond,
      keyBurst: apiKeys.rateBurst,
      accountRate: accounts.ratePerSecond,
      accountBurst: accounts.rateBurst,
      monthlyQuota: accounts.monthlyRequestQuota,
    })
    .from(apiKeys)
    .innerJoin(accounts, eq(accounts.id, apiKeys.accountId))
    .where(eq(apiKeys.hash, sql.placeholder("hash")))
    .prepare();
}

const keyQueries = new WeakMap<DrizzleD1Database, ReturnType<typeof keyQuery>>();

async function loadKey(db: DrizzleD1Database, hash: string): Promise<KeyRecord | null> {
  let query = keyQueries.get(db);
  if (!query) keyQueries.set(db, (query = keyQuery(db)));
  const row = await query.get({ hash });
  // A revoked key is cached as "no", like an unknown one: revocation is final.
  if (!row || row.revokedAt !== null) return null;
  const limit = (perSecond: number | null, burst: number | null): RateLimit | null =>
    perSecond !== null && burst !== null ? { perSecond, burst } : null;
  return {
    id: row.id,
    accountId: row.accountId,
    scopes: row.scopes,
    hash: row.hash,
    rateLimit: limit(row.keyRate, row.keyBurst),
    accountRateLimit: limit(row.accountRate, row.accountBurst),
    monthlyQuota: row.monthlyQuota ?? null,
  };
}

/** The key's record, or null for anything that is not a live key of ours. */
export async function verifyKey(s: Services, key: string): Promise<KeyRecord | null> {
  // Keys that cannot be ours are refused without a lookup (and without caching junk).
  if (!(await plausibleKey(key))) return null;
  const hash = await sha256Hex(key);
  const record = await cache.get(hash, () => loadKey(s.db, hash), lookupContext(s));
  // The lookup was by hash; compare it again in constant time, so nothing about the answer
  // depends on how much of a presented key matched a stored one. Both are 64 hex characters,
  // so an XOR loop does it without hashing both sides again as Hono's timingSafeEqual does.
  if (!record || !equalDigests(record.hash, hash)) return null;
  return record;
}

/** After a revocation (or a change to a key's limits): this isolate and Redis forget it now. */
export function evictKey(s: Services, hash: string): Promise<void> {
  return cache.evict(hash, lookupContext(s));
}
