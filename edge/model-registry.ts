// Models as the data plane sees them: the model, its live versions, its aliases and its traffic
// rule, read from D1 in one batch (one consistent snapshot) and cached in layers (isolate memory,
// Redis; see layered-cache.ts). So a switched alias or split applies to a call whole, never half,
// and every isolate sees it within MODEL_MAX_AGE_MS plus one reload, the same bound as a revoked
// key (REVOCATION_BOUND_MS). Another account's model and a missing model are the same answer
// (404), so names do not leak across accounts.

import { and, desc, eq, isNull } from "drizzle-orm";
import type { DrizzleD1Database } from "drizzle-orm/d1";
import type { BundleFile } from "../protocol/messages.js";
import type { ModelSignature } from "../formats/datatypes.js";
import { MeshError } from "../protocol/errors.js";
import { aliases, modelVersions, models, trafficRules } from "../schema/schema.js";
import { LayeredCache, redisLayer, type LookupContext } from "./layered-cache.js";
import { sharedStoreFor } from "./redis.js";
import { TrafficRuleSchema, bucketOf, pickSplit, type TrafficRule } from "./traffic.js";
import type { Services } from "./context.js";

export const MODEL_FRESH_MS = 750;
export const MODEL_MAX_AGE_MS = 1_500;
export const MODEL_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
/** Alias names start with a letter, so they never read as a version number. */
export const ALIAS_NAME_RE = /^[A-Za-z][A-Za-z0-9._-]{0,31}$/;

export interface VersionInfo {
  version: number;
  sha256: string;
  size: number;
  runtime: string;
  signature: ModelSignature;
  createdAt: number;
  /** A bundle's data files; absent for a single-file version. */
  files?: BundleFile[];
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
  /** Live versions, newest first (deleted ones are gone from here, their numbers never reused). */
  versions: VersionInfo[];
  aliases: Record<string, number>;
  traffic: TrafficRule | null;
}

const cache = new LayeredCache<ModelInfo>({
  positive: { freshMs: MODEL_FRESH_MS, maxAgeMs: MODEL_MAX_AGE_MS },
  maxEntries: 20_000,
});

const cacheKey = (accountId: string, name: string) => `${accountId}/${name}`;

function lookupContext(s: Services): LookupContext<ModelInfo> {
  return { shared: redisLayer<ModelInfo>(sharedStoreFor(s.config), "mesh:model:"), waitUntil: s.waitUntil };
}

/** After any change to a model: this isolate and Redis forget it now (others within the bound). */
export function evictModel(s: Services, accountId: string, name: string): Promise<void> {
  return cache.evict(cacheKey(accountId, name), lookupContext(s));
}

async function loadModel(db: DrizzleD1Database, accountId: string, name: string): Promise<ModelInfo | null> {
  const model = await db
    .select()
    .from(models)
    .where(and(eq(models.accountId, accountId), eq(models.name, name)))
    .get();
  if (!model) return null;
  // One batch is one transaction: versions, aliases and rule come from the same instant.
  const [versions, aliasRows, ruleRows] = await db.batch([
    db
      .select()
      .from(modelVersions)
      .where(and(eq(modelVersions.modelId, model.id), isNull(modelVersions.deletedAt)))
      .orderBy(desc(modelVersions.version)),
    db.select().from(aliases).where(eq(aliases.modelId, model.id)),
    db.select().from(trafficRules).where(eq(trafficRules.modelId, model.id)),
  ]);
  const parsedRule = ruleRows[0] ? TrafficRuleSchema.safeParse(ruleRows[0].rule) : null;
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
      ...(v.files ? { files: v.files } : {}),
    })),
    aliases: Object.fromEntries(aliasRows.map((a) => [a.name, a.version])),
    traffic: parsedRule?.success ? parsedRule.data : null,
  };
}

export async function findModel(s: Services, accountId: string, name: string): Promise<ModelInfo | null> {
  if (!MODEL_NAME_RE.test(name)) return null;
  return cache.get(cacheKey(accountId, name), () => loadModel(s.db, accountId, name), lookupContext(s));
}

export async function requireModel(s: Services, accountId: string, name: string): Promise<ModelInfo> {
  const model = await findModel(s, accountId, name);
  if (!model) throw new MeshError("model_not_found", `model '${name}' not found`);
  return model;
}

/** A version number, an alias name, or `latest` (the newest version unless an alias `latest` pins it). */
export function resolveVersion(model: ModelInfo, ref: string | undefined): VersionInfo {
  const wanted = ref ?? "latest";
  let number: number | undefined;
  if (/^[0-9]{1,10}$/.test(wanted)) number = Number(wanted);
  else if (model.aliases[wanted] !== undefined) number = model.aliases[wanted];
  else if (wanted === "latest") number = model.versions[0]?.version;
  const v = number === undefined ? undefined : model.versions.find((x) => x.version === number);
  if (!v) {
    if (model.versions.length === 0) {
      throw new MeshError("version_not_found", `model '${model.name}' has no versions yet: upload one with POST /v1/models/${model.name}/versions`);
    }
    throw new MeshError("version_not_found", `model '${model.name}' has no version '${wanted.slice(0, 64)}'`);
  }
  return v;
}

export interface Routed {
  version: VersionInfo;
  /** How the version was chosen: named by the caller, by the split, or `latest`. */
  via: "named" | "split" | "latest";
}

/**
 * The version a call runs on. A call that names a version (number, alias or `latest`) gets
 * exactly that; a call that names none follows the model's split when it has one, else `latest`.
 */
export function routeVersion(model: ModelInfo, ref: string | undefined, sticky: string | null, random: () => number = Math.random): Routed {
  if (ref !== undefined) return { version: resolveVersion(model, ref), via: "named" };
  const split = model.traffic?.split;
  if (split) {
    const number = pickSplit(split, bucketOf(model.id, sticky, random));
    const v = model.versions.find((x) => x.version === number);
    // Versions in a rule cannot be deleted (409), so this holds; if it ever does not, `latest`.
    if (v) return { version: v, via: "split" };
  }
  return { version: resolveVersion(model, "latest"), via: "latest" };
}

export function modelKey(model: ModelInfo, version: VersionInfo): string {
  return `${model.id}@${version.version}`;
}
