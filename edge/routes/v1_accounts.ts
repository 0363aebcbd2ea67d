// POST /v1/accounts: the operator creates an account and its first key (shown once).

import type { Hono } from "hono";
import { MeshError } from "../../protocol/errors.js";
import { accounts, apiKeys } from "../../schema/schema.js";
import { newApiKey, randomId } from "../api-keys.js";
import type { AppEnv } from "../context.js";
import { limitBody, readJson, requireAdmin } from "../middleware.js";

export function registerV1Accounts(app: Hono<AppEnv>): void {
  app.post("/v1/accounts", requireAdmin(), limitBody(16 * 1024), async (c) => {
    const body = (await readJson(c.req.raw)) as { name?: unknown };
    const name = body.name ?? "account";
    if (typeof name !== "string" || name.length < 1 || name.length > 128) {
      throw new MeshError("bad_request", "'name' must be a string of 1 to 128 characters");
    }
    const accountId = randomId("acc_");
    const keyId = randomId("key_");
    const { key, hash, start } = await newApiKey();
    const scopes = ["infer", "manage"];
    const db = c.get("db");
    // D1 has no interactive transactions; a batch is atomic.
    await db.batch([
      db.insert(accounts).values({ id: accountId, name }),
      db.insert(apiKeys).values({ id: keyId, accountId, name: "first key", hash, start, scopes }),
    ]);
    return c.json({ accountId, name, apiKey: { id: keyId, key, start, scopes } }, 201);
  });
}
