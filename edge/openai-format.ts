// The OpenAI API's shapes on the mesh's generation (pure, no I/O): a chat or completion request
// checked with the zod schema /openapi.json documents (ChatRequestSchema, CompletionRequestSchema)
// and read into the mesh's prompt/chat and sampling parameters, the mesh's stream events written
// as OpenAI's response bodies and SSE chunks, and the mesh's errors in OpenAI's error shape.
// Unknown fields are ignored, as OpenAI-compatible servers do (clients send new fields before
// servers know them); fields that would change what comes back and that the mesh cannot honour
// (tools, logprobs, n > 1, penalties, JSON modes) are refused with a 400 naming the parameter.

import { z } from "zod";
import { MeshError, type ErrorCode } from "../protocol/errors.js";
import { GENERATE_LIMITS, type ChatMessage, type FinishReason, type GenerateParams } from "../protocol/messages.js";
import { resolveParams, type StreamEvent } from "./stream-protocol.js";

/** max_tokens when the request names none. */
export const OPENAI_DEFAULT_MAX_TOKENS = 256;

/** A MeshError that names the request parameter at fault (OpenAI's `param`). */
export class OpenAIParamError extends MeshError {
  constructor(
    readonly param: string | null,
    message: string,
    code: ErrorCode = "bad_request",
  ) {
    super(code, message);
  }
}

type Rec = Record<string, unknown>;

// ---------------------------------------------------------------------------------------------
// The request bodies: one zod schema per endpoint, which /openapi.json documents and the parsers
// below check with. Every refusal carries its own message (what the caller should send); the
// issue's path, cut to the field a client sets, is OpenAI's `param`.

const L = GENERATE_LIMITS;
const MODEL_ERROR = "'model' must name a model: '<model>' or '<model>:<version or alias>'";

/** `<model>` or `<model>:<version or alias>` (both sides non-empty). */
const ModelSchema = z
  .string({ error: MODEL_ERROR })
  .max(200, { error: MODEL_ERROR })
  .regex(/^[^:]+(:[\s\S]+)?$/, { error: MODEL_ERROR })
  .describe("`<model>` or `<model>:<version or alias>` (without one, the traffic split picks the version).");

/** A number field, null or absent for its default. */
const numberIn = (k: string, min: number, max: number, open = false) => {
  const error = `'${k}' must be a number ${open ? "above" : "from"} ${min} ${open ? "and at most" : "to"} ${max}`;
  const n = z.number({ error });
  return (open ? n.gt(min, { error }) : n.min(min, { error })).max(max, { error }).nullish();
};
const intIn = (k: string, min: number, max: number) => {
  const error = `'${k}' must be an integer from ${min} to ${max}`;
  return z.number({ error }).int({ error }).min(min, { error }).max(max, { error }).nullish();
};
/** A field that changes the answer and that the mesh does not do: taken only at its neutral value (or null). */
const unsupported = (k: string, neutral: (error: string) => z.ZodType, only: string) =>
  neutral(`'${k}' is not supported by this server`).nullish().describe(`Not supported: taken only as ${only}.`);

const STOP_ERROR = `'stop' must be a string or a list of at most ${L.maxStop} non-empty strings of at most ${L.maxStopChars} characters`;
const StopSchema = z.string({ error: STOP_ERROR }).min(1, { error: STOP_ERROR }).max(L.maxStopChars, { error: STOP_ERROR });

