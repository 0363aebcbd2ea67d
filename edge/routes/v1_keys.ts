// API keys of the caller's account: create (plaintext shown once), list, revoke.

import { and, desc, eq, isNull } from "drizzle-orm";
import type { Hono } from "hono";
import { MeshError } from "../../protocol/errors.js";
import { apiKeys } from "../../schema/schema.js";
import { evictKeyHash, newApiKey, randomId, SCOPES } from "../api-keys.js";
import type { AppEnv } from "../context.js";
import { limitBody, readJson, requireKey } from "../middleware.js";

export function registerV1Keys(app: Hono<AppEnv>): void {
  const manage = requireKey("manage");

  app.post("/v1/keys", manage, limitBody(16 * 1024), async (c) => {
    const body = (await readJson(c.req.raw)) as { name?: unknown; scopes?: unknown };
    const name = body.name ?? "";
    if (typeof name !== "string" || name.length > 128) throw new MeshError("bad_request", "'name' must be a string of at most 128 characters");
    const scopes = body.scopes ?? ["infer"];
    if (
      !Array.isArray(scopes) ||
      scopes.length === 0 ||
      !scopes.every((s) => typeof s === "string" && (SCOPES as readonly string[]).includes(s))
    ) {
      throw new MeshError("bad_request", `'scopes' must be a non-empty list of: ${SCOPES.join(", ")}`);
    }
    const id = randomId("key_");
    const { key, hash, start } = await newApiKey();
    await c.get("db").insert(apiKeys).values({ id, accountId: c.get("key").accountId, name, hash, start, scopes: [...new Set(scopes as string[])] });
    return c.json({ id, name, key, start, scopes }, 201);
  });

  app.get("/v1/keys", manage, async (c) => {
    const rows = await c
      .get("db")
      .select({ id: apiKeys.id, name: apiKeys.name, start: apiKeys.start, scopes: apiKeys.scopes, createdAt: apiKeys.createdAt, revokedAt: apiKeys.revokedAt })
      .from(apiKeys)
      .where(eq(apiKeys.accountId, c.get("key").accountId))
      .orderBy(desc(apiKeys.createdAt));
    return c.json({ keys: rows });
  });

  app.delete("/v1/keys/:id", manage, async (c) => {
    const db = c.get("db");
    const id = c.req.param("id");
    const revokedAt = Date.now();
    const row = await db
      .update(apiKeys)
      .set({ revokedAt })
      .where(and(eq(apiKeys.id, id), eq(apiKeys.accountId, c.get("key").accountId), isNull(apiKeys.revokedAt)))
      .returning({ hash: apiKeys.hash })
      .get();
    if (!row) throw new MeshError("not_found", `no active key '${id}' in this account`);
    // This isolate forgets the key now; others within KEY_CACHE_TTL_MS.
    evictKeyHash(row.hash);
    return c.json({ id, revokedAt });
  });
}
