// A generative model version's tokenizer (key scope `manage`): PUT uploads its tokenizer.json
// (the Hugging Face format; the forms protocol/tokenizer.ts implements), GET gives it back.
// The file is checked (it parses, the version is a decoder language model, its ids fit the
// logits), stored in R2 under its sha256 and recorded on the version. Versions are immutable,
// so a tokenizer is set once: the same file again is a no-op, a different one a 409.
//
// GET /internal/tokenizers/{sha256}: the file for nodes, only through a URL the edge signed
// (time-limited), as for artifacts; nodes check the sha256 themselves.

import type { Hono } from "hono";
import { z } from "zod";
import { MeshError } from "../../protocol/errors.js";
import { sha256Hex, urlRegion, verifyUrl } from "../../protocol/signing.js";
import { loadTokenizer, TokenizerError, type Tokenizer } from "../../protocol/tokenizer.js";
import { services, type AppEnv } from "../context.js";
import { verifyingSecrets } from "../env.js";
import { limitBody, requireKey } from "../middleware.js";
import { requireModel, resolveVersion } from "../model-registry.js";
import { describeRoute } from "../openapi.js";
import { generativeSignature, MAX_TOKENIZER_BYTES, noteTokenizer, tokenizerKey, versionTokenizer } from "../tokenizers.js";

export function registerV1Tokenizers(app: Hono<AppEnv>): void {
  const manage = requireKey("manage");

  app.put("/v1/models/:m/versions/:v/tokenizer", manage, limitBody(MAX_TOKENIZER_BYTES), async (c) => {
    const model = await requireModel(services(c), c.get("key").accountId, c.req.param("m"));
    const version = resolveVersion(model, c.req.param("v"));
    const { problem, vocab } = generativeSignature(version.signature);
    if (problem) throw new MeshError("bad_request", `version ${version.version} of '${model.name}' is not a generative model: ${problem}`);
    const bytes = new Uint8Array(await c.req.arrayBuffer());
    if (bytes.length === 0) throw new MeshError("bad_request", "the body is empty: send the tokenizer.json file");
    let tokenizer: Tokenizer;
    try {
      tokenizer = loadTokenizer(new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(bytes));
    } catch (err) {
      if (err instanceof TokenizerError) throw new MeshError("bad_request", err.message);
      if (err instanceof TypeError) throw new MeshError("bad_request", "invalid tokenizer.json: not UTF-8 text");
      throw err;
    }
    if (vocab !== null && tokenizer.vocabSize > vocab) {
      throw new MeshError("bad_request", `the tokenizer has ids up to ${tokenizer.vocabSize - 1}, but the model's logits cover ${vocab} tokens`);
    }
    const sha256 = await sha256Hex(bytes);
    // Content-addressed, stored before the row points at it.
    await c.env.ARTIFACTS.put(tokenizerKey(sha256), bytes, { sha256, httpMetadata: { contentType: "application/json" } });
    const row = await c.env.DB.prepare(
      `UPDATE model_versions SET tokenizer_sha256 = ?1, tokenizer_size = ?2
       WHERE model_id = ?3 AND version = ?4 AND (tokenizer_sha256 IS NULL OR tokenizer_sha256 = ?1)
       RETURNING version`,
    )
      .bind(sha256, bytes.length, model.id, version.version)
      .first<{ version: number }>();
    if (!row) {
      throw new MeshError(
        "conflict",
        `version ${version.version} of '${model.name}' already has a different tokenizer; versions are immutable: upload a new version for a new tokenizer`,
      );
    }
    noteTokenizer(model.id, version.version, { sha256, size: bytes.length });
    return c.json({ model: model.name, version: version.version, sha256, size: bytes.length, vocabSize: tokenizer.vocabSize });
  });

  app.get("/v1/models/:m/versions/:v/tokenizer", manage, async (c) => {
    const model = await requireModel(services(c), c.get("key").accountId, c.req.param("m"));
    const version = resolveVersion(model, c.req.param("v"));
    const info = await versionTokenizer(c.get("db"), model.id, version.version);
    const object = info ? await c.env.ARTIFACTS.get(tokenizerKey(info.sha256)) : null;
    if (!info || !object) throw new MeshError("not_found", `version ${version.version} of '${model.name}' has no tokenizer`);
    return new Response(object.body, { headers: { "content-type": "application/json", "x-mesh-tokenizer-sha256": info.sha256 } });
  });

  app.get("/internal/tokenizers/:sha256", async (c) => {
    // Signed for one region with that region's secret (download-urls.ts).
    const url = new URL(c.req.url);
    const check = await verifyUrl(verifyingSecrets(c.get("config"), urlRegion(url)), url);
    if (!check.ok) throw new MeshError("unauthorized", `tokenizer URL refused: ${check.reason}`);
    const sha = c.req.param("sha256");
    if (!/^[0-9a-f]{64}$/.test(sha)) throw new MeshError("not_found", "no such tokenizer");
    const object = await c.env.ARTIFACTS.get(tokenizerKey(sha));
    if (!object) throw new MeshError("not_found", "no such tokenizer");
    return new Response(object.body, {
      headers: { "content-type": "application/json", "content-length": String(object.size), "x-request-id": c.get("requestId") },
    });
  });

  const params = { m: "Model name.", v: "A version number, an alias or `latest`." };
  describeRoute({
    method: "put",
    path: "/v1/models/{m}/versions/{v}/tokenizer",
    tag: "Models",
    auth: "manage",
    summary: "Attach a tokenizer.json to a generative model version (once)",
    description:
      "The Hugging Face tokenizer.json of the version (BPE with no normalizer or pre-tokenizer, e.g. a character vocabulary). Needed for the generation routes. The same file again is a no-op; another one is a 409.",
    params,
    body: { contentType: "application/json", maxBytes: MAX_TOKENIZER_BYTES, description: "The tokenizer.json file." },
    responses: {
      200: {
        description: "Stored and recorded on the version.",
        schema: z.object({ model: z.string(), version: z.number().int(), sha256: z.string(), size: z.number().int(), vocabSize: z.number().int() }),
      },
    },
    errors: ["bad_request", "model_not_found", "version_not_found", "conflict"],
  });
  describeRoute({
    method: "get",
    path: "/v1/models/{m}/versions/{v}/tokenizer",
    tag: "Models",
    auth: "manage",
    summary: "The tokenizer.json of a version",
    params,
    responses: { 200: { description: "The file.", contentType: "application/json" } },
    errors: ["model_not_found", "version_not_found", "not_found"],
  });
  describeRoute({
    method: "get",
    path: "/internal/tokenizers/{sha256}",
    tag: "Internal",
    auth: "signed",
    summary: "Tokenizer download for nodes (signed URL)",
    params: { sha256: "The file's sha256." },
    responses: { 200: { description: "The file.", contentType: "application/json" } },
    internal: true,
  });
}
