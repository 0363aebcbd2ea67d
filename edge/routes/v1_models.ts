// Models and versions of the caller's account: create a model, upload a version as raw ONNX
// bytes (the graph's inputs and outputs are read from the file; anything that is not ONNX is
// refused), list and show them, set the warm policy, and delete a version (refused while an
// alias or a traffic rule names it). Versions are immutable and their numbers never reused.

import { and, desc, eq, isNull, sql } from "drizzle-orm";
import type { Hono } from "hono";
import { z } from "zod";
import { MeshError } from "../../protocol/errors.js";
import { checkExternalData, OnnxParseError, readOnnxSignature } from "../../protocol/onnx-signature.js";
import { sha256Hex } from "../../protocol/signing.js";
import { models, modelVersions } from "../../schema/schema.js";
import { randomId } from "../api-keys.js";
import { services, type AppContext, type AppEnv } from "../context.js";
import { limitBody, parseBody, requireKey } from "../middleware.js";
import { evictModel, MODEL_NAME_RE, requireModel, type ModelInfo } from "../model-registry.js";
import { describeRoute } from "../openapi.js";
import { ruleVersions } from "../traffic.js";
import { publishWarmPolicy } from "../warm-policies.js";
import { log } from "../log.js";

export const MAX_MODEL_BYTES = 100 * 1024 * 1024;
const MAX_REPLICAS = 16;
/** The files uploaded alongside a single-file version: none. */
const NO_BUNDLE_FILES: ReadonlySet<string> = new Set();

export function artifactKey(sha256: string): string {
  return `artifacts/${sha256}.onnx`;
}

export function describe(model: ModelInfo) {
  return {
    id: model.id,
    name: model.name,
    createdAt: model.createdAt,
    keepWarm: model.keepWarm,
    replicas: model.replicas,
    regions: model.regions,
    latestVersion: model.versions[0]?.version ?? null,
    aliases: model.aliases,
    traffic: model.traffic,
    versions: model.versions.map((v) => ({
      version: v.version,
      sha256: v.sha256,
      size: v.size,
      runtime: v.runtime,
      inputs: v.signature.inputs,
      outputs: v.signature.outputs,
      createdAt: v.createdAt,
    })),
  };
}

/** After a change that may move `latest`: the warm replicas follow it (in the background). */
export async function republishWarmPolicy(c: AppContext, accountId: string, name: string): Promise<void> {
  const fresh = await requireModel(services(c), accountId, name);
  if (fresh.keepWarm > 0 || fresh.replicas !== null) c.executionCtx.waitUntil(publishWarmPolicy(c.get("config"), fresh));
}

const ModelNameSchema = z
  .string()
  .regex(MODEL_NAME_RE, "must be 1-64 characters of letters, digits, '.', '_' or '-', starting with a letter or digit");

const CreateModelSchema = z.object({ name: ModelNameSchema }).strict();

const WarmPolicySchema = z
  .object({
    keepWarm: z.number().int().min(0).max(MAX_REPLICAS).optional().describe("Replicas held warm per region whatever the traffic."),
    replicas: z.number().int().min(0).max(MAX_REPLICAS).nullable().optional().describe("Exactly this many per region; null hands it back to traffic."),
    regions: z.array(z.string()).min(1).nullable().optional().describe("Data residency: the only regions that may serve the model; null: any."),
  })
  .strict()
  .refine((b) => Object.keys(b).length > 0, "send 'keepWarm', 'replicas' and/or 'regions'");

const TensorSpecSchema = z.object({ name: z.string(), datatype: z.string(), shape: z.array(z.number().int()) });
const VersionSchema = z.object({
  version: z.number().int(),
  sha256: z.string(),
  size: z.number().int(),
  runtime: z.string(),
  inputs: z.array(TensorSpecSchema),
  outputs: z.array(TensorSpecSchema),
  createdAt: z.number(),
});
export const ModelSchema = z.object({
  id: z.string(),
  name: z.string(),
  createdAt: z.number(),
  keepWarm: z.number(),
  replicas: z.number().nullable(),
  regions: z.array(z.string()).nullable(),
  latestVersion: z.number().nullable().describe("What `latest` resolves to (an alias named `latest` pins it)."),
  aliases: z.record(z.string(), z.number()),
  traffic: z.unknown().nullable().describe("The traffic rule (see PUT /v1/models/{m}/traffic), or null."),
  versions: z.array(VersionSchema).describe("Live versions, newest first."),
});

