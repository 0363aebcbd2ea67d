// Reads the keep-warm policies the edge writes to Redis (PUT /v1/models/{m} {"keepWarm", ...})
// so the warm policy can hold a model warm before any call for it reaches this region. Each read
// is bounded (routerRedis) and skipped while the last is still in flight (startPeriodic).
// The artifact URLs of those loads are made here, as the edge makes those of calls
// (edge/download-urls.ts): presigned R2 URLs when this router has R2 credentials, else edge
// URLs signed with this region's secret.

import type { OipDatatype } from "../formats/datatypes.js";
import type { Logger } from "../protocol/log.js";
import { MODEL_POLICIES_KEY, type ModelPolicyRecord } from "../protocol/region-report.js";
import { artifactKey, presignObject, type R2PresignConfig } from "../protocol/presign.js";
import { artifactUrl } from "../protocol/signing.js";
import { routerRedis, startPeriodic, type RedisConfig } from "./redis-client.js";
import type { Scheduler } from "./scheduler.js";

/** As the edge's (DOWNLOAD_URL_TTL_MS): long enough for a large download and its resumes. */
const URL_TTL_MS = 60 * 60_000;

/** What the reader needs of a Redis client (tests pass a fake). */
export interface PolicyStore {
  hgetall<T extends Record<string, unknown>>(key: string): Promise<T | null>;
}

export function startPolicyReader(
  region: string,
  redis: RedisConfig | PolicyStore,
  secret: string,
  intervalMs: number,
  scheduler: Scheduler,
  log: Logger,
  r2: R2PresignConfig | null = null,
): { stop(): void; readNow(): Promise<void>; readonly skipped: number } {
  const client: PolicyStore = "hgetall" in redis ? redis : routerRedis(redis);
  // Edge URLs are signed for this region with its own secret: the edge serves them to this region's nodes only.
  const urlFor = (artifactBase: string, sha256: string) =>
    r2 ? presignObject(r2, artifactKey(sha256), URL_TTL_MS / 1000) : artifactUrl(secret, artifactBase, region, sha256, Date.now() + URL_TTL_MS);
  let failing = false;
  const read = async () => {
    try {
      const all = (await client.hgetall<Record<string, ModelPolicyRecord>>(MODEL_POLICIES_KEY)) ?? {};
      const seen = new Set<string>();
      for (const [key, p] of Object.entries(all)) {
        if (!p || typeof p !== "object" || typeof p.sha256 !== "string") continue;
        // Data residency: a model restricted to other regions is never held warm here.
        if (Array.isArray(p.regions) && !p.regions.includes(region)) continue;
        seen.add(key);
        const url = await urlFor(p.artifactBase, p.sha256);
        // A bundle's data files are stored like artifacts, by sha256: each gets its own URL.
        const files = Array.isArray(p.files) ? await Promise.all(p.files.map(async (f) => ({ ...f, url: await urlFor(p.artifactBase, f.sha256) }))) : undefined;
        scheduler.policies.set(key, {
          keepWarm: Math.max(0, Math.floor(Number(p.keepWarm) || 0)),
          replicas: p.replicas === null || p.replicas === undefined ? null : Math.max(0, Math.floor(Number(p.replicas))),
          ref: {
            key,
            account: p.account,
            name: p.name,
            version: p.version,
            sha256: p.sha256,
            size: p.size,
            artifactUrl: url,
            ...(files ? { files } : {}),
            signature: p.signature as { inputs: { name: string; datatype: OipDatatype; shape: number[] }[]; outputs: { name: string; datatype: OipDatatype; shape: number[] }[] },
          },
        });
      }
      for (const key of [...scheduler.policies.keys()]) if (!seen.has(key)) scheduler.policies.delete(key);
      failing = false;
    } catch (err) {
      if (!failing) log("warn", "keep-warm policies unavailable; keeping the last ones", { error: String(err) });
      failing = true;
    }
  };
  const loop = startPeriodic(read, intervalMs);
  void loop.runNow();
  return {
    stop: () => void loop.stop(),
    readNow: () => loop.runNow(),
    get skipped() {
      return loop.skipped;
    },
  };
}
