// The public API's description and its validation, from one definition per route. A route file
// registers each route with `app.openapi(meshRoute({...}), handler)`: the zod schemas of its
// body and query are both what @hono/zod-openapi's validators check (before the handler runs;
// the handler reads the result with `c.req.valid("json" | "query")`) and what `openApiDocument`
// writes into the OpenAPI 3.1 document (served at /openapi.json, rendered at /docs). A refusal
// becomes the one error envelope through the app's defaultHook (`meshValidationHook`, below). A
// path parameter given as a schema is checked the same way; one given as a description is any
// string (the handler looks it up), so routes with only those (the infer route) pay for no
// parameter validator. A body that cannot go through a JSON validator (binary or compressed
// bodies, OpenAI's error shape) says `checkedBy: "handler"`: documented with its schema, read
// and checked inside the handler with that same schema object (infer, generate, and the OpenAI
// routes, whose refusals name the field at fault in OpenAI's `param`).
// A WebSocket upgrade declares its params, query and headers like any route. A unit test checks
// that every route the app registers goes through meshRoute, so the document cannot drift from
// the code by omission.

import { createRoute } from "@hono/zod-openapi";
import type { OpenAPIHono } from "@hono/zod-openapi";
import type { MiddlewareHandler } from "hono";
import { z } from "zod";
import { ERROR_DESCRIPTIONS, ERROR_STATUS, MeshError, type ErrorCode } from "../protocol/errors.js";
import type { AppEnv } from "./context.js";
import { zodProblems } from "./zod-problems.js";

/** The edge's app: Hono with @hono/zod-openapi's validated routes. */
export type MeshApp = OpenAPIHono<AppEnv>;

export type Method = "get" | "post" | "put" | "patch" | "delete";

/** Who may call: a key with a scope, the operator's admin token, nobody (public), or a signed URL. */
export type Auth = "infer" | "manage" | "admin" | "none" | "signed";

export interface BodyDoc {
  schema?: z.ZodType;
  /**
   * "handler": the handler reads the body and checks it with `schema` itself (a body that may be
   * binary or compressed, or whose errors take OpenAI's shape); the route's validator does not.
   */
  checkedBy?: "handler";
  /** Default application/json. */
  contentType?: string;
  description?: string;
  /** The route's body limit, bytes (413 above it). */
  maxBytes?: number;
  /** An example body (shown on /docs). */
  example?: unknown;
}

export interface ResponseDoc {
  description: string;
  schema?: z.ZodType;
  contentType?: string;
  headers?: Record<string, string>;
}

/** A path parameter: what it is (any string), or a schema (with `.describe()`) that refuses what it must. */
export type ParamDoc = string | z.ZodType<string>;

export interface RouteDoc {
  method: Method;
  /** OpenAPI style: /v1/models/{m}. */
  path: string;
  summary: string;
  description?: string;
  tag: string;
  auth: Auth;
  /** Path parameters: a description (any string), or a schema the route's validator checks it with. */
  params?: Record<string, ParamDoc>;
  query?: z.ZodObject;
  /** Request headers the route reads, with what they do. */
  headers?: Record<string, string>;
  body?: BodyDoc;
  responses: Record<number, ResponseDoc>;
  /** Error codes this route can answer with besides the common ones of its auth. */
  errors?: readonly ErrorCode[];
  /** Left out of the document (internal routes); still counted as described. */
  internal?: boolean;
  /** The error body's shape: the mesh's envelope (default) or OpenAI's (the /openai/v1 surface). */
  errorShape?: "mesh" | "openai";
}

const routes = new Map<string, RouteDoc>();

function describeRoute(doc: RouteDoc): RouteDoc {
  routes.set(`${doc.method} ${doc.path}`, doc);
  return doc;
}

export function describedRoutes(): RouteDoc[] {
  return [...routes.values()];
}

const JSON_TYPE = /^application\/([\w.-]+\+)?json\s*(;|$)/i;

/**
 * Before a route's JSON validator: the body is read as JSON whatever its Content-Type says (as
 * the edge always has: `curl -d` sends form-urlencoded, `fetch` with a string text/plain), and
 * an empty body is `{}`. @hono/zod-openapi would otherwise answer 415, or parse nothing.
 */