/** What both endpoints take: the model, sampling, streaming, and OpenAI's fields the mesh refuses unless neutral. */
const Common = {
  model: ModelSchema,
  max_tokens: intIn("max_tokens", 1, L.maxTokens).describe(`Most tokens to generate (default ${OPENAI_DEFAULT_MAX_TOKENS}).`),
  max_completion_tokens: intIn("max_completion_tokens", 1, L.maxTokens).describe("The same, under its newer name (wins over max_tokens)."),
  temperature: numberIn("temperature", 0, L.maxTemperature).describe("0 = greedy (default 1)."),
  top_p: numberIn("top_p", 0, 1, true).describe("Nucleus sampling (default 1 = off)."),
  // top_k and repetition_penalty are not OpenAI's; other compatible servers take them too.
  top_k: intIn("top_k", 0, L.maxTopK).describe("Not OpenAI's: sample among the k most likely tokens (0 = all, the default)."),
  repetition_penalty: numberIn("repetition_penalty", 0, L.maxRepetitionPenalty, true).describe("Not OpenAI's: above 1 makes repeats less likely (default 1 = off)."),
  n: z.literal(1, { error: "'n' must be 1: this server returns one choice per request" }).nullish().describe("Only 1."),
  stop: z
    .union([StopSchema, z.array(StopSchema, { error: STOP_ERROR }).max(L.maxStop, { error: STOP_ERROR })], { error: STOP_ERROR })
    .nullish()
    .describe(`Up to ${L.maxStop} stop sequences (not included in the text).`),
  seed: intIn("seed", 0, 0xffffffff).describe("Same seed, prompt and parameters: same text."),
  stream: z.boolean({ error: "'stream' must be a boolean" }).nullish().describe("Server-Sent Events in OpenAI's chunk format, ending with `data: [DONE]`."),
  stream_options: z
    .object({ include_usage: z.boolean({ error: "'stream_options.include_usage' must be a boolean" }).nullish() }, { error: "'stream_options' must be an object" })
    .nullish()
    .describe("include_usage: a last chunk with empty choices and the usage."),
  tools: unsupported("tools", (error) => z.array(z.unknown(), { error }).max(0, { error }), "an empty list"),
  tool_choice: unsupported("tool_choice", (error) => z.enum(["none", "auto"], { error }), "'none' or 'auto'"),
  functions: unsupported("functions", (error) => z.array(z.unknown(), { error }).max(0, { error }), "an empty list"),
  function_call: unsupported("function_call", (error) => z.enum(["none", "auto"], { error }), "'none' or 'auto'"),
  logprobs: unsupported("logprobs", (error) => z.literal([false, 0], { error }), "false or 0"),
  top_logprobs: unsupported("top_logprobs", (error) => z.literal(0, { error }), "0"),
  frequency_penalty: unsupported("frequency_penalty", (error) => z.literal(0, { error }), "0"),
  presence_penalty: unsupported("presence_penalty", (error) => z.literal(0, { error }), "0"),
  logit_bias: unsupported("logit_bias", (error) => z.strictObject({}, { error }), "{}"),
  response_format: unsupported("response_format", (error) => z.object({ type: z.literal("text", { error }) }, { error }), '{"type": "text"}'),
  audio: unsupported("audio", (error) => z.null({ error }), "null"),
  modalities: unsupported("modalities", (error) => z.array(z.literal("text", { error }), { error }), '["text"]'),
  prediction: unsupported("prediction", (error) => z.null({ error }), "null"),
  suffix: unsupported("suffix", (error) => z.literal("", { error }), '""'),
  echo: unsupported("echo", (error) => z.literal(false, { error }), "false"),
  best_of: unsupported("best_of", (error) => z.literal(1, { error }), "1"),
};
const BODY_ERROR = "the body must be a JSON object";

