// A generative model version's tokenizer (key scope `manage`): PUT uploads its tokenizer.json
// (the Hugging Face format; the forms formats/tokenizer.ts implements), GET gives it back.
// The file is checked and recorded by model-versions.ts (attachTokenizer). Versions are immutable,
// so a tokenizer is set once: the same file again is a no-op, a different one a 409.
// Nodes download it through internal_artifacts.ts (GET /internal/tokenizers/{sha256}, signed).

import { z } from "zod";
import { MeshError } from "../../protocol/errors.js";
import { services, type AppContext } from "../context.js";
import { limitBody, requireKey } from "../middleware.js";
import { requireModel, resolveVersion } from "../model-registry.js";
import { meshRoute, type MeshApp } from "../openapi.js";
import { attachTokenizer } from "../model-versions.js";
import { MAX_TOKENIZER_BYTES, tokenizerKey, versionTokenizer } from "../tokenizers.js";

async function target(c: AppContext) {
  const model = await requireModel(services(c), c.get("key").accountId, c.req.param("m")!);
  return { model, version: resolveVersion(model, c.req.param("v")) };
}

export function registerV1Tokenizers(app: MeshApp): void {
  const manage = requireKey("manage");
  const tokenizer = {
    path: "/v1/models/{m}/versions/{v}/tokenizer",
    tag: "Models",
    auth: "manage",
    params: { m: "Model name.", v: "A version number, an alias or `latest`." },
  } as const;

  app.openapi(
    meshRoute({
      ...tokenizer,
      method: "put",
      summary: "Attach a tokenizer.json to a generative model version (once)",
      description:
        "The Hugging Face tokenizer.json of the version (BPE with no normalizer or pre-tokenizer, e.g. a character vocabulary). Needed for the generation routes. The same file again is a no-op; another one is a 409.",
      body: { contentType: "application/json", maxBytes: MAX_TOKENIZER_BYTES, description: "The tokenizer.json file." },
      responses: {
        200: {
          description: "Stored and recorded on the version.",
          schema: z.object({ model: z.string(), version: z.number().int(), sha256: z.string(), size: z.number().int(), vocabSize: z.number().int() }),
        },
      },
      errors: ["bad_request", "model_not_found", "version_not_found", "conflict"],
      middleware: [manage, limitBody(MAX_TOKENIZER_BYTES)],
    }),
    async (c) => {
      const { model, version } = await target(c);
      const bytes = new Uint8Array(await c.req.arrayBuffer());
      const stored = await attachTokenizer({ services: services(c), bucket: c.env.ARTIFACTS, d1: c.env.DB }, model, version, bytes);
      return c.json({ model: model.name, version: version.version, ...stored });
    },
  );

  app.openapi(
    meshRoute({
      ...tokenizer,
      method: "get",
      summary: "The tokenizer.json of a version",
      responses: { 200: { description: "The file.", contentType: "application/json" } },
      errors: ["model_not_found", "version_not_found", "not_found"],
      middleware: [manage],
    }),
    async (c) => {
      const { model, version } = await target(c);
      const info = await versionTokenizer(c.get("db"), model.id, version.version);
      const object = info ? await c.env.ARTIFACTS.get(tokenizerKey(info.sha256)) : null;
      if (!info || !object) throw new MeshError("not_found", `version ${version.version} of '${model.name}' has no tokenizer`);
      return new Response(object.body, { headers: { "content-type": "application/json", "x-mesh-tokenizer-sha256": info.sha256 } });
    },
  );
}
