// The edge's one Redis client (Upstash REST through fetch), built once per isolate from config.

import { Redis } from "@upstash/redis/cloudflare";
import type { EdgeConfig } from "./env.js";

let client: { url: string; redis: Redis } | null = null;

export function redisFor(config: EdgeConfig): Redis | null {
  if (!config.redis) return null;
  if (!client || client.url !== config.redis.url) {
    client = {
      url: config.redis.url,
      redis: new Redis({ url: config.redis.url, token: config.redis.token, enableTelemetry: false, retry: { retries: 1 } }),
    };
  }
  return client.redis;
}
