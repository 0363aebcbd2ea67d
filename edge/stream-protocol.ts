// What callers of the generation routes send and get (WebSocket, SSE and the plain generate
// route share it): the KServe generate extension's `text_input` / `parameters` in, and one
// event shape out: `progress` (why the first token is not here yet), `token` (one per token,
// as produced), then exactly one of `done` or `error` per request.

import { MeshError, type ErrorCode } from "../protocol/errors.js";
import { GENERATE_LIMITS, type ChatMessage, type FinishReason, type GenerateParams, type ProgressStage } from "../protocol/messages.js";

export interface GenerateInput {
  /** The caller's id of the request (WebSocket: names the request on the socket). */
  id?: string;
  prompt: string;
  /** A chat for the node to render with the bundle's chat template (then `prompt` is ""). */
  chat?: ChatMessage[];
  params: GenerateParams;
}

export const DEFAULT_MAX_TOKENS = 64;
/** Tokens a WebSocket stream may have in flight before the caller acknowledges some. */
export const DEFAULT_WS_WINDOW = 256;
export const ID_RE = /^[A-Za-z0-9._:-]{1,128}$/;

const PARAMETERS = ["max_tokens", "temperature", "top_k", "top_p", "repetition_penalty", "seed", "stop"] as const;

function bad(message: string): MeshError {
  return new MeshError("bad_request", message);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function intIn(v: unknown, name: string, min: number, max: number): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < min || v > max) throw bad(`'parameters.${name}' must be an integer from ${min} to ${max}`);
  return v;
}

/** Checks a generate request body (or WebSocket message) and resolves the parameters' defaults. */
export function parseGenerateInput(body: unknown): GenerateInput {
  if (!isRecord(body)) throw bad("the request must be a JSON object with 'text_input'");
  const L = GENERATE_LIMITS;
  const prompt = body.text_input;
  if (typeof prompt !== "string" || prompt.length === 0) throw bad("'text_input' must be a non-empty string");
  if (prompt.length > L.maxPromptChars) throw bad(`'text_input' is longer than ${L.maxPromptChars} characters`);
  let id: string | undefined;
  if (body.id !== undefined) {
    if (typeof body.id !== "string" || !ID_RE.test(body.id)) throw bad("'id' must be 1-128 characters of letters, digits, '.', '_', ':' or '-'");
    id = body.id;
  }
  const p = body.parameters ?? {};
  if (!isRecord(p)) throw bad("'parameters' must be an object");
  const unknown = Object.keys(p).filter((k) => !(PARAMETERS as readonly string[]).includes(k));
  if (unknown.length > 0) throw bad(`unknown parameter${unknown.length > 1 ? "s" : ""} ${unknown.map((k) => `'${k}'`).join(", ")} (known: ${PARAMETERS.join(", ")})`);
  const temperature = p.temperature ?? 1;
  if (typeof temperature !== "number" || !Number.isFinite(temperature) || temperature < 0 || temperature > L.maxTemperature) {
    throw bad(`'parameters.temperature' must be a number from 0 to ${L.maxTemperature} (0 = greedy)`);
  }
  let stop: string[] = [];
  if (p.stop !== undefined && p.stop !== null) {
    const list = typeof p.stop === "string" ? [p.stop] : p.stop;
    if (!Array.isArray(list) || list.length > L.maxStop || !list.every((s) => typeof s === "string" && s.length > 0 && s.length <= L.maxStopChars)) {
      throw bad(`'parameters.stop' must be a string or a list of at most ${L.maxStop} non-empty strings of at most ${L.maxStopChars} characters`);
    }
    stop = list as string[];
  }
  const seed = p.seed === undefined || p.seed === null ? undefined : intIn(p.seed, "seed", 0, 0xffffffff);
  const topP = p.top_p ?? 1;
  if (typeof topP !== "number" || !(topP > 0 && topP <= 1)) throw bad("'parameters.top_p' must be a number above 0 and at most 1 (1 = off)");
  const repetitionPenalty = p.repetition_penalty ?? 1;
  if (typeof repetitionPenalty !== "number" || !(repetitionPenalty > 0 && repetitionPenalty <= L.maxRepetitionPenalty)) {
    throw bad(`'parameters.repetition_penalty' must be a number above 0 and at most ${L.maxRepetitionPenalty} (1 = off)`);
  }
  return {
    ...(id !== undefined ? { id } : {}),
    prompt,
    params: {
      maxTokens: p.max_tokens === undefined ? DEFAULT_MAX_TOKENS : intIn(p.max_tokens, "max_tokens", 0, L.maxTokens),
      temperature,
      topK: p.top_k === undefined ? 0 : intIn(p.top_k, "top_k", 0, L.maxTopK),
      topP,
      repetitionPenalty,
      ...(seed !== undefined ? { seed } : {}),
      stop,
    },
  };
}

export interface StreamTimingJson {
  queue_ms: number;
  load_ms: number;
  /** Time to first token, from the edge's arrival of the request. */
  ttft_ms: number;
  gen_ms: number;
  total_ms: number;
}

export type StreamEvent =
  | { type: "progress"; id: string; stage: ProgressStage; position?: number; bytes?: number; total?: number; percent?: number }
  | { type: "token"; id: string; index: number; text_output: string; token_id: number }
  | {
      type: "done";
      id: string;
      model_name: string;
      model_version: string;
      finish_reason: FinishReason;
      prompt_tokens: number;
      /** Of the prompt tokens, those the node reused from a kept KV cache (a follow-up turn); absent: none. */
      cached_tokens?: number;
      tokens: number;
      region: string | null;
      node: string | null;
      timing: StreamTimingJson;
    }
  | { type: "error"; id: string | null; error: string; code: ErrorCode; requestId: string };

/** One Server-Sent Event: the event's type as its name, the event as JSON data. */
export function sseEvent(ev: StreamEvent): string {
  return `event: ${ev.type}\ndata: ${JSON.stringify(ev)}\n\n`;
}