export function registerV1Models(app: Hono<AppEnv>): void {
  const manage = requireKey("manage");

  app.post("/v1/models", manage, limitBody(16 * 1024), async (c) => {
    const body = await parseBody(c, CreateModelSchema);
    const accountId = c.get("key").accountId;
    const id = randomId("mdl_");
    const inserted = await c
      .get("db")
      .insert(models)
      .values({ id, accountId, name: body.name })
      .onConflictDoNothing()
      .returning({ id: models.id })
      .get();
    if (!inserted) throw new MeshError("conflict", `model '${body.name}' already exists`);
    await evictModel(services(c), accountId, body.name);
    return c.json({ id, name: body.name }, 201);
  });

  app.get("/v1/models", manage, async (c) => {
    const db = c.get("db");
    const rows = await db
      .select({
        id: models.id,
        name: models.name,
        createdAt: models.createdAt,
        latestVersion: sql<number | null>`(select max(${modelVersions.version}) from ${modelVersions} where ${modelVersions.modelId} = ${models.id})`,
      })
      .from(models)
      .where(eq(models.accountId, c.get("key").accountId))
      .orderBy(desc(models.createdAt));
    return c.json({ models: rows });
  });

  app.get("/v1/models/:m", manage, async (c) => {
    const model = await requireModel(services(c), c.get("key").accountId, c.req.param("m"));
    return c.json(describe(model));
  });

  // Warm policy: {"keepWarm": n} is a floor of replicas per region; {"replicas": n} pins the
  // count (null hands it back to traffic). Stored in D1, then published to the routers.
  // Data residency: {"regions": [...]} restricts the model to those regions (null: any).
  app.put("/v1/models/:m", manage, limitBody(16 * 1024), async (c) => {
    const accountId = c.get("key").accountId;
    const db = c.get("db");
    const s = services(c);
    const model = await requireModel(s, accountId, c.req.param("m"));
    const body = await parseBody(c, WarmPolicySchema);
    const update: { keepWarm?: number; replicas?: number | null; regions?: string[] | null } = {};
    if (body.keepWarm !== undefined) update.keepWarm = body.keepWarm;
    if (body.replicas !== undefined) update.replicas = body.replicas;
    if (body.regions !== undefined) {
      const known = c.get("config").regions.map((r) => r.name);
      const r = body.regions;
      if (r !== null && !r.every((x) => known.includes(x))) {
        throw new MeshError("bad_request", `'regions' must be null or a non-empty list of: ${known.join(", ")}`);
      }
      update.regions = r === null ? null : [...new Set(r)];
    }
    await db.update(models).set(update).where(eq(models.id, model.id));
    await evictModel(s, accountId, model.name);
    const fresh = await requireModel(s, accountId, model.name);
    const applied = await publishWarmPolicy(c.get("config"), fresh);
    if (!applied) log("warn", c.get("requestId"), "warm policy stored but not published", { model: model.name });
    return c.json({ ...describe(fresh), policyPublished: applied });
  });

  app.post("/v1/models/:m/versions", manage, limitBody(MAX_MODEL_BYTES), async (c) => {
    const accountId = c.get("key").accountId;
    const model = await requireModel(services(c), accountId, c.req.param("m"));
    const type = (c.req.header("content-type") ?? "").split(";")[0]!.trim().toLowerCase();
    if (type !== "application/octet-stream") {
      throw new MeshError("unsupported_media_type", "upload the .onnx file as the raw body with 'Content-Type: application/octet-stream'");
    }
    const bytes = new Uint8Array(await c.req.arrayBuffer());
    if (bytes.length === 0) throw new MeshError("invalid_model_file", "the body is empty: send the .onnx file's bytes");
    let info;
    try {
      info = readOnnxSignature(bytes);
      // A tenant's file must not read other files on the node (another version's, another
      // account's): a single-file upload brings no files of its own, so it may name none.
      // Bundles (issue 11) will pass the names of the files uploaded with the version.
      checkExternalData(info, NO_BUNDLE_FILES);
    } catch (err) {
      if (err instanceof OnnxParseError) throw new MeshError("invalid_model_file", err.message);
      throw err;
    }
    const sha256 = await sha256Hex(bytes);
    // Content-addressed: the artifact is stored before the version row exists, so a version
    // never points at missing bytes; a failed insert leaves at most an unreferenced object.
    await c.env.ARTIFACTS.put(artifactKey(sha256), bytes, { sha256, httpMetadata: { contentType: "application/octet-stream" } });
    const signature = { inputs: info.inputs, outputs: info.outputs };
    // One statement picks the next number and inserts it, so concurrent uploads cannot collide.
    const row = await c.env.DB.prepare(
      `INSERT INTO model_versions (id, model_id, version, sha256, size, runtime, signature)
       SELECT ?1, ?2, COALESCE(MAX(version), 0) + 1, ?3, ?4, 'onnx', ?5 FROM model_versions WHERE model_id = ?2
       RETURNING version, created_at`,
    )
      .bind(randomId("ver_"), model.id, sha256, bytes.length, JSON.stringify(signature))
      .first<{ version: number; created_at: number }>();
    if (!row) throw new MeshError("internal_error", "the version was not recorded");
    await evictModel(services(c), accountId, model.name);
    // `latest` moved: the warm replicas follow it.
    if (model.keepWarm > 0 || model.replicas !== null) await republishWarmPolicy(c, accountId, model.name);
    return c.json(
      {
        model: model.name,
        version: row.version,
        sha256,
        size: bytes.length,
        runtime: "onnx",
        irVersion: info.irVersion,
        opsetVersion: info.opsetVersion,
        inputs: info.inputs,
        outputs: info.outputs,
        createdAt: row.created_at,
      },
      201,
    );
  });

  // Deleting a version: one statement that only deletes when no alias and no traffic rule names
  // the version, so a concurrent alias switch or rule change cannot slip between check and delete.
  app.delete("/v1/models/:m/versions/:v", manage, async (c) => {
    const accountId = c.get("key").accountId;
    const s = services(c);
    const model = await requireModel(s, accountId, c.req.param("m"));
    const ref = c.req.param("v");
    if (!/^[0-9]{1,10}$/.test(ref)) throw new MeshError("bad_request", "name the version to delete by its number");
    const version = Number(ref);
    const deleted = await c.env.DB.prepare(
      `UPDATE model_versions SET deleted_at = ?3
       WHERE model_id = ?1 AND version = ?2 AND deleted_at IS NULL
         AND NOT EXISTS (SELECT 1 FROM aliases WHERE model_id = ?1 AND version = ?2)
         AND NOT EXISTS (
           SELECT 1 FROM traffic_rules t WHERE t.model_id = ?1 AND (
             EXISTS (SELECT 1 FROM json_each(t.rule, '$.split') j WHERE json_extract(j.value, '$.version') = ?2)
             OR EXISTS (SELECT 1 FROM json_each(t.rule, '$.shadow') j WHERE json_extract(j.value, '$.version') = ?2)))
       RETURNING version`,
    )
      .bind(model.id, version, Date.now())
      .first<{ version: number }>();
    if (!deleted) {
      const live = await s.db
        .select({ version: modelVersions.version })
        .from(modelVersions)
        .where(and(eq(modelVersions.modelId, model.id), eq(modelVersions.version, version), isNull(modelVersions.deletedAt)))
        .get();
      if (!live) throw new MeshError("version_not_found", `model '${model.name}' has no version '${version}'`);
      // Name what holds it, from the freshest view.
      await evictModel(s, accountId, model.name);
      const fresh = await requireModel(s, accountId, model.name);
      const holders = [
        ...Object.entries(fresh.aliases)
          .filter(([, v]) => v === version)
          .map(([a]) => `alias '${a}'`),
        ...(ruleVersions(fresh.traffic).includes(version) ? ["the traffic rule"] : []),
      ];
      throw new MeshError("version_in_use", `version ${version} of '${model.name}' is named by ${holders.join(" and ") || "an alias or the traffic rule"}; move those first`);
    }
    await evictModel(s, accountId, model.name);
    await republishWarmPolicy(c, accountId, model.name);
    return c.json({ model: model.name, version, deleted: true });
  });

  const M = { m: "Model name." };
  describeRoute({
    method: "post",
    path: "/v1/models",
    tag: "Models",
    auth: "manage",
    summary: "Create a model (no versions yet)",
    body: { schema: CreateModelSchema, maxBytes: 16 * 1024, example: { name: "my-model" } },
    responses: { 201: { description: "Created.", schema: z.object({ id: z.string(), name: z.string() }) } },
    errors: ["conflict"],
  });
  describeRoute({
    method: "get",
    path: "/v1/models",
    tag: "Models",
    auth: "manage",
    summary: "List the account's models",
    responses: {
      200: {
        description: "Newest first.",
        schema: z.object({ models: z.array(z.object({ id: z.string(), name: z.string(), createdAt: z.number(), latestVersion: z.number().nullable() })) }),
      },
    },
  });
  describeRoute({
    method: "get",
    path: "/v1/models/{m}",
    tag: "Models",
    auth: "manage",
    summary: "A model: versions, aliases, traffic rule, warm policy",
    params: M,
    responses: { 200: { description: "The model.", schema: ModelSchema } },
    errors: ["model_not_found"],
  });
  describeRoute({
    method: "put",
    path: "/v1/models/{m}",
    tag: "Models",
    auth: "manage",
    summary: "Set the warm policy and data residency",
    params: M,
    body: { schema: WarmPolicySchema, maxBytes: 16 * 1024, example: { keepWarm: 1 } },
    responses: { 200: { description: "The model, and whether the routers were told.", schema: ModelSchema.extend({ policyPublished: z.boolean() }) } },
    errors: ["model_not_found"],
  });
  describeRoute({
    method: "post",
    path: "/v1/models/{m}/versions",
    tag: "Models",
    auth: "manage",
    summary: "Upload a new immutable version (the raw .onnx file)",
    description: "The next number (1, 2, 3 ...); `latest` follows it unless an alias `latest` pins another.",
    params: M,
    body: { contentType: "application/octet-stream", maxBytes: MAX_MODEL_BYTES, description: "The ONNX file's bytes." },
    responses: {
      201: {
        description: "The version and the signature read from the file.",
        schema: z.object({
          model: z.string(),
          version: z.number(),
          sha256: z.string(),
          size: z.number(),
          runtime: z.string(),
          irVersion: z.number(),
          opsetVersion: z.number(),
          inputs: z.array(TensorSpecSchema),
          outputs: z.array(TensorSpecSchema),
          createdAt: z.number(),
        }),
      },
    },
    errors: ["model_not_found", "invalid_model_file", "unsupported_media_type"],
  });
  describeRoute({
    method: "delete",
    path: "/v1/models/{m}/versions/{v}",
    tag: "Models",
    auth: "manage",
    summary: "Delete a version",
    description: "Refused with 409 `version_in_use` while an alias or the traffic rule names it. The number is never reused.",
    params: { ...M, v: "The version number." },
    responses: { 200: { description: "Deleted.", schema: z.object({ model: z.string(), version: z.number(), deleted: z.literal(true) }) } },
    errors: ["model_not_found", "version_not_found", "version_in_use"],
  });
}
