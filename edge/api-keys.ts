// API keys: random bytes behind a readable prefix, stored only as sha256, looked up by hash
// through a short-lived isolate cache. KEY_CACHE_TTL_MS is the revocation bound for isolates
// other than the one that revoked the key (which evicts at once).

import { and, eq, isNull } from "drizzle-orm";
import type { DrizzleD1Database } from "drizzle-orm/d1";
import { sha256Hex } from "../protocol/signing.js";
import { apiKeys } from "../schema/schema.js";
import { TtlCache } from "./ttl-cache.js";

export const KEY_PREFIX = "mesh_";
export const KEY_CACHE_TTL_MS = 2_000;
export const SCOPES = ["infer", "manage"] as const;
export type Scope = (typeof SCOPES)[number];

export interface KeyRecord {
  id: string;
  accountId: string;
  scopes: string[];
}

const cache = new TtlCache<KeyRecord | null>(KEY_CACHE_TTL_MS);

function base62(bytes: Uint8Array): string {
  const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
  let s = "";
  for (const b of bytes) s += alphabet[b % 62];
  return s;
}

export function randomId(prefix: string, bytes = 12): string {
  return prefix + base62(crypto.getRandomValues(new Uint8Array(bytes)));
}

/** A new key: 32 random base62 characters (~190 bits) after the prefix. */
export async function newApiKey(): Promise<{ key: string; hash: string; start: string }> {
  const key = KEY_PREFIX + base62(crypto.getRandomValues(new Uint8Array(32)));
  return { key, hash: await sha256Hex(key), start: key.slice(0, KEY_PREFIX.length + 6) };
}

export async function findKey(db: DrizzleD1Database, key: string): Promise<KeyRecord | null> {
  // Keys that cannot be ours are refused without a lookup (and without caching junk).
  if (!key.startsWith(KEY_PREFIX) || key.length > 128) return null;
  const hash = await sha256Hex(key);
  return cache.get(hash, async () => {
    const row = await db
      .select({ id: apiKeys.id, accountId: apiKeys.accountId, scopes: apiKeys.scopes })
      .from(apiKeys)
      .where(and(eq(apiKeys.hash, hash), isNull(apiKeys.revokedAt)))
      .get();
    return row ?? null;
  });
}

export function evictKeyHash(hash: string): void {
  cache.delete(hash);
}
