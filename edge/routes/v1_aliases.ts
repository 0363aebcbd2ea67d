// Aliases of a model: names (`prod`, `staging`, ...) for versions, switched with one statement
// that also checks the version is live, so an alias never points at a deleted version. An alias
// named `latest` pins what `latest` means; deleting it lets `latest` follow the newest upload
// again. Every edge sees a switch within the revocation bound (model-registry.ts), whole.

import { z } from "zod";
import { MeshError } from "../../protocol/errors.js";
import { services } from "../context.js";
import { limitBody, requireKey } from "../middleware.js";
import { ALIAS_NAME_RE, evictModel, requireModel, resolveVersion } from "../model-registry.js";
import { meshRoute, type MeshApp } from "../openapi.js";
import { REVOCATION_BOUND_MS } from "../api-keys.js";
import { republishWarmPolicy } from "../model-versions.js";

const SetAliasSchema = z.object({ version: z.number().int().min(1).max(2 ** 31 - 1).describe("A live version number.") }).strict();
const AliasesSchema = z.object({
  model: z.string(),
  aliases: z.record(z.string(), z.number()),
  latest: z.number().nullable().describe("What `latest` resolves to now."),
});

/** An alias in the path: refused (400, by the route's validator) outside the naming rule, before anything is looked up. */
const AliasNameSchema = z
  .string()
  .regex(ALIAS_NAME_RE, "an alias is 1-32 characters of letters, digits, '.', '_' or '-', starting with a letter")
  .describe("Alias name, e.g. `prod` (`latest` pins what `latest` means).");

export function registerV1Aliases(app: MeshApp): void {
  const manage = requireKey("manage");
  const params = { m: "Model name.", alias: AliasNameSchema };
  const aliases = { tag: "Versions and traffic", auth: "manage", middleware: [manage] } as const;

  app.openapi(
    meshRoute({
      ...aliases,
      method: "get",
      path: "/v1/models/{m}/aliases",
      summary: "A model's aliases",
      params: { m: params.m },
      responses: { 200: { description: "Alias -> version.", schema: AliasesSchema } },
      errors: ["model_not_found"],
    }),
    async (c) => {
      const model = await requireModel(services(c), c.get("key").accountId, c.req.param("m"));
      const latest = model.versions.length ? resolveVersion(model, "latest").version : null;
      return c.json({ model: model.name, aliases: model.aliases, latest });
    },
  );

  app.openapi(
    meshRoute({
      method: "put",
      path: "/v1/models/{m}/aliases/{alias}",
      tag: "Versions and traffic",
      auth: "manage",
      summary: "Point an alias at a version (create or switch)",
      description: `Atomic; every edge serves the new version for calls that start more than ${REVOCATION_BOUND_MS} ms later.`,
      params,
      body: { schema: SetAliasSchema, maxBytes: 1024, example: { version: 2 } },
      responses: {
        200: {
          description: "The alias as it is now.",
          schema: z.object({ model: z.string(), alias: z.string(), version: z.number(), updatedAt: z.number(), everywhereBy: z.number() }),
        },
      },
      errors: ["model_not_found", "version_not_found"],
      middleware: [manage, limitBody(1024)],
    }),
    async (c) => {
      const s = services(c);
      const accountId = c.get("key").accountId;
      const model = await requireModel(s, accountId, c.req.param("m"));
      const alias = c.req.param("alias");
      const { version } = c.req.valid("json");
      const row = await c.env.DB.prepare(
        `INSERT INTO aliases (model_id, name, version, updated_at)
         SELECT ?1, ?2, ?3, ?4 WHERE EXISTS (SELECT 1 FROM model_versions WHERE model_id = ?1 AND version = ?3 AND deleted_at IS NULL)
         ON CONFLICT (model_id, name) DO UPDATE SET version = excluded.version, updated_at = excluded.updated_at
         RETURNING version, updated_at`,
      )
        .bind(model.id, alias, version, Date.now())
        .first<{ version: number; updated_at: number }>();
      if (!row) throw new MeshError("version_not_found", `model '${model.name}' has no version '${version}'`);
      await evictModel(s, accountId, model.name);
      if (alias === "latest") await republishWarmPolicy(s, accountId, model.name);
      return c.json({ model: model.name, alias, version: row.version, updatedAt: row.updated_at, everywhereBy: row.updated_at + REVOCATION_BOUND_MS });
    },
  );

  app.openapi(
    meshRoute({
      ...aliases,
      method: "delete",
      path: "/v1/models/{m}/aliases/{alias}",
      summary: "Delete an alias",
      params,
      responses: { 200: { description: "Deleted.", schema: z.object({ model: z.string(), alias: z.string(), deleted: z.literal(true) }) } },
      errors: ["model_not_found", "not_found"],
    }),
    async (c) => {
      const s = services(c);
      const accountId = c.get("key").accountId;
      const model = await requireModel(s, accountId, c.req.param("m"));
      const alias = c.req.param("alias");
      const row = await c.env.DB.prepare(`DELETE FROM aliases WHERE model_id = ?1 AND name = ?2 RETURNING version`)
        .bind(model.id, alias)
        .first<{ version: number }>();
      if (!row) throw new MeshError("not_found", `model '${model.name}' has no alias '${alias}'`);
      await evictModel(s, accountId, model.name);
      if (alias === "latest") await republishWarmPolicy(s, accountId, model.name);
      return c.json({ model: model.name, alias, deleted: true });
    },
  );
}
