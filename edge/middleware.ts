// The edge's middleware: `init` gives every request an id, its config and its database;
// `requireKey(scope)` authenticates `Authorization: Bearer <key>` and applies the key's rate
// limit; `chargeQuota` counts a call against its account's monthly quota; `limitBody` bounds
// bodies; `parseBody` validates one against its zod schema; `onError`/`notFound` turn
// everything into the one error envelope.

import { drizzle } from "drizzle-orm/d1";
import type { ErrorHandler, MiddlewareHandler, NotFoundHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import { ERROR_STATUS, MeshError, errorBody, type ErrorCode } from "../protocol/errors.js";
import { timingSafeEqualString } from "../protocol/signing.js";
import type { z } from "zod";
import { verifyKey, type KeyRecord, type Scope } from "./api-keys.js";
import { services, type AppContext, type AppEnv } from "./context.js";
import { ConfigError, loadConfig } from "./env.js";
import { log } from "./log.js";
import { MonthlyQuota } from "./quota.js";
import { RateLimiter } from "./rate-limit.js";
import { sharedStoreFor } from "./redis.js";

const REQUEST_ID_RE = /^[A-Za-z0-9._-]{1,64}$/;

function newRequestId(): string {
  const b = crypto.getRandomValues(new Uint8Array(10));
  let s = "req_";
  for (const x of b) s += x.toString(16).padStart(2, "0");
  return s;
}

export function init(): MiddlewareHandler<AppEnv> {
  return async function init(c, next) {
    const given = c.req.header("x-request-id");
    const requestId = given && REQUEST_ID_RE.test(given) ? given : newRequestId();
    c.set("requestId", requestId);
    c.set("startedAt", Date.now());
    c.header("x-request-id", requestId);
    c.set("config", loadConfig(c.env));
    c.set("db", drizzle(c.env.DB));
    await next();
  };
}

function bearer(header: string | undefined): string | null {
  if (!header) return null;
  const m = /^Bearer\s+(\S+)$/i.exec(header.trim());
  return m ? m[1]! : null;
}

const limiter = new RateLimiter();
const quota = new MonthlyQuota();

const seconds = (ms: number) => String(Math.max(1, Math.ceil(ms / 1000)));

/**
 * The one check behind every key-authenticated entry (HTTP routes, a socket's upgrade and
 * each request on an open socket): the key is valid and not revoked, has the scope, and its
 * rate limit allows one more call.
 */
export async function authorize(c: AppContext, token: string, scope: Scope): Promise<{ key: KeyRecord; limit: number; remaining: number }> {
  const s = services(c);
  const key = await verifyKey(s, token);
  if (!key) throw new MeshError("unauthorized", "invalid or revoked API key");
  if (!key.scopes.includes(scope)) throw new MeshError("forbidden", `this key lacks the '${scope}' scope`);
  const limit = key.rateLimit ?? s.config.defaultRateLimit;
  const d = await limiter.check(key.id, limit, { store: sharedStoreFor(s.config), waitUntil: s.waitUntil });
  if (!d.allowed) {
    throw new MeshError("rate_limited", `this key's rate limit (${limit.perSecond}/s, burst ${limit.burst}) is spent`, {
      "retry-after": seconds(d.retryAfterMs),
      "x-ratelimit-limit": String(limit.perSecond),
      "x-ratelimit-remaining": "0",
    });
  }
  c.set("key", key);
  return { key, limit: limit.perSecond, remaining: d.remaining };
}

export function requireKey(scope: Scope): MiddlewareHandler<AppEnv> {
  return async function requireKey(c, next) {
    const token = bearer(c.req.header("authorization"));
    if (!token) throw new MeshError("unauthorized", "missing API key: send 'Authorization: Bearer <key>'");
    const { limit, remaining } = await authorize(c, token, scope);
    c.header("x-ratelimit-limit", String(limit));
    c.header("x-ratelimit-remaining", String(remaining));
    await next();
  };
}

/** Counts one inference call against the account's monthly quota; 429 when it is spent. */
export async function chargeQuota(c: AppContext): Promise<void> {
  const key = c.get("key");
  if (key.monthlyQuota === null) return;
  const s = services(c);
  const d = await quota.check(key.accountId, key.monthlyQuota, { store: sharedStoreFor(s.config), waitUntil: s.waitUntil });
  if (!d.allowed) {
    throw new MeshError("quota_exceeded", `this account's monthly quota of ${key.monthlyQuota} calls is spent`, {
      "retry-after": seconds(d.retryAfterMs),
    });
  }
}

export function requireAdmin(): MiddlewareHandler<AppEnv> {
  return async function requireAdmin(c, next) {
    const token = bearer(c.req.header("authorization"));
    if (!token || !timingSafeEqualString(token, c.get("config").adminToken)) {
      throw new MeshError("unauthorized", "this route needs the operator's admin token");
    }
    await next();
  };
}

export function limitBody(maxSize: number): MiddlewareHandler<AppEnv> {
  return bodyLimit({
    maxSize,
    onError: () => {
      throw new MeshError("payload_too_large", `request body is larger than ${maxSize} bytes`);
    },
  });
}

export function errorResponse(requestId: string, code: ErrorCode, message: string, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(errorBody(code, message, requestId)), {
    status: ERROR_STATUS[code],
    headers: { "content-type": "application/json", "x-request-id": requestId, ...headers },
  });
}

export const onError: ErrorHandler<AppEnv> = (err, c) => {
  const requestId = c.get("requestId") ?? newRequestId();
  if (err instanceof MeshError) return errorResponse(requestId, err.code, err.message, err.headers);
  if (err instanceof ConfigError) {
    log("error", requestId, err.message);
    return errorResponse(requestId, "internal_error", "the edge is misconfigured; the operator has been told");
  }
  log("error", requestId, "unhandled error", { error: String(err), stack: (err as Error).stack?.split("\n").slice(0, 5) });
  return errorResponse(requestId, "internal_error", "internal error");
};

export const notFound: NotFoundHandler<AppEnv> = (c) =>
  errorResponse(c.get("requestId") ?? newRequestId(), "not_found", `no route for ${c.req.method} ${new URL(c.req.url).pathname}`);

/** Validates a parsed body against its schema; the first few problems become one 400 message. */
export function validate<S extends z.ZodType>(schema: S, value: unknown, what = "body"): z.infer<S> {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const problems = r.error.issues.slice(0, 3).map((i) => {
    const path = i.path.length ? i.path.map((p) => (typeof p === "number" ? `[${p}]` : `.${String(p)}`)).join("") : "";
    return `${what}${path}: ${i.message}`;
  });
  throw new MeshError("bad_request", problems.join("; "));
}

/** Reads and validates a JSON body (invalid JSON: 400 invalid_json; wrong shape: 400 bad_request). */
export async function parseBody<S extends z.ZodType>(c: AppContext, schema: S): Promise<z.infer<S>> {
  return validate(schema, await readJson(c.req.raw));
}

/** Parses a JSON body with the envelope's error for bad JSON. */
export async function readJson(req: Request): Promise<unknown> {
  const text = await req.text();
  if (text.length === 0) return {};
  try {
    return JSON.parse(text);
  } catch {
    throw new MeshError("invalid_json", "request body is not valid JSON");
  }
}
