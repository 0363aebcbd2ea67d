// The OpenAI API's shapes on the mesh's generation (pure, no I/O): a chat or completion request
// read into the mesh's prompt/chat and sampling parameters, the mesh's stream events written as
// OpenAI's response bodies and SSE chunks, and the mesh's errors in OpenAI's error shape.
// Unknown fields are ignored, as OpenAI-compatible servers do (clients send new fields before
// servers know them); fields that would change what comes back and that the mesh cannot honour
// (tools, logprobs, n > 1, penalties, JSON modes) are refused with a 400 naming the parameter.

import { MeshError, type ErrorCode } from "../protocol/errors.js";
import { GENERATE_LIMITS, type ChatMessage, type FinishReason, type GenerateParams } from "../protocol/messages.js";
import type { StreamEvent } from "./stream-protocol.js";

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

const bad = (param: string, message: string) => new OpenAIParamError(param, message);

type Rec = Record<string, unknown>;
const isRec = (v: unknown): v is Rec => typeof v === "object" && v !== null && !Array.isArray(v);
const given = (v: unknown) => v !== undefined && v !== null;

/** `model` as `<model>` or `<model>:<version or alias>`. */
export function parseModelField(v: unknown): { name: string; ref: string | undefined } {
  if (typeof v !== "string" || v.length === 0 || v.length > 200) throw bad("model", "'model' must name a model: '<model>' or '<model>:<version or alias>'");
  const i = v.indexOf(":");
  if (i < 0) return { name: v, ref: undefined };
  const name = v.slice(0, i);
  const ref = v.slice(i + 1);
  if (!name || !ref) throw bad("model", "'model' must be '<model>' or '<model>:<version or alias>'");
  return { name, ref };
}

/** Fields that change the answer and that the mesh does not do: refused unless left at their neutral value. */
const REFUSED: Record<string, (v: unknown) => boolean> = {
  tools: (v) => Array.isArray(v) && v.length > 0,
  tool_choice: (v) => v !== "none" && v !== "auto",
  functions: (v) => Array.isArray(v) && v.length > 0,
  function_call: (v) => v !== "none" && v !== "auto",
  logprobs: (v) => v !== false && v !== 0,
  top_logprobs: (v) => v !== 0,
  frequency_penalty: (v) => v !== 0,
  presence_penalty: (v) => v !== 0,
  logit_bias: (v) => !(isRec(v) && Object.keys(v).length === 0),
  response_format: (v) => !(isRec(v) && v.type === "text"),
  audio: () => true,
  modalities: (v) => !(Array.isArray(v) && v.every((m) => m === "text")),
  prediction: () => true,
  suffix: (v) => v !== "",
  echo: (v) => v !== false,
  best_of: (v) => v !== 1,
};

function refuseUnsupported(body: Rec): void {
  for (const [k, isSet] of Object.entries(REFUSED)) {
    if (given(body[k]) && isSet(body[k])) throw bad(k, `'${k}' is not supported by this server`);
  }
}

function numberIn(body: Rec, k: string, min: number, max: number, fallback: number, open = false): number {
  const v = body[k];
  if (!given(v)) return fallback;
  if (typeof v !== "number" || !Number.isFinite(v) || (open ? v <= min : v < min) || v > max) {
    throw bad(k, `'${k}' must be a number ${open ? "above" : "from"} ${min} ${open ? "and at most" : "to"} ${max}`);
  }
  return v;
}

function intIn(body: Rec, k: string, min: number, max: number): number | undefined {
  const v = body[k];
  if (!given(v)) return undefined;
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < min || v > max) throw bad(k, `'${k}' must be an integer from ${min} to ${max}`);
  return v;
}

/** The sampling parameters both endpoints share, resolved with their defaults. */
function sampling(body: Rec): GenerateParams {
  const L = GENERATE_LIMITS;
  refuseUnsupported(body);
  const n = body.n;
  if (given(n) && n !== 1) throw bad("n", "'n' must be 1: this server returns one choice per request");
  const maxTokens = intIn(body, "max_completion_tokens", 1, L.maxTokens) ?? intIn(body, "max_tokens", 1, L.maxTokens) ?? OPENAI_DEFAULT_MAX_TOKENS;
  let stop: string[] = [];
  if (given(body.stop)) {
    const list = typeof body.stop === "string" ? [body.stop] : body.stop;
    if (!Array.isArray(list) || list.length > L.maxStop || !list.every((s) => typeof s === "string" && s.length > 0 && s.length <= L.maxStopChars)) {
      throw bad("stop", `'stop' must be a string or a list of at most ${L.maxStop} non-empty strings of at most ${L.maxStopChars} characters`);
    }
    stop = list as string[];
  }
  const seed = intIn(body, "seed", 0, 0xffffffff);
  return {
    maxTokens,
    temperature: numberIn(body, "temperature", 0, L.maxTemperature, 1),
    // top_k and repetition_penalty are not OpenAI's; other compatible servers take them too.
    topK: intIn(body, "top_k", 0, L.maxTopK) ?? 0,
    topP: numberIn(body, "top_p", 0, 1, 1, true),
    repetitionPenalty: numberIn(body, "repetition_penalty", 0, L.maxRepetitionPenalty, 1, true),
    ...(seed !== undefined ? { seed } : {}),
    stop,
  };
}

