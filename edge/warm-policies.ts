// Publishes a model's keep-warm policy to Redis, where every region's router reads it: the
// floor (`keepWarm`) and the manual override (`replicas`) apply to the version `latest` resolves
// to, so an upload moves the warm replicas to the new version. Routers sign the artifact URLs
// of these loads themselves, for their own region, on the configured public origin.
// `setWarmPolicy` is PUT /v1/models/{m}: the policy (and data residency) stored, then published.

import { eq } from "drizzle-orm";
import { MeshError } from "../protocol/errors.js";
import { MODEL_POLICIES_KEY, type ModelPolicyRecord } from "../protocol/region-report.js";
import { models } from "../schema/schema.js";
import type { Services } from "./context.js";
import type { EdgeConfig } from "./env.js";
import { evictModel, modelKey, requireModel, resolveVersion, type ModelInfo } from "./model-registry.js";
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

/** A model's warm policy and data residency as PUT /v1/models/{m} changes them (absent: unchanged). */
export interface WarmPolicyUpdate {
  /** A floor of replicas per region. */
  keepWarm?: number;
  /** Pins the count; null hands it back to traffic. */
  replicas?: number | null;
  /** The only regions that may serve the model (known ones); null: any. */
  regions?: string[] | null;
}

/** Stores `update` on the model, then publishes the model's policy to the routers; answers the model as it is now and whether they were told. */
export async function setWarmPolicy(s: Services, model: ModelInfo, update: WarmPolicyUpdate): Promise<{ model: ModelInfo; published: boolean }> {
  const set: WarmPolicyUpdate = {};
  if (update.keepWarm !== undefined) set.keepWarm = update.keepWarm;
  if (update.replicas !== undefined) set.replicas = update.replicas;
  if (update.regions !== undefined) {
    const known = s.config.regions.map((r) => r.name);
    const r = update.regions;
    if (r !== null && !r.every((x) => known.includes(x))) {
      throw new MeshError("bad_request", `'regions' must be null or a non-empty list of: ${known.join(", ")}`);
    }
    set.regions = r === null ? null : [...new Set(r)];
  }
  await s.db.update(models).set(set).where(eq(models.id, model.id));
  await evictModel(s, model.accountId, model.name);
  const fresh = await requireModel(s, model.accountId, model.name);
  return { model: fresh, published: await publishWarmPolicy(s.config, fresh) };
}