export function jsonBody(): MiddlewareHandler<AppEnv> {
  return async function jsonBody(c, next) {
    const bytes = new Uint8Array(await c.req.raw.arrayBuffer());
    const type = c.req.header("content-type");
    if (bytes.length === 0 || !type || !JSON_TYPE.test(type)) {
      const headers = new Headers(c.req.raw.headers);
      headers.set("content-type", "application/json");
      headers.delete("content-length");
      c.req.raw = new Request(c.req.raw, { headers, body: bytes.length === 0 ? "{}" : bytes });
    } else {
      c.req.raw = new Request(c.req.raw, { body: bytes });
    }
    await next();
  };
}

const TARGET_NAMES: Record<string, string> = { json: "body", query: "query", param: "path", header: "header" };

/**
 * The OpenAPIHono defaultHook: a request its route's schema refuses is 400 bad_request in the
 * one envelope, naming the first problems (`body.name: ...`), before the handler runs.
 */
export function meshValidationHook(result: { success: true } | { success: false; error: z.ZodError; target: string }): void {
  if (!result.success) throw new MeshError("bad_request", zodProblems(result.error, TARGET_NAMES[result.target] ?? result.target));
}

/** A described route that is also validated: what runs before its schemas check the request. */
export interface RouteDef extends RouteDoc {
  /** In order, before validation (auth, then the body limit): no key is 401 and an oversize body 413 whatever the body says. */
  middleware?: readonly MiddlewareHandler<AppEnv>[];
  /** Registered on a sub-app mounted here (`app.route`): the sub-app's path is `path` without it. */
  mountedAt?: string;
}

type JsonBodyOf<D> = D extends { body: { schema: infer S extends z.ZodType } }
  ? D extends { body: { contentType: string } } | { body: { checkedBy: "handler" } }
    ? {}
    : { body: { content: { "application/json": { schema: S } }; required: true } }
  : {};
type QueryOf<D> = D extends { query: infer Q extends z.ZodObject } ? { query: Q } : {};

/** What `meshRoute` hands `app.openapi`: typed so `c.req.valid` knows the body and query. */
export type MeshRouteConfig<D extends RouteDef> = {
  method: D["method"];
  path: D["path"];
  middleware: MiddlewareHandler<AppEnv>[];
  request: JsonBodyOf<D> & QueryOf<D>;
  responses: Record<number, { description: string }>;
};

/**
 * Describes a route (for /openapi.json) and returns its @hono/zod-openapi config, whose
 * validators check the same schema objects: a JSON body (required, application/json) and the
 * query. Responses are given without schemas here: the document's responses come from `doc`.
 */
export function meshRoute<const D extends RouteDef>(doc: D): MeshRouteConfig<D> {
  const { middleware, mountedAt, ...described } = doc;
  describeRoute(described);
  const json =
    doc.body?.schema && doc.body.checkedBy !== "handler" && (doc.body.contentType ?? "application/json") === "application/json" ? doc.body.schema : undefined;
  const params = paramsSchema(doc.params);
  const config = createRoute({
    method: described.method,
    path: mountedAt ? described.path.slice(mountedAt.length) : described.path,
    // The body is normalised to JSON after the route's own middleware (auth, body limit).
    middleware: [...(middleware ?? []), ...(json ? [jsonBody()] : [])],
    request: {
      ...(json ? { body: { content: { "application/json": { schema: json } }, required: true } } : {}),
      ...(doc.query ? { query: doc.query } : {}),
      ...(params ? { params } : {}),
    },
    responses: Object.fromEntries(Object.entries(doc.responses).map(([status, r]) => [status, { description: r.description }])),
  });
  return config as unknown as MeshRouteConfig<D>;
}

/** The params validator's schema: only when some parameter has a schema (the others: any string). */
function paramsSchema(params: Record<string, ParamDoc> | undefined): z.ZodObject | undefined {
  const entries = Object.entries(params ?? {});
  if (!entries.some(([, p]) => typeof p !== "string")) return undefined;
  return z.object(Object.fromEntries(entries.map(([name, p]) => [name, typeof p === "string" ? z.string() : p])));
}

/** /v1/models/{m} -> /v1/models/:m (how Hono writes it). */
export function honoPath(path: string): string {
  return path.replace(/\{([^}]+)\}/g, ":$1");
}

// ---------------------------------------------------------------------------------------------
// Shared schemas