const CONTENT_ERROR = "a message's 'content' must be a string or a list of text parts (other content parts are not supported)";
const ROLE_ERROR = `a message's 'role' must be a string of 1 to ${L.maxRoleChars} characters`;
const TOOL_CALLS_ERROR = "tool calls are not supported";
const MESSAGES_ERROR = `'messages' must be a list of 1 to ${L.maxChatMessages} messages`;
const MessageSchema = z.object(
  {
    role: z.string({ error: ROLE_ERROR }).min(1, { error: ROLE_ERROR }).max(L.maxRoleChars, { error: ROLE_ERROR }),
    content: z
      .union([z.string({ error: CONTENT_ERROR }), z.array(z.object({ type: z.literal("text", { error: CONTENT_ERROR }), text: z.string({ error: CONTENT_ERROR }) }, { error: CONTENT_ERROR }), { error: CONTENT_ERROR })], {
        error: CONTENT_ERROR,
      })
      .nullish()
      .describe("A string, or a list of text parts (joined); null is empty."),
    tool_calls: z.null({ error: TOOL_CALLS_ERROR }).optional().describe("Not supported."),
    function_call: z.null({ error: TOOL_CALLS_ERROR }).optional().describe("Not supported."),
  },
  { error: "a message must be an object with 'role' and 'content'" },
);
type Message = z.infer<typeof MessageSchema>;

function contentText(content: Message["content"]): string {
  if (content === null || content === undefined) return "";
  return typeof content === "string" ? content : content.map((p) => p.text).join("");
}

export const ChatRequestSchema = z.object(
  {
    ...Common,
    messages: z
      .array(MessageSchema, { error: MESSAGES_ERROR })
      .min(1, { error: MESSAGES_ERROR })
      .max(L.maxChatMessages, { error: MESSAGES_ERROR })
      .refine((ms) => ms.reduce((n, m) => n + contentText(m.content).length, 0) <= L.maxPromptChars, {
        error: `the messages' contents must total at most ${L.maxPromptChars} characters`,
      })
      .describe(`1 to ${L.maxChatMessages} messages; their contents total at most ${L.maxPromptChars} characters.`),
  },
  { error: BODY_ERROR },
);

const PROMPT_ERROR = "'prompt' must be a non-empty string (lists of prompts and token ids are not supported)";
const PromptSchema = z
  .string({ error: PROMPT_ERROR })
  .min(1, { error: PROMPT_ERROR })
  .max(L.maxPromptChars, { error: `'prompt' must be at most ${L.maxPromptChars} characters` });

export const CompletionRequestSchema = z.object(
  {
    ...Common,
    // One prompt per request (as with n): a list of one string is that string.
    prompt: z.union([PromptSchema, z.tuple([PromptSchema], { error: PROMPT_ERROR })], { error: PROMPT_ERROR }).describe(`One prompt of at most ${L.maxPromptChars} characters (a list of one is that one).`),
  },
  { error: BODY_ERROR },
);

/** How deep a refusal's path names the field at fault: a message's own field, stream_options' field, else the top-level field. */
const PARAM_DEPTH: Record<string, number> = { messages: 3, stream_options: 2 };

/** A schema's refusal as OpenAI's 400: its first problem's message, and the field at fault as `param`. */
function refusal(error: z.ZodError): OpenAIParamError {
  const issue = error.issues[0]!;
  const path = issue.path.slice(0, PARAM_DEPTH[String(issue.path[0])] ?? 1);
  const param = path.length ? path.map((p, i) => (typeof p === "number" ? `[${p}]` : i ? `.${String(p)}` : String(p))).join("") : null;
  return new OpenAIParamError(param, issue.message);
}

function checked<S extends z.ZodType>(schema: S, body: unknown): z.output<S> {
  const r = schema.safeParse(body);
  if (!r.success) throw refusal(r.error);
  return r.data;
}

/** `<model>` or `<model>:<version or alias>`, split (the schema has checked both sides are there). */
function splitModel(model: string): { name: string; ref: string | undefined } {
  const i = model.indexOf(":");
  return i < 0 ? { name: model, ref: undefined } : { name: model.slice(0, i), ref: model.slice(i + 1) };
}

const ModelFieldSchema = z.object({ model: ModelSchema });

/** `model` as `<model>` or `<model>:<version or alias>`. */
export function parseModelField(v: unknown): { name: string; ref: string | undefined } {
  return splitModel(checked(ModelFieldSchema, { model: v }).model);
}

