// The operator's routes (admin token): create an account and its first key (shown once), and set
// an account's limits: its rate limit (one bucket shared by all its keys) and its monthly
// request quota. A change of limits reaches every edge within the revocation bound (it rides on
// the key records), keys with their own limit included: theirs is a second bucket, never a
// replacement.

import { and, eq, gte, isNull, ne, sql } from "drizzle-orm";
import { z } from "zod";
import { MeshError } from "../../protocol/errors.js";
import { accounts, apiKeys, usageEvents } from "../../schema/schema.js";
import { newApiKey, randomId } from "../api-keys.js";
import type { AppContext } from "../context.js";
import { log } from "../log.js";
import { monthStart, raiseMonthlyCount } from "../quota.js";
import { sharedStoreFor } from "../redis.js";
import { limitBody, requireAdmin } from "../middleware.js";
import { meshRoute, type MeshApp } from "../openapi.js";
import { RateLimitSchema } from "./v1_keys.js";

const LimitsFields = {
  monthlyRequests: z.number().int().min(0).nullable().optional().describe("Inference calls per calendar month (UTC); null: no quota."),
  rateLimit: RateLimitSchema.nullable().optional().describe("The account's rate limit, shared by all its keys (a key's own limit can only be tighter); null: the edge default."),
};

const CreateAccountSchema = z
  .object({ name: z.string().min(1).max(128).default("account"), ...LimitsFields })
  .strict();

const UpdateAccountSchema = z
  .object({ name: z.string().min(1).max(128).optional(), ...LimitsFields })
  .strict()
  .refine((b) => Object.keys(b).length > 0, "send 'name', 'monthlyRequests' and/or 'rateLimit'");

const AccountSchema = z.object({
  accountId: z.string(),
  name: z.string(),
  monthlyRequests: z.number().nullable(),
  rateLimit: RateLimitSchema.nullable(),
});

/**
 * A quota applies to the whole month, calls made before it included. They are counted as they
 * happen (quota.ts); this also raises the shared count to what the usage rows in D1 show, in
 * case the counter was lost. Refused tensors (400) are not charged, so not counted; shadow
 * copies are the mesh's own.
 */
async function seedQuotaCount(c: AppContext, accountId: string): Promise<void> {
  const store = sharedStoreFor(c.get("config"));
  if (!store) return;
  const now = Date.now();
  const row = await c
    .get("db")
    .select({ n: sql<number>`count(*)` })
    .from(usageEvents)
    .where(and(eq(usageEvents.accountId, accountId), gte(usageEvents.createdAt, monthStart(now)), isNull(usageEvents.shadowOf), ne(usageEvents.status, 400)))
    .get();
  // Redis down: each isolate goes on from the count it has; the quota still applies.
  await raiseMonthlyCount(store, accountId, Number(row?.n ?? 0), now).catch((err: unknown) =>
    log("warn", c.get("requestId"), "could not seed the account's monthly count", { error: String(err) }),
  );
}

export function registerV1Accounts(app: MeshApp): void {
  app.openapi(
    meshRoute({
      method: "post",
      path: "/v1/accounts",
      tag: "Operator",
      auth: "admin",
      summary: "Create an account and its first key",
      body: { schema: CreateAccountSchema, maxBytes: 16 * 1024, example: { name: "acme", monthlyRequests: 1000000, rateLimit: { perSecond: 100, burst: 200 } } },
      responses: {
        201: {
          description: "The account and its first key (scopes infer and manage; `key` shown this once).",
          schema: AccountSchema.extend({ apiKey: z.object({ id: z.string(), key: z.string(), start: z.string(), scopes: z.array(z.string()) }) }),
        },
      },
      middleware: [requireAdmin(), limitBody(16 * 1024)],
    }),
    async (c) => {
      const body = c.req.valid("json");
      const accountId = randomId("acc_");
      const keyId = randomId("key_");
      const { key, hash, start } = await newApiKey();
      const scopes = ["infer", "manage"];
      const db = c.get("db");
      // D1 has no interactive transactions; a batch is atomic.
      await db.batch([
        db.insert(accounts).values({
          id: accountId,
          name: body.name,
          monthlyRequestQuota: body.monthlyRequests ?? null,
          ratePerSecond: body.rateLimit?.perSecond ?? null,
          rateBurst: body.rateLimit?.burst ?? null,
        }),
        db.insert(apiKeys).values({ id: keyId, accountId, name: "first key", hash, start, scopes }),
      ]);
      return c.json(
        { accountId, name: body.name, monthlyRequests: body.monthlyRequests ?? null, rateLimit: body.rateLimit ?? null, apiKey: { id: keyId, key, start, scopes } },
        201,
      );
    },
  );

  app.openapi(
    meshRoute({
      method: "patch",
      path: "/v1/accounts/{id}",
      tag: "Operator",
      auth: "admin",
      summary: "Change an account's name, quota or rate limit",
      description: "Every edge applies the new limits within the revocation bound.",
      params: { id: "The account's id (`acc_...`)." },
      body: { schema: UpdateAccountSchema, maxBytes: 16 * 1024, example: { monthlyRequests: 5000 } },
      responses: { 200: { description: "The account as it is now.", schema: AccountSchema } },
      errors: ["not_found"],
      middleware: [requireAdmin(), limitBody(16 * 1024)],
    }),
    async (c) => {
      const body = c.req.valid("json");
      const set: Partial<typeof accounts.$inferInsert> = {};
      if (body.name !== undefined) set.name = body.name;
      if (body.monthlyRequests !== undefined) set.monthlyRequestQuota = body.monthlyRequests;
      if (body.rateLimit !== undefined) {
        set.ratePerSecond = body.rateLimit?.perSecond ?? null;
        set.rateBurst = body.rateLimit?.burst ?? null;
      }
      const row = await c.get("db").update(accounts).set(set).where(eq(accounts.id, c.req.param("id"))).returning().get();
      if (!row) throw new MeshError("not_found", "no such account");
      if (typeof body.monthlyRequests === "number") await seedQuotaCount(c, row.id);
      return c.json({
        accountId: row.id,
        name: row.name,
        monthlyRequests: row.monthlyRequestQuota,
        rateLimit: row.ratePerSecond !== null && row.rateBurst !== null ? { perSecond: row.ratePerSecond, burst: row.rateBurst } : null,
      });
    },
  );

}
