// The edge's middleware: `init` gives every request an id, its config and its database, and
// every response nosniff and no-referrer; `requireKey(scope)` authenticates `Authorization:
// Bearer <key>` and applies the rate limits (the account's, shared by all its keys, and the
// key's own when it has one); failed authentications are limited per client address;
// `chargeQuota` counts a call against its account's monthly quota; `limitBody` bounds bodies;
// `onError`/`notFoundFor` turn everything into the one error envelope (405 for a known path
// under another method; a route schema's refusal is turned into it by openapi.ts's hook).

import { withBusyRetry } from "./d1-retry.js";
import type { D1Database } from "@cloudflare/workers-types";
import { drizzle, type DrizzleD1Database } from "drizzle-orm/d1";
import type { ErrorHandler, MiddlewareHandler, NotFoundHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import { HTTPException } from "hono/http-exception";
import { ERROR_STATUS, MeshError, errorBody, type ErrorCode } from "../protocol/errors.js";
import { timingSafeEqual } from "hono/utils/buffer";
import { toHex } from "../protocol/signing.js";
import { formatTraceparent, spanFrom } from "../protocol/trace-context.js";
import { verifyKey, type KeyRecord, type Scope } from "./api-keys.js";
import { services, type AppContext, type AppEnv } from "./context.js";
import { ConfigError, loadConfig } from "./env.js";
import { log } from "./log.js";
import { MonthlyQuota } from "./quota.js";
import { RateLimiter, type BucketCheck } from "./rate-limit.js";
import { sharedStoreFor } from "./redis.js";

const REQUEST_ID_RE = /^[A-Za-z0-9._-]{1,64}$/;

function newRequestId(): string {
  return "req_" + toHex(crypto.getRandomValues(new Uint8Array(10)));
}

/**
 * One drizzle instance per D1 binding for the isolate's life: it holds no per-request state,
 * and building it (dialect, session, the retry wrapper's lookups) on every request was about
 * 1% of the isolate's CPU per small call (docs/benchmarks.md, issue 14).
 */
const databases = new WeakMap<D1Database, DrizzleD1Database>();

function databaseOf(binding: D1Database): DrizzleD1Database {
  if (!binding) return drizzle(withBusyRetry(binding)); // in-process app tests run without the binding
  let db = databases.get(binding);
  if (!db) databases.set(binding, (db = drizzle(withBusyRetry(binding))));
  return db;
}

/** Largest unread request body the edge reads to its end after answering (see init). */
const DRAIN_MAX_BYTES = 64 * 1024;

export function init(): MiddlewareHandler<AppEnv> {
  return async function init(c, next) {
    const given = c.req.header("x-request-id");
    const requestId = given && REQUEST_ID_RE.test(given) ? given : newRequestId();
    c.set("requestId", requestId);
    c.set("startedAt", Date.now());
    c.header("x-request-id", requestId);
    // W3C trace context: the edge's span, under the caller's trace (a new one when the caller
    // sent none or a malformed one); regions get it with the call, the caller gets it back.
    const trace = spanFrom(c.req.header("traceparent"));
    c.set("trace", trace);
    c.header("traceparent", formatTraceparent(trace));
    c.set("config", loadConfig(c.env));
    c.set("db", databaseOf(c.env.DB));
    await next();
    // An answer given before the body was read (a refused key, a wrong route): the rest of a
    // small body is read after the answer has gone (waitUntil), so a caller's kept-alive
    // connection stays usable for its next request. Seen: after a 401 with the body unread, the
    // local workerd reset the reused connection (the caller's next fetch: ECONNRESET). Not for
    // a 413 (the body was refused for its size, and may never come) nor a large body: there the
    // connection closes.
    const raw = c.req.raw;
    if (raw.body && !raw.bodyUsed && c.res.status !== 101 && c.res.status !== 413) {
      const length = Number(raw.headers.get("content-length") ?? NaN);
      if (length <= DRAIN_MAX_BYTES) services(c).waitUntil(raw.arrayBuffer().catch(() => undefined));
    }
    // Cheap on every answer: no content sniffing of an API answer into HTML, and no URL of
    // ours (with whatever it carries) in another site's Referer. A 101's headers are the socket's.
    if (c.res.status !== 101) {
      try {
        c.res.headers.set("x-content-type-options", "nosniff");
        c.res.headers.set("referrer-policy", "no-referrer");
      } catch {
        /* immutable headers (a passed-through response): leave them */
      }
    }
  };
}

export function bearer(header: string | undefined): string | null {
  if (!header) return null;
  const m = /^Bearer\s+(\S+)$/i.exec(header.trim());
  return m ? m[1]! : null;
}

const limiter = new RateLimiter();
/** Failed authentications per client address: this isolate only, so junk costs no Redis write. */
const authFailures = new RateLimiter();
const quota = new MonthlyQuota();

const seconds = (ms: number) => String(Math.max(1, Math.ceil(ms / 1000)));

/**
 * Who is calling, for the failed-authentication limit: Cloudflare's CF-Connecting-IP; in local
 * mode a test may name an address with x-mesh-client-ip (like x-mesh-colo, ignored outside it).
 */
export function clientAddress(c: AppContext): string {
  const local = c.get("config").localMode ? c.req.header("x-mesh-client-ip") : undefined;
  return (local ?? c.req.header("cf-connecting-ip") ?? "unknown").slice(0, 64);
}

function tooManyFailures(retryAfterMs: number): MeshError {
  return new MeshError("rate_limited", "too many failed authentications from this address; retry later", { "retry-after": seconds(retryAfterMs) });
}

/** Before any lookup: an address past its failure limit gets 429 and costs nothing more. */
function refuseIfFailing(c: AppContext): void {
  const d = authFailures.peek(`fail:${clientAddress(c)}`, c.get("config").authFailureLimit);
  if (!d.allowed) throw tooManyFailures(d.retryAfterMs);
}

/** Counts one failed authentication of the caller's address; 429 once that spends its limit. */
async function noteFailure(c: AppContext): Promise<void> {
  const s = services(c);
  const d = await authFailures.check(`fail:${clientAddress(c)}`, s.config.authFailureLimit, { store: null, waitUntil: s.waitUntil });
  if (!d.allowed) throw tooManyFailures(d.retryAfterMs);
}

/**
 * The one check behind every key-authenticated entry (HTTP routes, a socket's upgrade and
 * each request on an open socket): the key is valid and not revoked, has the scope, and the
 * rate limits allow one more call: the account's (one bucket for all its keys, read from D1
 * with the key, so a lowered limit reaches every key within the revocation bound) and, when the
 * key has one, the key's own (a second bucket, so it can only be tighter). A made-up key
 * counts against its address's failure limit.
 */
export async function authorize(c: AppContext, token: string, scope: Scope): Promise<{ key: KeyRecord; limit: number; remaining: number }> {
  const s = services(c);
  refuseIfFailing(c);
  const key = await verifyKey(s, token);
  if (!key) {
    await noteFailure(c);
    throw new MeshError("unauthorized", "invalid or revoked API key");
  }
  if (!key.scopes.includes(scope)) throw new MeshError("forbidden", `this key lacks the '${scope}' scope`);
  const account = key.accountRateLimit ?? s.config.defaultRateLimit;
  const checks: BucketCheck[] = [{ id: `acct:${key.accountId}`, limit: account }];
  if (key.rateLimit) checks.push({ id: `key:${key.id}`, limit: key.rateLimit });
  const d = await limiter.checkAll(checks, { store: sharedStoreFor(s.config), waitUntil: s.waitUntil });
  const tightest = Math.min(...checks.map((b) => b.limit.perSecond));
  if (!d.allowed) {
    const which = key.rateLimit ? `this key's rate limit (${key.rateLimit.perSecond}/s) or its account's (${account.perSecond}/s)` : `this account's rate limit (${account.perSecond}/s, burst ${account.burst})`;
    throw new MeshError("rate_limited", `${which} is spent`, {
      "retry-after": seconds(d.retryAfterMs),
      "x-ratelimit-limit": String(tightest),
      "x-ratelimit-remaining": "0",
    });
  }
  c.set("key", key);
  return { key, limit: tightest, remaining: d.remaining };
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

/**
 * Counts one inference call against the account's monthly quota; 429 when it is spent. Calls
 * are counted whether or not the account has a quota, so a quota set mid-month counts the
 * calls made before it.
 */
export async function chargeQuota(c: AppContext): Promise<void> {
  const key = c.get("key");
  const s = services(c);
  const d = await quota.check(key.accountId, key.monthlyQuota, { store: sharedStoreFor(s.config), waitUntil: s.waitUntil });
  if (!d.allowed) {
    throw new MeshError("quota_exceeded", `this account's monthly quota of ${key.monthlyQuota} calls is spent`, {
      "retry-after": seconds(d.retryAfterMs),
    });
  }
}

/** True when `token` is the operator's admin token (constant time). */
export function isAdminToken(c: AppContext, token: string): Promise<boolean> {
  return timingSafeEqual(token, c.get("config").adminToken);
}

export function requireAdmin(): MiddlewareHandler<AppEnv> {
  return async function requireAdmin(c, next) {
    const token = bearer(c.req.header("authorization"));
    if (!token) throw new MeshError("unauthorized", "this route needs the operator's admin token");
    refuseIfFailing(c);
    if (!(await isAdminToken(c, token))) {
      // A guessed admin token is a failed authentication like a guessed key.
      await noteFailure(c);
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

/** The edge's span for an error answer built outside the handler's context (when init ran). */
function traceHeader(c: AppContext): Record<string, string> {
  const t = c.get("trace");
  return t ? { traceparent: formatTraceparent(t) } : {};
}

export const onError: ErrorHandler<AppEnv> = (err, c) => {
  const requestId = c.get("requestId") ?? newRequestId();
  if (err instanceof MeshError) return errorResponse(requestId, err.code, err.message, { ...err.headers, ...traceHeader(c) });
  if (err instanceof HTTPException) {
    // Hono's own refusals before a route's schema sees the body (@hono/zod-openapi's JSON
    // validator): 415 for a body that is not application/json, 400 for JSON that does not parse.
    const mapped = httpExceptionError(err.status);
    return errorResponse(requestId, mapped.code, mapped.message, traceHeader(c));
  }
  if (err instanceof ConfigError) {
    log("error", requestId, err.message);
    return errorResponse(requestId, "internal_error", "the edge is misconfigured; the operator has been told", traceHeader(c));
  }
  log("error", requestId, "unhandled error", { error: String(err), stack: (err as Error).stack?.split("\n").slice(0, 5) });
  return errorResponse(requestId, "internal_error", "internal error", traceHeader(c));
};

/**
 * The answer for a request no route took: 405 `method_not_allowed` (with `Allow`) when a route
 * has the path under another method, else 404 `not_found`. `routes`: the app's own (Hono's
 * `app.routes`, read once the routes are registered); catch-alls (`ALL`) are middleware, not routes.
 */
export function notFoundFor(routes: readonly { method: string; path: string }[]): NotFoundHandler<AppEnv> {
  const byPattern = new Map<string, Set<string>>();
  for (const r of routes) {
    if (r.method === "ALL") continue;
    const methods = byPattern.get(r.path) ?? new Set<string>();
    methods.add(r.method);
    // Hono answers HEAD with a GET route.
    if (r.method === "GET") methods.add("HEAD");
    byPattern.set(r.path, methods);
  }
  const patterns = [...byPattern].map(([path, methods]) => ({ re: pathPattern(path), methods }));
  return (c) => {
    const requestId = c.get("requestId") ?? newRequestId();
    const path = new URL(c.req.url).pathname;
    const allowed = new Set<string>();
    for (const p of patterns) if (p.re.test(path)) for (const m of p.methods) allowed.add(m);
    if (allowed.size > 0 && !allowed.has(c.req.method)) {
      return errorResponse(requestId, "method_not_allowed", `${path} does not take ${c.req.method}; it takes ${[...allowed].join(", ")}`, { allow: [...allowed].join(", "), ...traceHeader(c) });
    }
    return errorResponse(requestId, "not_found", `no route for ${c.req.method} ${path}`, traceHeader(c));
  };
}

/** A Hono route path (`/v2/models/:m/infer`, `/r2/*`) as an anchored regular expression. */
function pathPattern(path: string): RegExp {
  const body = path
    .split("/")
    .map((seg) => (seg === "*" ? ".*" : seg.startsWith(":") ? "[^/]+" : seg.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")))
    .join("/");
  return new RegExp(`^${body}/?$`);
}

function httpExceptionError(status: number): { code: ErrorCode; message: string } {
  if (status === 415) return { code: "unsupported_media_type", message: "this route takes a JSON body: send 'content-type: application/json'" };
  if (status === 413) return { code: "payload_too_large", message: "request body is too large" };
  if (status === 400) return { code: "invalid_json", message: "request body is not valid JSON" };
  if (status === 401) return { code: "unauthorized", message: "unauthorized" };
  if (status === 404) return { code: "not_found", message: "not found" };
  return { code: "internal_error", message: "internal error" };
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