/** The sampling parameters both endpoints share, resolved with their defaults. */
function sampling(b: z.output<z.ZodObject<typeof Common>>): GenerateParams {
  return resolveParams({ ...b, max_tokens: b.max_completion_tokens ?? b.max_tokens }, OPENAI_DEFAULT_MAX_TOKENS);
}

export interface StreamOptions {
  stream: boolean;
  includeUsage: boolean;
}

function streamOptions(b: z.output<z.ZodObject<typeof Common>>): StreamOptions {
  return { stream: b.stream === true, includeUsage: b.stream_options?.include_usage === true };
}

export interface ChatRequest extends StreamOptions {
  name: string;
  ref: string | undefined;
  messages: ChatMessage[];
  params: GenerateParams;
}

/** Checks a chat completion body with ChatRequestSchema and reads it into the mesh's chat. */
export function parseChatRequest(body: unknown): ChatRequest {
  const b = checked(ChatRequestSchema, body);
  const messages = b.messages.map((m): ChatMessage => ({ role: m.role, content: contentText(m.content) }));
  return { ...splitModel(b.model), messages, params: sampling(b), ...streamOptions(b) };
}

export interface CompletionRequest extends StreamOptions {
  name: string;
  ref: string | undefined;
  prompt: string;
  params: GenerateParams;
}

/** Checks a completion body with CompletionRequestSchema and reads it into the mesh's prompt. */
export function parseCompletionRequest(body: unknown): CompletionRequest {
  const b = checked(CompletionRequestSchema, body);
  return { ...splitModel(b.model), prompt: typeof b.prompt === "string" ? b.prompt : b.prompt[0], params: sampling(b), ...streamOptions(b) };
}

/**
 * A chat as one plain prompt, for a model without a chat template (the mesh's older generative
 * models): one "role: content" line per message, then "assistant:" for the reply to follow.
 */
export function plainChatPrompt(messages: readonly ChatMessage[]): string {
  return messages.map((m) => `${m.role}: ${m.content}\n`).join("") + "assistant:";
}

/** OpenAI's finish_reason for the mesh's (a cancelled generation reports where it stopped: "stop"). */
export function finishReason(r: FinishReason): "stop" | "length" {
  return r === "length" ? "length" : "stop";
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  /** OpenAI's field: prompt tokens served from a cache (conversation affinity); only when some were. */
  prompt_tokens_details?: { cached_tokens: number };
}

export function usageOf(end: Extract<StreamEvent, { type: "done" }>): Usage {
  return {
    prompt_tokens: end.prompt_tokens,
    completion_tokens: end.tokens,
    total_tokens: end.prompt_tokens + end.tokens,
    ...(end.cached_tokens ? { prompt_tokens_details: { cached_tokens: end.cached_tokens } } : {}),
  };
}

/** What every body and chunk of one response names. */
export interface ResponseHead {
  id: string;
  created: number;
  /** `<model>:<version>`: the version that ran (a traffic split may pick one). */
  model: string;
}

export function chatCompletionBody(head: ResponseHead, text: string, end: Extract<StreamEvent, { type: "done" }>) {
  return {
    id: head.id,
    object: "chat.completion" as const,
    created: head.created,
    model: head.model,
    choices: [{ index: 0, message: { role: "assistant" as const, content: text, refusal: null }, logprobs: null, finish_reason: finishReason(end.finish_reason) }],
    usage: usageOf(end),
  };
}

export function completionBody(head: ResponseHead, text: string, end: Extract<StreamEvent, { type: "done" }>) {
  return {
    id: head.id,
    object: "text_completion" as const,
    created: head.created,
    model: head.model,
    choices: [{ index: 0, text, logprobs: null, finish_reason: finishReason(end.finish_reason) }],
    usage: usageOf(end),
  };
}

const data = (v: unknown) => `data: ${JSON.stringify(v)}\n\n`;
export const SSE_DONE = "data: [DONE]\n\n";

