// The OpenAI-compatible surface for generative models (key scope `infer`), under /openai/v1 so
// the control plane keeps /v1:
//
//   POST /openai/v1/chat/completions   a chat, answered whole or (stream: true) as SSE chunks
//   POST /openai/v1/completions        a prompt, the same two ways
//   GET  /openai/v1/models[/{model}]   the account's generative models
//
// `model` is `<model>` or `<model>:<version or alias>`; without a version the traffic split
// picks one, as everywhere. Everything but the request and answer shapes is the mesh's own:
// the generation opens, streams and gathers through generations.ts (key, rate limit,
// running-stream cap, quota, usage in tokens, region choice, credit at the reader's pace, a
// reader that goes away cancels the node's generation). Chats: a version whose bundle has a
// chat template (tokenizer_config.json) gets the messages and renders them on the node; any
// other generative model gets a plain "role: content" prompt (generations.ts chatInput).
// Errors on this surface are OpenAI's shape ({"error":{"message","type","param","code"}}),
// with the mesh's request id in it and in x-request-id: a sub-app with its own error handler,
// so a route schema's refusal (meshValidationHook) comes out in that shape too.

import { OpenAPIHono } from "@hono/zod-openapi";
import { z } from "zod";
import { MeshError } from "../../protocol/errors.js";
import { services, type AppContext, type AppEnv } from "../context.js";
import { chatInput, gatherGeneration, generativeTarget, generativeTargets, openHttpGeneration, sseGeneration, type OpenedGeneration, type Target } from "../generations.js";
import { limitBody, onError, readJson, requireKey } from "../middleware.js";
import {
  ChatRequestSchema,
  chatCompletionBody,
  CompletionRequestSchema,
  completionBody,
  openAIErrorBody,
  OpenAIParamError,
  parseChatRequest,
  parseCompletionRequest,
  sseChunkWriter,
  type ResponseHead,
} from "../openai-format.js";
import { meshRoute, meshValidationHook, RUN_ERRORS, type MeshApp } from "../openapi.js";
import { MAX_GENERATE_BODY } from "../stream-protocol.js";

export const OPENAI_BASE = "/openai/v1";
/** Most models /models lists (an account with more names the rest by GET /v1/models). */
const MAX_LISTED = 500;

function head(prefix: string, opened: OpenedGeneration): ResponseHead {
  return { id: `${prefix}-${opened.requestId}`, created: Math.floor(Date.now() / 1000), model: `${opened.t.model.name}:${opened.t.version.version}` };
}

async function chatCompletions(c: AppContext) {
  const req = parseChatRequest(await readJson(c.req.raw));
  const opened = await openHttpGeneration(c, req.name, req.ref, (t) => chatInput(c.env.ARTIFACTS, t, req.messages, req.params));
  const h = head("chatcmpl", opened);
  if (req.stream) return sseGeneration(c, opened, sseChunkWriter("chat", h, req.includeUsage, opened.requestId));
  const { text, end } = await gatherGeneration(c, opened);
  return c.json(chatCompletionBody(h, text, end));
}

async function completions(c: AppContext) {
  const req = parseCompletionRequest(await readJson(c.req.raw));
  const opened = await openHttpGeneration(c, req.name, req.ref, () => ({ prompt: req.prompt, params: req.params }));
  const h = head("cmpl", opened);
  if (req.stream) return sseGeneration(c, opened, sseChunkWriter("completion", h, req.includeUsage, opened.requestId));
  const { text, end } = await gatherGeneration(c, opened);
  return c.json(completionBody(h, text, end));
}

/** A model as /models lists it (`id` names the version when the caller did). */
function modelEntry(t: Target, ref?: string) {
  return { id: ref === undefined ? t.model.name : `${t.model.name}:${ref}`, object: "model" as const, created: Math.floor(t.model.createdAt / 1000), owned_by: t.model.accountId };
}

async function listModels(c: AppContext) {
  const targets = await generativeTargets(services(c), c.get("key"), MAX_LISTED);
  return c.json({ object: "list", data: targets.map((t) => modelEntry(t)) });
}

async function retrieveModel(c: AppContext) {
  const raw = c.req.param("model")!;
  const i = raw.indexOf(":");
  const ref = i < 0 ? undefined : raw.slice(i + 1);
  const t = await generativeTarget(services(c), c.get("key"), i < 0 ? raw : raw.slice(0, i), ref);
  if (!t) throw new MeshError("model_not_found", `no generative model '${raw}' in this account`);
  return c.json(modelEntry(t, ref));
}

/** Every error on this surface, in OpenAI's shape: the mesh's own handler decides code and status (and logs). */
async function openAIOnError(err: Error, c: AppContext): Promise<Response> {
  const requestId = c.get("requestId");
  const mesh = err instanceof MeshError ? err : await meshErrorOf(await onError(err, c));
  const headers: Record<string, string> = { "content-type": "application/json", "x-request-id": requestId, ...mesh.headers };
  return new Response(JSON.stringify(openAIErrorBody(mesh, requestId)), { status: mesh.status, headers });
}

async function meshErrorOf(res: Response): Promise<MeshError> {
  const body = (await res.json()) as { error: string; code: ConstructorParameters<typeof MeshError>[0] };
  return new MeshError(body.code, body.error);
}

// ---------------------------------------------------------------------------------------------
// Schemas and registration

