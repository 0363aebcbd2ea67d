// GET /v1/usage: what the account's calls cost, per model and version, for billing: calls,
// errors, compute-milliseconds (the nodes' session time, failed calls that ran included: one
// stopped at its deadline costs what it ran), queue time and the edge's mean time, plus
// the shadow copies each version ran. Rows are written in batches after each call (usage.ts), so
// a call shows here within about a second.

import { z } from "zod";
import { MeshError } from "../../protocol/errors.js";
import { services } from "../context.js";
import { requireKey } from "../middleware.js";
import { findModel } from "../model-registry.js";
import { meshRoute, type MeshApp } from "../openapi.js";
import { usageReport } from "../usage.js";

const MAX_RANGE_MS = 400 * 24 * 3600 * 1000;

const instant = z
  .string()
  .max(40)
  .transform((s, ctx) => {
    const n = /^[0-9]{1,15}$/.test(s) ? Number(s) : Date.parse(s);
    if (!Number.isFinite(n)) {
      ctx.addIssue({ code: "custom", message: "must be an ISO 8601 time (2026-11-01T00:00:00Z) or ms since epoch" });
      return z.NEVER;
    }
    return n;
  });

const UsageQuerySchema = z.object({
  model: z.string().max(64).optional().describe("Only this model (default: all of the account's)."),
  from: instant.optional().describe("Start, inclusive: ISO 8601 or ms since epoch (default: the start of this month, UTC)."),
  to: instant.optional().describe("End, exclusive: ISO 8601 or ms since epoch (default: now)."),
});

const UsageRowSchema = z.object({
  model: z.string(),
  version: z.number(),
  calls: z.number().describe("Callers' calls this version served."),
  errors: z.number().describe("Of those, answered 4xx or 5xx."),
  serverErrors: z.number().describe("Of those, 5xx."),
  computeMs: z.number().describe("Sum of the nodes' session time, ms, failed calls that ran included (a call stopped at its deadline is billed what it ran)."),
  queueMs: z.number().describe("Sum of time queued in regions, ms."),
  meanEdgeMs: z.number().describe("Mean time at the edge before forwarding, ms."),
  shadow: z
    .object({
      calls: z.number(),
      errors: z.number(),
      computeMs: z.number(),
      mismatches: z.number().describe("Copies whose answer differed from the served one (a generation: its text, judged only under greedy sampling or a seed)."),
      promptTokens: z.number().describe("Shadow generations: prompt tokens read."),
      completionTokens: z.number().describe("Shadow generations: tokens generated."),
    })
    .describe("Shadow copies this version ran (calls and generations), never returned to callers and never charged to the quota."),
  promptTokens: z.number().describe("Generations: prompt tokens read."),
  completionTokens: z.number().describe("Generations: tokens generated (streamed or not)."),
});

const UsageResponseSchema = z.object({
  from: z.number(),
  to: z.number(),
  models: z.array(UsageRowSchema),
  totals: z.object({ calls: z.number(), errors: z.number(), computeMs: z.number(), shadowCalls: z.number() }),
});

export function registerV1Usage(app: MeshApp): void {
  app.openapi(
    meshRoute({
      method: "get",
      path: "/v1/usage",
      tag: "Usage",
      auth: "manage",
      summary: "Calls, errors and compute-milliseconds per model and version",
      query: UsageQuerySchema,
      responses: { 200: { description: "Usage in [from, to).", schema: UsageResponseSchema } },
      errors: ["bad_request", "model_not_found"],
      middleware: [requireKey("manage")],
    }),
    async (c) => {
      const q = c.req.valid("query");
      const now = Date.now();
      const d = new Date(now);
      const from = q.from ?? Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1);
      const to = q.to ?? now + 1;
      if (!(from < to)) throw new MeshError("bad_request", "'from' must be before 'to'");
      if (to - from > MAX_RANGE_MS) throw new MeshError("bad_request", "ask for at most 400 days at a time");
      const accountId = c.get("key").accountId;
      let modelId: string | null = null;
      if (q.model !== undefined) {
        const model = await findModel(services(c), accountId, q.model);
        if (!model) throw new MeshError("model_not_found", `model '${q.model}' not found`);
        modelId = model.id;
      }
      const models = await usageReport(c.get("db"), accountId, from, to, modelId);
      const totals = models.reduce(
        (t, r) => ({ calls: t.calls + r.calls, errors: t.errors + r.errors, computeMs: t.computeMs + r.computeMs, shadowCalls: t.shadowCalls + r.shadow.calls }),
        { calls: 0, errors: 0, computeMs: 0, shadowCalls: 0 },
      );
      return c.json({ from, to, models, totals });
    },
  );

}
