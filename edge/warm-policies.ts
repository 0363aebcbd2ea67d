// Publishes a model's keep-warm policy to Redis, where every region's router reads it: the
// floor (`keepWarm`) and the manual override (`replicas`) apply to the version `latest` resolves
// to, so an upload moves the warm replicas to the new version. Routers sign the artifact URLs
// of these loads themselves, for their own region, on the configured public origin.

import { MODEL_POLICIES_KEY, type ModelPolicyRecord } from "../protocol/region-report.js";
import type { EdgeConfig } from "./env.js";
import { modelKey, resolveVersion, type ModelInfo } from "./model-registry.js";
import { redisFor } from "./redis.js";

/** True when the routers will see the policy; false when Redis is not configured or failed. */
export async function publishWarmPolicy(config: EdgeConfig, model: ModelInfo): Promise<boolean> {
  const redis = redisFor(config);
  if (!redis) return false;
  const stale = model.versions.map((v) => modelKey(model, v));
  const active = model.keepWarm > 0 || (model.replicas !== null && model.replicas > 0);
  const latest = model.versions.length > 0 ? resolveVersion(model, "latest") : null;
  const p = redis.pipeline();
  if (active && latest) {
    const key = modelKey(model, latest);
    const record: ModelPolicyRecord = {
      keepWarm: model.keepWarm,
      replicas: model.replicas,
      account: model.accountId,
      name: model.name,
      version: latest.version,
      sha256: latest.sha256,
      size: latest.size,
      signature: latest.signature,
      artifactBase: config.publicOrigin,
      ...(latest.files ? { files: latest.files } : {}),
      regions: model.regions,
    };
    p.hset(MODEL_POLICIES_KEY, { [key]: record });
    const others = stale.filter((k) => k !== key);
    if (others.length) p.hdel(MODEL_POLICIES_KEY, ...others);
  } else if (stale.length) {
    p.hdel(MODEL_POLICIES_KEY, ...stale);
  } else {
    return true;
  }
  try {
    await p.exec();
    return true;
  } catch {
    return false;
  }
}
