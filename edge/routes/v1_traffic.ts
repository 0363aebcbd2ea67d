// A model's traffic rule: a weighted split of the calls that name no version (weights sum to
// 100; sticky per `x-mesh-sticky` or the OIP `id`), and shadow copies to other versions. Set with
// one statement that also checks every version it names is live; read by the data plane with
// the model in one snapshot, so a changed split applies to each call whole and reaches every
// edge within the revocation bound.

import { eq } from "drizzle-orm";
import { z } from "zod";
import { MeshError } from "../../protocol/errors.js";
import { trafficRules } from "../../schema/schema.js";
import { REVOCATION_BOUND_MS } from "../api-keys.js";
import { services } from "../context.js";
import { limitBody, requireKey } from "../middleware.js";
import { evictModel, requireModel } from "../model-registry.js";
import { meshRoute, type MeshApp } from "../openapi.js";
import { ruleVersions, TrafficRuleSchema } from "../traffic.js";

const RuleResponseSchema = z.object({
  model: z.string(),
  rule: TrafficRuleSchema.nullable(),
  updatedAt: z.number().nullable(),
  everywhereBy: z.number().nullable().describe("updatedAt + the bound: every edge follows the rule for calls that start after this."),
});

export function registerV1Traffic(app: MeshApp): void {
  const manage = requireKey("manage");
  const params = { m: "Model name." };
  const ruleRoute = { path: "/v1/models/{m}/traffic", tag: "Versions and traffic", auth: "manage", params, middleware: [manage] } as const;

  app.openapi(
    meshRoute({
      ...ruleRoute,
      method: "get",
      summary: "A model's traffic rule",
      responses: { 200: { description: "The rule (null: none; calls that name no version go to `latest`).", schema: RuleResponseSchema } },
      errors: ["model_not_found"],
    }),
    async (c) => {
      const model = await requireModel(services(c), c.get("key").accountId, c.req.param("m"));
      const row = await c.get("db").select().from(trafficRules).where(eq(trafficRules.modelId, model.id)).get();
      return c.json({ model: model.name, rule: model.traffic, updatedAt: row?.updatedAt ?? null, everywhereBy: row ? row.updatedAt + REVOCATION_BOUND_MS : null });
    },
  );

  app.openapi(
    meshRoute({
      method: "put",
      path: "/v1/models/{m}/traffic",
      tag: "Versions and traffic",
      auth: "manage",
      summary: "Set the traffic rule: weighted split and shadow copies",
      description:
        "`split` applies to calls that name no version (`POST /v2/models/{m}/infer`); a call that names a version or alias gets exactly that. " +
        "`shadow` copies a share of all the model's calls and generations to another version after the caller's answer is ready, a failed one included (a generation: once it has ended, or no region took it): compared and logged, never returned, never waited for. " +
        "Versions in a rule cannot be deleted (409).",
      params,
      body: {
        schema: TrafficRuleSchema,
        maxBytes: 16 * 1024,
        example: { split: [{ version: 1, weight: 90 }, { version: 2, weight: 10 }], shadow: [{ version: 3, percent: 5 }] },
      },
      responses: { 200: { description: "The rule as it is now.", schema: RuleResponseSchema } },
      errors: ["model_not_found", "version_not_found"],
      middleware: [manage, limitBody(16 * 1024)],
    }),
    async (c) => {
      const s = services(c);
      const accountId = c.get("key").accountId;
      const model = await requireModel(s, accountId, c.req.param("m"));
      const rule = c.req.valid("json");
      const versions = ruleVersions(rule);
      const now = Date.now();
      const row = await c.env.DB.prepare(
        `INSERT INTO traffic_rules (model_id, rule, updated_at)
         SELECT ?1, ?2, ?3 WHERE (
           SELECT COUNT(*) FROM model_versions
           WHERE model_id = ?1 AND deleted_at IS NULL AND version IN (SELECT value FROM json_each(?4))) = ?5
         ON CONFLICT (model_id) DO UPDATE SET rule = excluded.rule, updated_at = excluded.updated_at
         RETURNING updated_at`,
      )
        .bind(model.id, JSON.stringify(rule), now, JSON.stringify(versions), versions.length)
        .first<{ updated_at: number }>();
      if (!row) {
        const live = new Set(model.versions.map((v) => v.version));
        const missing = versions.filter((v) => !live.has(v));
        throw new MeshError("version_not_found", `model '${model.name}' has no version ${missing.length ? missing.join(", ") : "named in the rule"}`);
      }
      await evictModel(s, accountId, model.name);
      return c.json({ model: model.name, rule, updatedAt: row.updated_at, everywhereBy: row.updated_at + REVOCATION_BOUND_MS });
    },
  );

  app.openapi(
    meshRoute({
      ...ruleRoute,
      method: "delete",
      summary: "Remove the traffic rule",
      responses: { 200: { description: "Removed: calls that name no version go to `latest` again.", schema: RuleResponseSchema } },
      errors: ["model_not_found", "not_found"],
    }),
    async (c) => {
      const s = services(c);
      const accountId = c.get("key").accountId;
      const model = await requireModel(s, accountId, c.req.param("m"));
      const row = await c.get("db").delete(trafficRules).where(eq(trafficRules.modelId, model.id)).returning().get();
      if (!row) throw new MeshError("not_found", `model '${model.name}' has no traffic rule`);
      await evictModel(s, accountId, model.name);
      return c.json({ model: model.name, rule: null, updatedAt: Date.now(), everywhereBy: Date.now() + REVOCATION_BOUND_MS });
    },
  );
}