const codes = Object.keys(ERROR_STATUS) as [ErrorCode, ...ErrorCode[]];

export const ErrorBodySchema = z
  .object({
    error: z.string().describe("What went wrong, for a person; never a stack or an internal detail."),
    code: z.enum(codes).describe("Stable code for programs; see the list of codes."),
    requestId: z.string().describe("Also in the `x-request-id` header; quote it when asking about a call."),
  })
  .describe("The one error envelope of every route.");

export const OpenAIErrorBodySchema = z
  .object({
    error: z.object({
      message: z.string(),
      type: z.string().describe("invalid_request_error, permission_error, requests, insufficient_quota or server_error."),
      param: z.string().nullable().describe("The request field at fault, when one is."),
      code: z.string().nullable().describe("invalid_api_key, model_not_found, rate_limit_exceeded, insufficient_quota, or the mesh's code."),
      request_id: z.string().describe("The mesh's request id (also in `x-request-id`)."),
    }),
  })
  .describe("OpenAI's error shape, on the /openai/v1 routes.");

const COMMON_ERRORS: Record<Auth, ErrorCode[]> = {
  infer: ["unauthorized", "forbidden", "rate_limited", "internal_error"],
  manage: ["unauthorized", "forbidden", "rate_limited", "internal_error"],
  admin: ["unauthorized", "internal_error"],
  none: ["internal_error"],
  signed: ["unauthorized", "internal_error"],
};

/**
 * What a call that runs on a model may answer besides its route's own codes: no such model or
 * version, the quota, and the regions' and nodes' failures (infer, generate, the OpenAI surface).
 */
export const RUN_ERRORS: readonly ErrorCode[] = [
  "model_not_found",
  "version_not_found",
  "quota_exceeded",
  "inference_failed",
  "region_error",
  "node_error",
  "no_region_available",
  "no_capacity",
  "deadline_exceeded",
];

const RESPONSE_HEADERS: Record<string, string> = {
  "x-request-id": "The call's id (the caller's own `x-request-id` when it sent a valid one).",
  traceparent: "The edge's span (W3C Trace Context): in the caller's trace when the request carried a valid `traceparent`, else in a new one.",
};

function jsonSchema(schema: z.ZodType, io: "input" | "output"): Record<string, unknown> {
  const out = z.toJSONSchema(schema, {
    target: "draft-2020-12",
    io,
    unrepresentable: "any",
    // zod writes every integer's safe-integer range; it says nothing a reader needs.
    override: ({ jsonSchema: js }) => {
      if (js.minimum === Number.MIN_SAFE_INTEGER) delete js.minimum;
      if (js.maximum === Number.MAX_SAFE_INTEGER) delete js.maximum;
    },
  }) as Record<string, unknown>;
  delete out.$schema;
  return out;
}

function headerObjects(headers: Record<string, string>) {
  return Object.fromEntries(Object.entries(headers).map(([k, v]) => [k, { description: v, schema: { type: "string" } }]));
}

function errorResponses(doc: RouteDoc) {
  const checksRequest = doc.query !== undefined || Object.values(doc.params ?? {}).some((p) => typeof p !== "string");
  const all = [
    ...new Set([
      ...COMMON_ERRORS[doc.auth],
      ...(doc.errors ?? []),
      ...(doc.body ? (["bad_request", "payload_too_large"] as ErrorCode[]) : []),
      ...(checksRequest ? (["bad_request"] as ErrorCode[]) : []),
    ]),
  ];
  if (doc.body && (doc.body.contentType ?? "application/json") === "application/json") all.push("invalid_json");
  const byStatus = new Map<number, ErrorCode[]>();
  for (const code of new Set(all)) {
    const status = ERROR_STATUS[code];
    byStatus.set(status, [...(byStatus.get(status) ?? []), code]);
  }
  const out: Record<string, unknown> = {};
  for (const [status, list] of [...byStatus].sort((a, b) => a[0] - b[0])) {
    const retry = list.some((c) => ["rate_limited", "quota_exceeded", "no_region_available", "no_capacity"].includes(c));
    out[String(status)] = {
      description: list.map((c) => `\`${c}\`: ${ERROR_DESCRIPTIONS[c]}`).join("\n\n"),
      headers: headerObjects({ ...RESPONSE_HEADERS, ...(retry ? { "retry-after": "Seconds to wait before trying again." } : {}) }),
      content: { "application/json": { schema: { $ref: doc.errorShape === "openai" ? "#/components/schemas/OpenAIError" : "#/components/schemas/Error" } } },
    };
  }
  return out;
}

