// Models and versions as the data plane sees them: resolved by (account, name) through a short
// isolate cache, so a warm call does not touch D1. Another account's model and a missing model
// are the same answer (404), so names do not leak across accounts.

import { and, desc, eq } from "drizzle-orm";
import type { DrizzleD1Database } from "drizzle-orm/d1";
import type { ModelSignature } from "../protocol/datatypes.js";
import { MeshError } from "../protocol/errors.js";
import { aliases, modelVersions, models } from "../schema/schema.js";
import { TtlCache } from "./ttl-cache.js";

export const MODEL_CACHE_TTL_MS = 2_000;
export const MODEL_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export interface VersionInfo {
  version: number;
  sha256: string;
  size: number;
  runtime: string;
  signature: ModelSignature;
  createdAt: number;
}

export interface ModelInfo {
  id: string;
  accountId: string;
  name: string;
  createdAt: number;
  keepWarm: number;
  replicas: number | null;
  /** The only regions that may serve this model (data residency); null = any. */
  regions: string[] | null;
  /** Newest first. */
  versions: VersionInfo[];
  aliases: Record<string, number>;
}

const cache = new TtlCache<ModelInfo | null>(MODEL_CACHE_TTL_MS);

const cacheKey = (accountId: string, name: string) => `${accountId}/${name}`;

export function evictModel(accountId: string, name: string): void {
  cache.delete(cacheKey(accountId, name));
}

export async function findModel(db: DrizzleD1Database, accountId: string, name: string): Promise<ModelInfo | null> {
  if (!MODEL_NAME_RE.test(name)) return null;
  return cache.get(cacheKey(accountId, name), async () => {
    const model = await db
      .select()
      .from(models)
      .where(and(eq(models.accountId, accountId), eq(models.name, name)))
      .get();
    if (!model) return null;
    const [versions, aliasRows] = await db.batch([
      db.select().from(modelVersions).where(eq(modelVersions.modelId, model.id)).orderBy(desc(modelVersions.version)),
      db.select().from(aliases).where(eq(aliases.modelId, model.id)),
    ]);
    return {
      id: model.id,
      accountId: model.accountId,
      name: model.name,
      createdAt: model.createdAt,
      keepWarm: model.keepWarm,
      replicas: model.replicas ?? null,
      regions: model.regions ?? null,
      versions: versions.map((v) => ({
        version: v.version,
        sha256: v.sha256,
        size: v.size,
        runtime: v.runtime,
        signature: v.signature as ModelSignature,
        createdAt: v.createdAt,
      })),
      aliases: Object.fromEntries(aliasRows.map((a) => [a.name, a.version])),
    };
  });
}

export async function requireModel(db: DrizzleD1Database, accountId: string, name: string): Promise<ModelInfo> {
  const model = await findModel(db, accountId, name);
  if (!model) throw new MeshError("model_not_found", `model '${name}' not found`);
  return model;
}

/** A version number, an alias name, or `latest` (the newest version unless an alias pins it). */
export function resolveVersion(model: ModelInfo, ref: string | undefined): VersionInfo {
  const wanted = ref ?? "latest";
  let number: number | undefined;
  if (/^[0-9]+$/.test(wanted)) number = Number(wanted);
  else if (model.aliases[wanted] !== undefined) number = model.aliases[wanted];
  else if (wanted === "latest") number = model.versions[0]?.version;
  const v = number === undefined ? undefined : model.versions.find((x) => x.version === number);
  if (!v) {
    if (model.versions.length === 0) {
      throw new MeshError("version_not_found", `model '${model.name}' has no versions yet: upload one with POST /v1/models/${model.name}/versions`);
    }
    throw new MeshError("version_not_found", `model '${model.name}' has no version '${wanted}'`);
  }
  return v;
}

export function modelKey(model: ModelInfo, version: VersionInfo): string {
  return `${model.id}@${version.version}`;
}
