// Models and versions of the caller's account: create a model, upload a version as raw ONNX
// bytes (the graph's inputs and outputs are read from the file; anything that is not ONNX is
// refused), list and show them.

import { desc, eq, sql } from "drizzle-orm";
import type { Hono } from "hono";
import { MeshError } from "../../protocol/errors.js";
import { OnnxParseError, readOnnxSignature } from "../../protocol/onnx-signature.js";
import { sha256Hex } from "../../protocol/signing.js";
import { models, modelVersions } from "../../schema/schema.js";
import { randomId } from "../api-keys.js";
import type { AppEnv } from "../context.js";
import { limitBody, readJson, requireKey } from "../middleware.js";
import { evictModel, MODEL_NAME_RE, requireModel, type ModelInfo } from "../model-registry.js";
import { publishWarmPolicy } from "../warm-policies.js";
import { log } from "../log.js";

export const MAX_MODEL_BYTES = 100 * 1024 * 1024;
const MAX_REPLICAS = 16;

export function artifactKey(sha256: string): string {
  return `artifacts/${sha256}.onnx`;
}

function describe(model: ModelInfo) {
  return {
    id: model.id,
    name: model.name,
    createdAt: model.createdAt,
    keepWarm: model.keepWarm,
    replicas: model.replicas,
    regions: model.regions,
    latestVersion: model.versions[0]?.version ?? null,
    aliases: model.aliases,
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

export function registerV1Models(app: Hono<AppEnv>): void {
  const manage = requireKey("manage");

  app.post("/v1/models", manage, limitBody(16 * 1024), async (c) => {
    const body = (await readJson(c.req.raw)) as { name?: unknown };
    if (typeof body.name !== "string" || !MODEL_NAME_RE.test(body.name)) {
      throw new MeshError("bad_request", "'name' must be 1-64 characters of letters, digits, '.', '_' or '-', starting with a letter or digit");
    }
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
    evictModel(accountId, body.name);
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
    const model = await requireModel(c.get("db"), c.get("key").accountId, c.req.param("m"));
    return c.json(describe(model));
  });

  // Warm policy: {"keepWarm": n} is a floor of replicas per region; {"replicas": n} pins the
  // count (null hands it back to traffic). Stored in D1, then published to the routers.
  // Data residency: {"regions": [...]} restricts the model to those regions (null: any).
  app.put("/v1/models/:m", manage, limitBody(16 * 1024), async (c) => {
    const accountId = c.get("key").accountId;
    const db = c.get("db");
    const model = await requireModel(db, accountId, c.req.param("m"));
    const body = (await readJson(c.req.raw)) as { keepWarm?: unknown; replicas?: unknown; regions?: unknown };
    const update: { keepWarm?: number; replicas?: number | null; regions?: string[] | null } = {};
    const count = (v: unknown, name: string) => {
      if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > MAX_REPLICAS) {
        throw new MeshError("bad_request", `'${name}' must be an integer from 0 to ${MAX_REPLICAS}`);
      }
      return v;
    };
    if (body.keepWarm !== undefined) update.keepWarm = count(body.keepWarm, "keepWarm");
    if (body.replicas !== undefined) update.replicas = body.replicas === null ? null : count(body.replicas, "replicas");
    if (body.regions !== undefined) {
      const known = c.get("config").regions.map((r) => r.name);
      const r = body.regions;
      if (r !== null && (!Array.isArray(r) || r.length === 0 || !r.every((x) => typeof x === "string" && known.includes(x)))) {
        throw new MeshError("bad_request", `'regions' must be null or a non-empty list of: ${known.join(", ")}`);
      }
      update.regions = r === null ? null : [...new Set(r as string[])];
    }
    if (Object.keys(update).length === 0) throw new MeshError("bad_request", "send 'keepWarm', 'replicas' and/or 'regions'");
    await db.update(models).set(update).where(eq(models.id, model.id));
    evictModel(accountId, model.name);
    const fresh = await requireModel(db, accountId, model.name);
    const applied = await publishWarmPolicy(c.get("config"), fresh, new URL(c.req.url).origin);
    if (!applied) log("warn", c.get("requestId"), "warm policy stored but not published", { model: model.name });
    return c.json({ ...describe(fresh), policyPublished: applied });
  });

  app.post("/v1/models/:m/versions", manage, limitBody(MAX_MODEL_BYTES), async (c) => {
    const accountId = c.get("key").accountId;
    const model = await requireModel(c.get("db"), accountId, c.req.param("m"));
    const type = (c.req.header("content-type") ?? "").split(";")[0]!.trim().toLowerCase();
    if (type !== "application/octet-stream") {
      throw new MeshError("unsupported_media_type", "upload the .onnx file as the raw body with 'Content-Type: application/octet-stream'");
    }
    const bytes = new Uint8Array(await c.req.arrayBuffer());
    if (bytes.length === 0) throw new MeshError("invalid_model_file", "the body is empty: send the .onnx file's bytes");
    let info;
    try {
      info = readOnnxSignature(bytes);
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
    evictModel(accountId, model.name);
    if (model.keepWarm > 0 || model.replicas !== null) {
      // `latest` moved: the warm replicas follow it.
      const fresh = await requireModel(c.get("db"), accountId, model.name);
      c.executionCtx.waitUntil(publishWarmPolicy(c.get("config"), fresh, new URL(c.req.url).origin));
    }
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
}