function security(auth: Auth) {
  if (auth === "infer" || auth === "manage") return [{ apiKey: [] }];
  if (auth === "admin") return [{ adminToken: [] }];
  return [];
}

export interface OpenApiInfo {
  title: string;
  version: string;
  description: string;
}

export function openApiDocument(info: OpenApiInfo, serverUrl?: string): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  const sorted = describedRoutes()
    .filter((d) => !d.internal)
    .sort((a, b) => a.path.localeCompare(b.path) || a.method.localeCompare(b.method));
  for (const doc of sorted) {
    const parameters: unknown[] = [];
    for (const [name, p] of Object.entries(doc.params ?? {})) {
      const schema = typeof p === "string" ? { type: "string" } : jsonSchema(p, "input");
      parameters.push({ name, in: "path", required: true, description: typeof p === "string" ? p : schema.description, schema });
    }
    if (doc.query) {
      const shape = doc.query.shape as Record<string, z.ZodType>;
      for (const [name, schema] of Object.entries(shape)) {
        const js = jsonSchema(schema, "input");
        parameters.push({ name, in: "query", required: !schema.safeParse(undefined).success, description: js.description, schema: js });
      }
    }
    for (const [name, description] of Object.entries(doc.headers ?? {})) {
      parameters.push({ name, in: "header", required: false, description, schema: { type: "string" } });
    }
    const responses: Record<string, unknown> = {};
    for (const [status, r] of Object.entries(doc.responses)) {
      responses[status] = {
        description: r.description,
        headers: headerObjects({ ...RESPONSE_HEADERS, ...r.headers }),
        ...(r.schema || r.contentType
          ? { content: { [r.contentType ?? "application/json"]: r.schema ? { schema: jsonSchema(r.schema, "output") } : {} } }
          : {}),
      };
    }
    Object.assign(responses, errorResponses(doc));
    const op: Record<string, unknown> = {
      operationId: `${doc.method}${doc.path.replace(/[{}]/g, "").replace(/[^A-Za-z0-9]+(.)?/g, (_m, ch: string | undefined) => (ch ? ch.toUpperCase() : ""))}`,
      summary: doc.summary,
      ...(doc.description ? { description: doc.description } : {}),
      tags: [doc.tag],
      security: security(doc.auth),
      ...(parameters.length ? { parameters } : {}),
      responses,
    };
    if (doc.body) {
      const type = doc.body.contentType ?? "application/json";
      op.requestBody = {
        required: true,
        ...(doc.body.maxBytes ? { "x-body-limit": doc.body.maxBytes } : {}),
        description: [doc.body.description, doc.body.maxBytes ? `At most ${doc.body.maxBytes} bytes (413 above).` : ""].filter(Boolean).join(" "),
        content: {
          [type]: {
            schema: doc.body.schema ? jsonSchema(doc.body.schema, "input") : type === "application/octet-stream" ? { type: "string", format: "binary" } : {},
            ...(doc.body.example !== undefined ? { example: doc.body.example } : {}),
          },
        },
      };
    }
    (paths[doc.path] ??= {})[doc.method] = op;
  }
  return {
    openapi: "3.1.0",
    info: { ...info, "x-error-codes": Object.fromEntries(codes.map((c) => [c, { status: ERROR_STATUS[c], description: ERROR_DESCRIPTIONS[c] }])) },
    ...(serverUrl ? { servers: [{ url: serverUrl }] } : {}),
    tags: [...new Set(sorted.map((d) => d.tag))].map((name) => ({ name })),
    paths,
    components: {
      schemas: { Error: jsonSchema(ErrorBodySchema, "output"), OpenAIError: jsonSchema(OpenAIErrorBodySchema, "output") },
      securitySchemes: {
        apiKey: { type: "http", scheme: "bearer", description: "An API key: `Authorization: Bearer mesh_...`. Scopes: `infer`, `manage`." },
        adminToken: { type: "http", scheme: "bearer", description: "The operator's ADMIN_TOKEN." },
      },
    },
  };
}
