// The edge's middleware: `init` gives every request an id, its config and its database;
// `requireKey(scope)` authenticates `Authorization: Bearer <key>`; `limitBody` bounds bodies;
// `onError`/`notFound` turn everything into the one error envelope.

import { drizzle } from "drizzle-orm/d1";
import type { ErrorHandler, MiddlewareHandler, NotFoundHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import { ERROR_STATUS, MeshError, errorBody, type ErrorCode } from "../protocol/errors.js";
import { timingSafeEqualString } from "../protocol/signing.js";
import { findKey, type Scope } from "./api-keys.js";
import type { AppEnv } from "./context.js";
import { ConfigError, loadConfig } from "./env.js";
import { log } from "./log.js";

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

export function requireKey(scope: Scope): MiddlewareHandler<AppEnv> {
  return async function requireKey(c, next) {
    const token = bearer(c.req.header("authorization"));
    if (!token) throw new MeshError("unauthorized", "missing API key: send 'Authorization: Bearer <key>'");
    const key = await findKey(c.get("db"), token);
    if (!key) throw new MeshError("unauthorized", "invalid or revoked API key");
    if (!key.scopes.includes(scope)) throw new MeshError("forbidden", `this key lacks the '${scope}' scope`);
    c.set("key", key);
    await next();
  };
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
