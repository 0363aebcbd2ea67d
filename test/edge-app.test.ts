// The edge app in-process (Hono's app.request, no workerd): every registered route is in the
// OpenAPI document, the document is well-formed and lists every error code, and errors outside
// any handler still come back in the one envelope. The same app runs in real workerd in the
// end-to-end tests; the reference page (/docs) drawing this document is in pages.test.ts.

import { beforeAll, describe, expect, it } from "vitest";
import { InferRequestSchema } from "../edge/infer-request.js";
import { ChatRequestSchema, CompletionRequestSchema, parseChatRequest } from "../edge/openai-format.js";
import { GenerateRequestSchema } from "../edge/stream-protocol.js";
import { ERROR_STATUS } from "../protocol/errors.js";
import { GENERATE_LIMITS } from "../protocol/messages.js";

// Imported by path at run time: the Worker's files are type-checked against workers-types
// (edge/tsconfig.json), which this Node project does not load.
const EDGE = "../edge/index.js";
type RouteDefinition = {
  type: string;
  route: { method: string; path: string; request?: { body?: { content: Record<string, { schema: unknown }> }; query?: unknown; params?: { shape: Record<string, unknown> } } };
};
type App = {
  routes: { method: string; path: string }[];
  request(path: string, init?: RequestInit, env?: unknown): Promise<Response>;
  openAPIRegistry: { definitions: RouteDefinition[] };
};
type Schema = { safeParse(v: unknown): { success: boolean } };
let app: App;
let honoPath: (p: string) => string;
let describedRoutes: () => {
  method: string;
  path: string;
  internal?: boolean;
  body?: { schema?: unknown; checkedBy?: "handler" };
  query?: unknown;
  params?: Record<string, unknown>;
}[];

const env = {
  ADMIN_TOKEN: "admin-token-for-tests-0123456789",
  REGION_SECRETS: JSON.stringify({ "us-west": "mesh-secret-for-tests-0123456789" }),
  PUBLIC_ORIGIN: "https://edge.test",
  REGIONS: JSON.stringify([{ name: "us-west", url: "http://127.0.0.1:9", lat: 37, lon: -122 }]),
};

beforeAll(async () => {
  const edge = (await import(/* @vite-ignore */ EDGE)) as { createApp(): App };
  app = edge.createApp();
  const openapi = (await import(/* @vite-ignore */ "../edge/openapi.js" as string)) as {
    honoPath: typeof honoPath;
    describedRoutes: typeof describedRoutes;
  };
  honoPath = openapi.honoPath;
  describedRoutes = openapi.describedRoutes;
});

