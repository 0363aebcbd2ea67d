// The edge's Redis clients (Upstash REST through fetch), built once per isolate from config.
//
// `redisFor` is the general client (one retry, REDIS_TIMEOUT_MS per request, both attempts
// included). `sharedStoreFor` is for the call path's shared layers (key and model cache, rate
// limiter, quota counters): no retry, a short per-request timeout, and a breaker that skips
// Redis for a while after a failure, so an unreachable Redis costs a call at most one timeout
// per breaker window instead of one per lookup.
//
// Every request of both clients is bounded: a Redis that accepts the connection and never
// answers must not hold a caller (or the region-state refresh) forever. The timeout is a signal
// *function*, so each request gets a fresh one and the client throws when it fires, which every
// caller already treats as Redis unreachable (a fixed signal would make the client answer the
// string "Aborted" as if it were the result).

import { Redis } from "@upstash/redis/cloudflare";
import type { EdgeConfig } from "./env.js";

/** How long one general Redis request (region reports, latency lists, keep-warm policies) may take. */
export const REDIS_TIMEOUT_MS = 2_000;

let client: { url: string; redis: Redis } | null = null;

export function redisFor(config: EdgeConfig): Redis | null {
  if (!config.redis) return null;
  if (!client || client.url !== config.redis.url) {
    client = {
      url: config.redis.url,
      redis: new Redis({
        url: config.redis.url,
        token: config.redis.token,
        enableTelemetry: false,
        retry: { retries: 1 },
        signal: () => AbortSignal.timeout(REDIS_TIMEOUT_MS),
      }),
    };
  }
  return client.redis;
}

/** How long one shared-store request may take before the caller moves on without it. */
export const SHARED_STORE_TIMEOUT_MS = 250;
/** After a failure, the shared store is skipped this long (then tried again by one request). */
export const SHARED_STORE_BREAKER_MS = 1_000;

export interface SharedStore {
  redis: Redis;
  /** False while the breaker is open: callers skip Redis and use their fallback. */
  available(now?: number): boolean;
  /** Runs a Redis operation; a failure opens the breaker and is rethrown. */
  run<T>(op: (redis: Redis) => Promise<T>): Promise<T>;
}

let shared: { url: string; store: SharedStore } | null = null;

export function sharedStoreFor(config: EdgeConfig): SharedStore | null {
  if (!config.redis) return null;
  if (!shared || shared.url !== config.redis.url) {
    const redis = new Redis({
      url: config.redis.url,
      token: config.redis.token,
      enableTelemetry: false,
      retry: { retries: 0 },
      // A function: a fresh timeout per request (the client aborts and throws).
      signal: () => AbortSignal.timeout(SHARED_STORE_TIMEOUT_MS),
      // Read-your-writes tokens are a per-client header shared by concurrent requests; there is
      // nothing here that needs them.
      readYourWrites: false,
    });
    let openUntil = 0;
    const store: SharedStore = {
      redis,
      available: (now = Date.now()) => now >= openUntil,
      async run(op) {
        try {
          return await op(redis);
        } catch (err) {
          openUntil = Date.now() + SHARED_STORE_BREAKER_MS;
          throw err;
        }
      },
    };
    shared = { url: config.redis.url, store };
  }
  return shared.store;
}