export interface StreamOptions {
  stream: boolean;
  includeUsage: boolean;
}

function streamOptions(body: Rec): StreamOptions {
  const stream = body.stream;
  if (given(stream) && typeof stream !== "boolean") throw bad("stream", "'stream' must be a boolean");
  const o = body.stream_options;
  if (given(o) && !isRec(o)) throw bad("stream_options", "'stream_options' must be an object");
  const include = isRec(o) ? o.include_usage : undefined;
  if (given(include) && typeof include !== "boolean") throw bad("stream_options.include_usage", "'stream_options.include_usage' must be a boolean");
  return { stream: stream === true, includeUsage: include === true };
}

/** A message's content: a string, or a list of text parts (other part types are refused). */
function contentText(v: unknown, i: number): string {
  if (v === null || v === undefined) return "";
  if (typeof v === "string") return v;
  if (Array.isArray(v)) {
    return v
      .map((part) => {
        if (!isRec(part) || part.type !== "text" || typeof part.text !== "string") {
          throw bad(`messages[${i}].content`, "content parts other than text are not supported");
        }
        return part.text;
      })
      .join("");
  }
  throw bad(`messages[${i}].content`, "a message's 'content' must be a string or a list of text parts");
}

export interface ChatRequest extends StreamOptions {
  name: string;
  ref: string | undefined;
  messages: ChatMessage[];
  params: GenerateParams;
}

export function parseChatRequest(body: unknown): ChatRequest {
  if (!isRec(body)) throw new OpenAIParamError(null, "the body must be a JSON object");
  const L = GENERATE_LIMITS;
  const { name, ref } = parseModelField(body.model);
  const raw = body.messages;
  if (!Array.isArray(raw) || raw.length === 0 || raw.length > L.maxChatMessages) throw bad("messages", `'messages' must be a list of 1 to ${L.maxChatMessages} messages`);
  let chars = 0;
  const messages = raw.map((m, i): ChatMessage => {
    if (!isRec(m)) throw bad(`messages[${i}]`, "a message must be an object with 'role' and 'content'");
    const role = m.role;
    if (typeof role !== "string" || role.length === 0 || role.length > L.maxRoleChars) throw bad(`messages[${i}].role`, `a message's 'role' must be a string of 1 to ${L.maxRoleChars} characters`);
    if (given(m.tool_calls) || given(m.function_call)) throw bad(`messages[${i}].tool_calls`, "tool calls are not supported");
    const content = contentText(m.content, i);
    chars += content.length;
    if (chars > L.maxPromptChars) throw bad("messages", `the messages' contents must total at most ${L.maxPromptChars} characters`);
    return { role, content };
  });
  return { name, ref, messages, params: sampling(body), ...streamOptions(body) };
}

export interface CompletionRequest extends StreamOptions {
  name: string;
  ref: string | undefined;
  prompt: string;
  params: GenerateParams;
}

export function parseCompletionRequest(body: unknown): CompletionRequest {
  if (!isRec(body)) throw new OpenAIParamError(null, "the body must be a JSON object");
  const { name, ref } = parseModelField(body.model);
  let prompt = body.prompt;
  // One prompt per request (as with n): a list of one string is that string.
  if (Array.isArray(prompt) && prompt.length === 1 && typeof prompt[0] === "string") prompt = prompt[0];
  if (typeof prompt !== "string" || prompt.length === 0) throw bad("prompt", "'prompt' must be a non-empty string (lists of prompts and token ids are not supported)");
  if (prompt.length > GENERATE_LIMITS.maxPromptChars) throw bad("prompt", `'prompt' must be at most ${GENERATE_LIMITS.maxPromptChars} characters`);
  return { name, ref, prompt, params: sampling(body), ...streamOptions(body) };
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
        return opening() + chunk(kind === "chat" ? { delta: { content: ev.text_output }, finish_reason: null } : { text: ev.text_output, finish_reason: null });
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