describe("the OpenAPI document", () => {
  it("describes every route the app registers", () => {
    const described = new Set(describedRoutes().map((d) => `${d.method.toUpperCase()} ${honoPath(d.path)}`));
    const registered = new Set(app.routes.filter((r) => r.method !== "ALL").map((r) => `${r.method} ${r.path}`));
    const missing = [...registered].filter((r) => !described.has(r));
    expect(missing, "routes not declared with meshRoute(...)").toEqual([]);
    const stale = [...described].filter((d) => !registered.has(d));
    expect(stale, "described routes the app does not have").toEqual([]);
  });

  it("is OpenAPI 3.1 with schemas, security, error responses and the code list", async () => {
    const res = await app.request("/openapi.json", {}, env);
    expect(res.status).toBe(200);
    expect(res.headers.get("x-request-id")).toMatch(/^req_/);
    const spec = (await res.json()) as any;
    expect(spec.openapi).toBe("3.1.0");
    expect(Object.keys(spec.info["x-error-codes"]).sort()).toEqual(Object.keys(ERROR_STATUS).sort());
    const infer = spec.paths["/v2/models/{m}/infer"].post;
    expect(infer.security).toEqual([{ apiKey: [] }]);
    expect(infer.requestBody.content["application/json"].schema.properties.inputs.type).toBe("array");
    expect(infer.requestBody["x-body-limit"]).toBe(8 * 1024 * 1024);
    expect(infer.responses["429"].description).toContain("rate_limited");
    expect(infer.responses["429"].headers["retry-after"]).toBeDefined();
    expect(spec.paths["/v1/models/{m}/versions/{v}"].delete.responses["409"].description).toContain("version_in_use");
    expect(spec.paths["/v1/models/{m}/traffic"].put.requestBody.content["application/json"].schema.properties.split).toBeDefined();
    expect(spec.paths["/v1/usage"].get.parameters.map((p: any) => p.name)).toEqual(["model", "from", "to"]);
    expect(spec.paths["/internal/artifacts/{sha256}"]).toBeUndefined();
    for (const [path, ops] of Object.entries<any>(spec.paths)) {
      for (const [method, op] of Object.entries<any>(ops)) {
        expect(op.summary, `${method} ${path}`).toBeTruthy();
        // A success: 2xx, or 101 for a WebSocket route.
        expect(Object.keys(op.responses).some((s) => s.startsWith("2") || s === "101"), `${method} ${path}`).toBe(true);
        for (const m of path.match(/\{(\w+)\}/g) ?? []) {
          expect(op.parameters.some((p: any) => p.in === "path" && `{${p.name}}` === m), `${method} ${path} ${m}`).toBe(true);
        }
      }
    }
  });
});