/**
 * Writes one request's stream events as OpenAI SSE chunks: chat (`chat.completion.chunk`,
 * the first carrying the role) or completion (`text_completion`); the finish in its own chunk,
 * then (include_usage) a chunk with empty choices and the usage, then `data: [DONE]`. An error
 * after the stream began is a `data: {"error": ...}` event (the official clients throw it).
 * Progress (queued, loading) becomes SSE comments, which clients skip: the connection stays busy.
 */
export function sseChunkWriter(kind: "chat" | "completion", head: ResponseHead, includeUsage: boolean, requestId: string): (ev: StreamEvent) => string {
  let started = false;
  const usageField = includeUsage ? { usage: null } : {};
  const chunk = (choice: Rec) =>
    data({
      id: head.id,
      object: kind === "chat" ? "chat.completion.chunk" : "text_completion",
      created: head.created,
      model: head.model,
      choices: [{ index: 0, ...choice, logprobs: null }],
      ...usageField,
    });
  // A token's chunk is the same JSON but for its text: written once around a marker, then each
  // token's chunk is the text's JSON between the two halves (the bytes `chunk` would give it,
  // without building and walking the chunk object per token).
  const marker = "\u0000token\u0000";
  const template = chunk(kind === "chat" ? { delta: { content: marker }, finish_reason: null } : { text: marker, finish_reason: null });
  const at = template.lastIndexOf(JSON.stringify(marker));
  const before = template.slice(0, at);
  const after = template.slice(at + JSON.stringify(marker).length);
  const opening = () => {
    if (started || kind !== "chat") return "";
    started = true;
    return chunk({ delta: { role: "assistant", content: "" }, finish_reason: null });
  };
  return (ev) => {
    switch (ev.type) {
      case "progress":
        return `: ${ev.stage}${ev.percent !== undefined ? ` ${ev.percent}%` : ""}\n\n`;
      case "token":
        return opening() + before + JSON.stringify(ev.text_output) + after;
      case "done": {
        const finish = finishReason(ev.finish_reason);
        let out = opening() + chunk(kind === "chat" ? { delta: {}, finish_reason: finish } : { text: "", finish_reason: finish });
        if (includeUsage) out += data({ id: head.id, object: kind === "chat" ? "chat.completion.chunk" : "text_completion", created: head.created, model: head.model, choices: [], usage: usageOf(ev) });
        return out + SSE_DONE;
      }
      case "error":
        return data(openAIErrorBody(new MeshError(ev.code, ev.error), requestId));
    }
  };
}

/** OpenAI's error `type` and `code` for a mesh error code. */
function openAIKind(code: ErrorCode): { type: string; code: string | null } {
  switch (code) {
    case "unauthorized":
      return { type: "invalid_request_error", code: "invalid_api_key" };
    case "forbidden":
      return { type: "permission_error", code: "insufficient_permissions" };
    case "model_not_found":
    case "version_not_found":
      return { type: "invalid_request_error", code: "model_not_found" };
    case "rate_limited":
      return { type: "requests", code: "rate_limit_exceeded" };
    case "quota_exceeded":
      return { type: "insufficient_quota", code: "insufficient_quota" };
    default: {
      const status = new MeshError(code, "").status;
      return { type: status >= 500 ? "server_error" : "invalid_request_error", code };
    }
  }
}

export interface OpenAIErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null; request_id: string };
}

/** The error body OpenAI's clients read (`request_id` is the mesh's, also in x-request-id). */
export function openAIErrorBody(err: MeshError, requestId: string): OpenAIErrorBody {
  const kind = openAIKind(err.code);
  const param = err instanceof OpenAIParamError ? err.param : err.code === "model_not_found" || err.code === "version_not_found" ? "model" : null;
  return { error: { message: err.message, type: kind.type, param, code: kind.code, request_id: requestId } };
}
