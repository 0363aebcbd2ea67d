// API keys of the caller's account: create (plaintext shown once), list, revoke. A revoked key
// is refused at once by this isolate and Redis, and by every isolate within REVOCATION_BOUND_MS.

import { and, desc, eq, isNull } from "drizzle-orm";
import { z } from "zod";
import { MeshError } from "../../protocol/errors.js";
import { accounts, apiKeys } from "../../schema/schema.js";
import { evictKey, newApiKey, randomId, REVOCATION_BOUND_MS, SCOPES } from "../api-keys.js";
import { services } from "../context.js";
import { limitBody, requireKey } from "../middleware.js";
import { meshRoute, type MeshApp } from "../openapi.js";

export const RateLimitSchema = z
  .object({
    perSecond: z.number().int().min(1).max(1_000_000).describe("Sustained calls per second."),
    burst: z.number().int().min(1).max(10_000_000).describe("Calls that may come at once."),
  })
  .strict();

const CreateKeySchema = z
  .object({
    name: z.string().max(128).default("").describe("For telling keys apart in lists."),
    scopes: z.array(z.enum(SCOPES)).min(1).default(["infer"]).describe("`infer`: the /v2 data plane and /openai/v1; `manage`: the /v1 control plane."),
    rateLimit: RateLimitSchema.optional().describe("A limit of this key's own, checked on top of the account's (so only ever tighter); refused here when looser than the account's is now."),
  })
  .strict();

const KeySchema = z.object({
  id: z.string(),
  name: z.string(),
  start: z.string().describe("The key's first characters, for recognising it."),
  scopes: z.array(z.string()),
  rateLimit: RateLimitSchema.nullable(),
  createdAt: z.number().describe("ms since epoch"),
  revokedAt: z.number().nullable(),
});

const CreatedKeySchema = KeySchema.omit({ createdAt: true, revokedAt: true }).extend({
  key: z.string().describe("The key itself: shown this once, never again."),
});

export function registerV1Keys(app: MeshApp): void {
  const manage = requireKey("manage");
  const keys = { tag: "Keys", auth: "manage", middleware: [manage] } as const;

  app.openapi(
    meshRoute({
      method: "post",
      path: "/v1/keys",
      tag: "Keys",
      auth: "manage",
      summary: "Create an API key",
      body: { schema: CreateKeySchema, maxBytes: 16 * 1024, example: { name: "ci", scopes: ["infer"], rateLimit: { perSecond: 10, burst: 20 } } },
      responses: { 201: { description: "The new key; `key` is shown this once.", schema: CreatedKeySchema } },
      middleware: [manage, limitBody(16 * 1024)],
    }),
    async (c) => {
      const body = c.req.valid("json");
      const db = c.get("db");
      const accountId = c.get("key").accountId;
      if (body.rateLimit) {
        const account = await db.select({ perSecond: accounts.ratePerSecond, burst: accounts.rateBurst }).from(accounts).where(eq(accounts.id, accountId)).get();
        const cap = account?.perSecond != null && account.burst != null ? { perSecond: account.perSecond, burst: account.burst } : c.get("config").defaultRateLimit;
        if (body.rateLimit.perSecond > cap.perSecond || body.rateLimit.burst > cap.burst) {
          throw new MeshError("bad_request", `'rateLimit' may not exceed the account's (${cap.perSecond}/s, burst ${cap.burst})`);
        }
      }
      const id = randomId("key_");
      const { key, hash, start } = await newApiKey();
      const scopes = [...new Set(body.scopes)];
      await db.insert(apiKeys).values({
        id,
        accountId,
        name: body.name,
        hash,
        start,
        scopes,
        ratePerSecond: body.rateLimit?.perSecond ?? null,
        rateBurst: body.rateLimit?.burst ?? null,
      });
      return c.json({ id, name: body.name, key, start, scopes, rateLimit: body.rateLimit ?? null }, 201);
    },
  );

  app.openapi(
    meshRoute({
      ...keys,
      method: "get",
      path: "/v1/keys",
      summary: "List the account's keys (never the keys themselves)",
      responses: { 200: { description: "Newest first.", schema: z.object({ keys: z.array(KeySchema) }) } },
    }),
    async (c) => {
      const rows = await c
        .get("db")
        .select({
          id: apiKeys.id,
          name: apiKeys.name,
          start: apiKeys.start,
          scopes: apiKeys.scopes,
          perSecond: apiKeys.ratePerSecond,
          burst: apiKeys.rateBurst,
          createdAt: apiKeys.createdAt,
          revokedAt: apiKeys.revokedAt,
        })
        .from(apiKeys)
        .where(eq(apiKeys.accountId, c.get("key").accountId))
        .orderBy(desc(apiKeys.createdAt));
      return c.json({
        keys: rows.map(({ perSecond, burst, ...k }) => ({ ...k, rateLimit: perSecond !== null && burst !== null ? { perSecond, burst } : null })),
      });
    },
  );

  app.openapi(
    meshRoute({
      ...keys,
      method: "delete",
      path: "/v1/keys/{id}",
      summary: "Revoke a key",
      description: `Refused at once by the edge that took this call, and by every edge for calls that start more than ${REVOCATION_BOUND_MS} ms later.`,
      params: { id: "The key's id (`key_...`)." },
      responses: {
        200: {
          description: "Revoked.",
          schema: z.object({ id: z.string(), revokedAt: z.number(), refusedEverywhereBy: z.number().describe("revokedAt + the revocation bound, ms since epoch") }),
        },
      },
      errors: ["not_found"],
    }),
    async (c) => {
      const db = c.get("db");
      const id = c.req.param("id");
      const revokedAt = Date.now();
      const row = await db
        .update(apiKeys)
        .set({ revokedAt })
        .where(and(eq(apiKeys.id, id), eq(apiKeys.accountId, c.get("key").accountId), isNull(apiKeys.revokedAt)))
        .returning({ hash: apiKeys.hash })
        .get();
      if (!row) throw new MeshError("not_found", `no active key '${id.slice(0, 64)}' in this account`);
      // This isolate and Redis forget the key now; other isolates within the bound.
      await evictKey(services(c), row.hash);
      return c.json({ id, revokedAt, refusedEverywhereBy: revokedAt + REVOCATION_BOUND_MS });
    },
  );
}