const UsageSchema = z.object({
  prompt_tokens: z.number().int(),
  completion_tokens: z.number().int(),
  total_tokens: z.number().int(),
  prompt_tokens_details: z.object({ cached_tokens: z.number().int() }).optional().describe("A follow-up chat turn or continued completion: prompt tokens the node reused from the kept KV cache."),
});
const Finish = z.enum(["stop", "length"]);
const ChatResponseSchema = z.object({
  id: z.string(),
  object: z.literal("chat.completion"),
  created: z.number().int(),
  model: z.string().describe("`<model>:<version>` that ran."),
  choices: z.array(z.object({ index: z.number(), message: z.object({ role: z.literal("assistant"), content: z.string(), refusal: z.null() }), logprobs: z.null(), finish_reason: Finish })),
  usage: UsageSchema,
});
const CompletionResponseSchema = z.object({
  id: z.string(),
  object: z.literal("text_completion"),
  created: z.number().int(),
  model: z.string(),
  choices: z.array(z.object({ index: z.number(), text: z.string(), logprobs: z.null(), finish_reason: Finish })),
  usage: UsageSchema,
});
const ModelEntrySchema = z.object({ id: z.string(), object: z.literal("model"), created: z.number().int(), owned_by: z.string() });

const SHAPE =
  "Errors are OpenAI's shape: `{\"error\":{\"message\",\"type\",\"param\",\"code\",\"request_id\"}}` (401 `invalid_api_key`, 404 `model_not_found`, 400 `invalid_request_error`, 429 `rate_limit_exceeded` / `insufficient_quota`); the statuses below are the mesh's codes.";

export function registerOpenAI(app: MeshApp): void {
  const oa = new OpenAPIHono<AppEnv>({ defaultHook: meshValidationHook });
  oa.onError(openAIOnError);
  const auth = requireKey("infer");
  // What every route of this surface shares: its mount, its key, its error shape.
  const surface = { tag: "OpenAI", errorShape: "openai", auth: "infer", mountedAt: OPENAI_BASE } as const;
  // The two generation routes: a body checked in the handler with the very schema documented here
  // (parseChatRequest, parseCompletionRequest), so a refusal names OpenAI's `param`.
  const generation = (schema: z.ZodType, example: unknown) =>
    ({
      ...surface,
      method: "post",
      headers: { "x-mesh-timeout-ms": "Deadline for the first token (default and maximum INFER_TIMEOUT_MS)." },
      body: { schema, checkedBy: "handler", maxBytes: MAX_GENERATE_BODY, example },
      errors: ["bad_request", ...RUN_ERRORS],
      middleware: [auth, limitBody(MAX_GENERATE_BODY)],
    }) as const;
  const streamed = "The answer (JSON), or with `stream: true` an event stream of chunks ending with `data: [DONE]`.";
  oa.openapi(
    meshRoute({
      ...generation(ChatRequestSchema, { model: "tiny-gpt", messages: [{ role: "user", content: "Tell me about the sea." }], max_tokens: 40, temperature: 0.8, seed: 1 }),
      path: `${OPENAI_BASE}/chat/completions`,
      summary: "Chat completion (OpenAI-compatible)",
      description:
        "The messages go to the node, which renders the version's chat template (tokenizer_config.json in its bundle); a model without one gets `role: content` lines and `assistant:`. " +
        "Tools, logprobs, penalties, JSON modes and n > 1 are refused (400 naming the parameter); other unknown fields are ignored. " +
        SHAPE,
      responses: { 200: { description: streamed, schema: ChatResponseSchema } },
    }),
    chatCompletions,
  );
  oa.openapi(
    meshRoute({
      ...generation(CompletionRequestSchema, { model: "tiny-gpt", prompt: "The river", max_tokens: 40, temperature: 0 }),
      path: `${OPENAI_BASE}/completions`,
      summary: "Text completion (OpenAI-compatible, legacy)",
      description: "One prompt (a list of one string is that string). " + SHAPE,
      responses: { 200: { description: streamed, schema: CompletionResponseSchema } },
    }),
    completions,
  );
  oa.openapi(
    meshRoute({
      ...surface,
      method: "get",
      path: `${OPENAI_BASE}/models`,
      summary: "The account's generative models (OpenAI-compatible)",
      description: `Models whose version (latest, or the traffic split's) can generate: a decoder graph with a tokenizer. At most ${MAX_LISTED}, by name. ` + SHAPE,
      responses: { 200: { description: "The list.", schema: z.object({ object: z.literal("list"), data: z.array(ModelEntrySchema) }) } },
      middleware: [auth],
    }),
    listModels,
  );
  oa.openapi(
    meshRoute({
      ...surface,
      method: "get",
      path: `${OPENAI_BASE}/models/{model}`,
      summary: "One generative model (OpenAI-compatible)",
      params: { model: "`<model>` or `<model>:<version or alias>`." },
      description: SHAPE,
      responses: { 200: { description: "The model.", schema: ModelEntrySchema } },
      errors: ["model_not_found"],
      middleware: [auth],
    }),
    retrieveModel,
  );
  oa.all("*", (c) => {
    throw new OpenAIParamError(null, `no route for ${c.req.method} ${new URL(c.req.url).pathname}`, "not_found");
  });
  app.route(OPENAI_BASE, oa);
}