describe("routes validate with the schemas they document", () => {
  it("every validated route's validator checks the very schema object its description (/openapi.json) holds", () => {
    const routes = app.openAPIRegistry.definitions.filter((d) => d.type === "route").map((d) => d.route);
    // Every route the app registers is declared through meshRoute (so validated by what it documents).
    const registered = [...new Set(app.routes.filter((r) => r.method !== "ALL").map((r) => `${r.method.toLowerCase()} ${r.path}`))];
    const declared = new Set(routes.map((r) => `${r.method} ${honoPath(r.path)}`));
    expect(registered.filter((r) => !declared.has(r)), "routes registered without meshRoute").toEqual([]);
    const described = new Map(describedRoutes().map((d) => [`${d.method} ${d.path}`, d]));
    for (const r of routes) {
      const doc = described.get(`${r.method} ${r.path}`);
      expect(doc, `${r.method} ${r.path} is described`).toBeDefined();
      const validated = r.request?.body?.content["application/json"]?.schema;
      // A body its handler checks (binary or compressed, OpenAI's error shape) is documented only.
      if (doc!.body?.checkedBy === "handler") expect(validated, `${r.method} ${r.path} body`).toBeUndefined();
      else if (validated || doc!.body?.schema) expect(validated, `${r.method} ${r.path} body`).toBe(doc!.body!.schema);
      if (r.request?.query || doc!.query) expect(r.request?.query, `${r.method} ${r.path} query`).toBe(doc!.query);
      // Path parameters with a schema are checked with that very schema; the others are any string.
      const checked = Object.entries(doc!.params ?? {}).filter(([, p]) => typeof p !== "string");
      if (checked.length === 0) expect(r.request?.params, `${r.method} ${r.path} params`).toBeUndefined();
      for (const [name, p] of checked) expect(r.request?.params?.shape[name], `${r.method} ${r.path} {${name}}`).toBe(p);
    }
  });

  it("a body its handler checks is documented with the very schema object the handler checks it with, rules included", async () => {
    // The handlers' checks: checkInferRequest, parseGenerateInput, parseChatRequest, parseCompletionRequest.
    const checkedWith = (path: string) =>
      path.startsWith("/openai/v1/chat/") ? ChatRequestSchema : path.startsWith("/openai/v1/") ? CompletionRequestSchema : path.endsWith("/infer") ? InferRequestSchema : GenerateRequestSchema;
    const byHandler = describedRoutes().filter((d) => d.body?.checkedBy === "handler");
    expect(byHandler.map((d) => d.path)).toEqual(expect.arrayContaining(["/openai/v1/chat/completions", "/openai/v1/completions", "/v2/models/{m}/infer", "/v2/models/{m}/generate"]));
    for (const d of byHandler) expect(d.body!.schema, `${d.method} ${d.path}`).toBe(checkedWith(d.path));
    // What /openapi.json says of the OpenAI bodies is those schemas' rules (the bounds and nulls the parsers take).
    const spec = (await (await app.request("/openapi.json", {}, env)).json()) as any;
    const chat = spec.paths["/openai/v1/chat/completions"].post.requestBody.content["application/json"].schema;
    expect(chat.required).toEqual(["model", "messages"]);
    expect(chat.properties.top_k.anyOf).toEqual([{ type: "integer", minimum: 0, maximum: GENERATE_LIMITS.maxTopK }, { type: "null" }]);
    expect(chat.properties.tools.description).toMatch(/not supported/i);
    expect(() => parseChatRequest({ model: "m", messages: [{ role: "user", content: "hi" }], top_k: null, top_p: null })).not.toThrow();
    const completion = spec.paths["/openai/v1/completions"].post.requestBody.content["application/json"].schema;
    expect(completion.properties.prompt.anyOf.map((s: any) => s.type)).toEqual(["string", "array"]);
  });

  it("a body the documented schema refuses is refused by the route (400 bad_request, the one envelope); one it takes gets through", async () => {
    const routes = app.openAPIRegistry.definitions.filter((d) => d.type === "route").map((d) => d.route);
    const schemaOf = (method: string, path: string) => routes.find((r) => r.method === method && r.path === path)!.request!.body!.content["application/json"]!.schema as Schema;
    const admin = { authorization: `Bearer ${env.ADMIN_TOKEN}`, "content-type": "application/json" };
    const cases: [string, string, Schema, unknown[]][] = [
      ["POST", "/v1/accounts", schemaOf("post", "/v1/accounts"), [{ name: 5 }, { name: "" }, { name: "a".repeat(129) }, { monthlyRequests: -1 }, { monthlyRequests: 1.5 }, { rateLimit: { perSecond: 0 } }, { surplus: true }, [1, 2, 3], "text"]],
      ["PATCH", "/v1/accounts/acc_x", schemaOf("patch", "/v1/accounts/{id}"), [{}, { name: null }, { monthlyRequests: "many" }, { id: "acc_y" }]],
    ];
    for (const [method, path, schema, bodies] of cases) {
      for (const b of bodies) {
        expect(schema.safeParse(b).success, `${method} ${path} ${JSON.stringify(b)} is refused by the schema`).toBe(false);
        const res = await app.request(path, { method, headers: admin, body: JSON.stringify(b) }, env);
        const body = (await res.json()) as any;
        expect({ status: res.status, code: body.code }, `${method} ${path} ${JSON.stringify(b)}`).toEqual({ status: 400, code: "bad_request" });
        expect(Object.keys(body).sort()).toEqual(["code", "error", "requestId"]);
        expect(body.error).toMatch(/^body/);
      }
    }
    // The OpenAI routes check their bodies in the handler, after a key's lookup (D1), so their
    // refusals are proven against a running mesh, in OpenAI's shape: openai-api.test.ts.
    // Without D1 a body the schema takes gets past validation to the handler (and fails there: 500).
    const valid = { name: "acme" };
    expect(schemaOf("post", "/v1/accounts").safeParse(valid).success).toBe(true);
    const through = await app.request("/v1/accounts", { method: "POST", headers: admin, body: JSON.stringify(valid) }, env);
    expect(((await through.json()) as any).code).toBe("internal_error");
  });

  it("a query the documented schema refuses is refused by the route before its handler (the stream route's framing)", async () => {
    for (const path of ["/v2/models/m/stream?format=xml", "/v2/models/m/versions/2/stream?format=JSON"]) {
      // No key and no Upgrade: the handler would refuse those; the query is refused first.
      const res = await app.request(path, {}, env);
      const body = (await res.json()) as any;
      expect({ status: res.status, code: body.code }, path).toEqual({ status: 400, code: "bad_request" });
      expect(Object.keys(body).sort()).toEqual(["code", "error", "requestId"]);
      expect(body.error).toMatch(/^query\.format: /);
    }
    // One it takes gets through to the handler (which wants a WebSocket upgrade).
    const through = await app.request("/v2/models/m/stream?format=msgpack", {}, env);
    expect(((await through.json()) as any).error).toContain("WebSocket");
  });

  it("JSON bodies are read whatever their Content-Type says, and an empty one is {}", async () => {
    for (const [type, body] of [[undefined, '{"name": 5}'], ["text/plain", '{"name": 5}'], ["application/x-www-form-urlencoded", '{"name": 5}']] as const) {
      const res = await app.request("/v1/accounts", { method: "POST", headers: { authorization: `Bearer ${env.ADMIN_TOKEN}`, ...(type ? { "content-type": type } : {}) }, body }, env);
      expect({ type, status: res.status, code: ((await res.json()) as any).code }).toEqual({ type, status: 400, code: "bad_request" });
    }
    const empty = await app.request("/v1/accounts/acc_x", { method: "PATCH", headers: { authorization: `Bearer ${env.ADMIN_TOKEN}` } }, env);
    expect(((await empty.json()) as any).error).toContain("send 'name'");
  });
});

describe("errors in-process", () => {
  it("an unknown route, a missing key and a bad admin body answer the one envelope", async () => {
    for (const [path, init, status, code] of [
      ["/nope", {}, 404, "not_found"],
      ["/v1/models", {}, 401, "unauthorized"],
      ["/v1/accounts", { method: "POST", headers: { authorization: `Bearer ${env.ADMIN_TOKEN}` }, body: "{nope" }, 400, "invalid_json"],
      ["/v1/accounts", { method: "POST", headers: { authorization: `Bearer ${env.ADMIN_TOKEN}` }, body: '{"name": 5}' }, 400, "bad_request"],
    ] as const) {
      const res = await app.request(path, init as RequestInit, env);
      expect(res.status, path).toBe(status);
      const body = (await res.json()) as any;
      expect(Object.keys(body).sort()).toEqual(["code", "error", "requestId"]);
      expect(body.code).toBe(code);
      expect(body.requestId).toBe(res.headers.get("x-request-id"));
    }
  });

  it("a route's path under a method it does not take is 405 with Allow, not 404", async () => {
    for (const [path, method, allow] of [
      ["/v2/models/m1/infer", "DELETE", ["POST"]],
      ["/v2/models/m1/versions/2/infer", "GET", ["POST"]],
      ["/v1/keys", "PUT", ["GET", "HEAD", "POST"]],
      ["/v1/keys/key_1", "GET", ["DELETE"]],
    ] as const) {
      const res = await app.request(path, { method }, env);
      expect(res.status, `${method} ${path}`).toBe(405);
      const body = (await res.json()) as any;
      expect(body.code).toBe("method_not_allowed");
      expect(Object.keys(body).sort()).toEqual(["code", "error", "requestId"]);
      expect(res.headers.get("allow")!.split(", ").sort()).toEqual([...allow]);
    }
    // A path no route has stays 404 under any method.
    expect((await app.request("/v2/models/m1/nope", { method: "DELETE" }, env)).status).toBe(404);
  });

  it("a misconfigured edge says so without detail", async () => {
    const res = await app.request("/v2/health/live", {}, { ...env, ADMIN_TOKEN: "short" });
    expect(res.status).toBe(500);
    const body = (await res.json()) as any;
    expect(body.code).toBe("internal_error");
    expect(body.error).not.toContain("ADMIN_TOKEN");
  });
});
