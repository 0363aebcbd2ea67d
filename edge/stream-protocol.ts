// What callers of the generation routes send and get (WebSocket, SSE and the plain generate
// route share it): the KServe generate extension's `text_input` / `parameters` in, and one
// event shape out: `progress` (why the first token is not here yet), `token` (one per token,
// as produced), then exactly one of `done` or `error` per request. The request's schema is
// both what /openapi.json documents and what every generate request is checked with.

import { z } from "zod";
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

/** Most bytes of one generate request: an HTTP body, or a WebSocket `generate` message. */
export const MAX_GENERATE_BODY = 256 * 1024;
export const DEFAULT_MAX_TOKENS = 64;
/** Tokens a WebSocket stream may have in flight before the caller acknowledges some. */
export const DEFAULT_WS_WINDOW = 256;
export const ID_RE = /^[A-Za-z0-9._:-]{1,128}$/;

const PARAMETERS = ["max_tokens", "temperature", "top_k", "top_p", "repetition_penalty", "seed", "stop"] as const;
const L = GENERATE_LIMITS;

/** A number schema whose every refusal says the one message (what the caller should send). */
const numIn = (error: string, checks: (n: z.ZodNumber, error: string) => z.ZodNumber) => checks(z.number({ error }), error);
const intIn = (name: string, min: number, max: number) =>
  numIn(`'parameters.${name}' must be an integer from ${min} to ${max}`, (n, error) => n.int({ error }).min(min, { error }).max(max, { error }));
const STOP_ERROR = `'parameters.stop' must be a string or a list of at most ${L.maxStop} non-empty strings of at most ${L.maxStopChars} characters`;
const StopSchema = z.string({ error: STOP_ERROR }).min(1, { error: STOP_ERROR }).max(L.maxStopChars, { error: STOP_ERROR });
const ID_ERROR = "'id' must be 1-128 characters of letters, digits, '.', '_', ':' or '-'";
const PROMPT_ERROR = "'text_input' must be a non-empty string";

/**
 * The KServe generate request (the HTTP routes' body; a WebSocket `generate` message carries
 * the same fields). /openapi.json documents it, and parseGenerateInput checks with it.
 */
export const GenerateRequestSchema = z.object(
  {
    id: z.string({ error: ID_ERROR }).regex(ID_RE, { error: ID_ERROR }).optional().describe("Echoed in every event (SSE: defaults to the request id)."),
    text_input: z
      .string({ error: PROMPT_ERROR })
      .min(1, { error: PROMPT_ERROR })
      .max(L.maxPromptChars, { error: `'text_input' is longer than ${L.maxPromptChars} characters` })
      .describe(`The prompt (at most ${L.maxPromptChars} characters).`),
    parameters: z
      .strictObject(
        {
          max_tokens: intIn("max_tokens", 0, L.maxTokens).optional().describe(`Most tokens to generate (default ${DEFAULT_MAX_TOKENS}).`),
          temperature: numIn(`'parameters.temperature' must be a number from 0 to ${L.maxTemperature} (0 = greedy)`, (n, error) => n.min(0, { error }).max(L.maxTemperature, { error }))
            .nullish()
            .describe("0 = greedy (default 1)."),
          top_k: intIn("top_k", 0, L.maxTopK).optional().describe("Sample among the k most likely tokens (0 = all)."),
          top_p: numIn("'parameters.top_p' must be a number above 0 and at most 1 (1 = off)", (n, error) => n.gt(0, { error }).max(1, { error }))
            .nullish()
            .describe("Nucleus sampling: the most likely tokens whose probabilities reach top_p (1 = off, the default)."),
          repetition_penalty: numIn(`'parameters.repetition_penalty' must be a number above 0 and at most ${L.maxRepetitionPenalty} (1 = off)`, (n, error) =>
            n.gt(0, { error }).max(L.maxRepetitionPenalty, { error }),
          )
            .nullish()
            .describe("Above 1 makes tokens already in the context less likely (1 = off, the default)."),
          seed: intIn("seed", 0, 0xffffffff).nullish().describe("Same seed, prompt and parameters: same text."),
          stop: z
            .union([StopSchema, z.array(StopSchema, { error: STOP_ERROR }).max(L.maxStop, { error: STOP_ERROR })], { error: STOP_ERROR })
            .nullish()
            .describe("Stop sequences (not included in the text)."),
        },
        {
          error: (iss) =>
            iss.code === "unrecognized_keys"
              ? `unknown parameter${iss.keys.length > 1 ? "s" : ""} ${iss.keys.map((k) => `'${k}'`).join(", ")} (known: ${PARAMETERS.join(", ")})`
              : "'parameters' must be an object",
        },
      )
      .nullish(),
  },
  { error: "the request must be a JSON object with 'text_input'" },
);

/**
 * Checks a generate request body (or WebSocket message) with GenerateRequestSchema and resolves
 * the parameters' defaults. The first problem is the 400's message (each field says its own).
 */
export function parseGenerateInput(body: unknown): GenerateInput {
  const r = GenerateRequestSchema.safeParse(body);
  if (!r.success) throw new MeshError("bad_request", r.error.issues[0]?.message ?? "invalid generate request");
  const { id, text_input: prompt } = r.data;
  const p = r.data.parameters ?? {};
  return {
    ...(id !== undefined ? { id } : {}),
    prompt,
    params: resolveParams(p, DEFAULT_MAX_TOKENS),
  };
}

/** Sampling fields as both surfaces spell them (snake case, null as absent). */
export interface SamplingFields {
  max_tokens?: number | null;
  temperature?: number | null;
  top_k?: number | null;
  top_p?: number | null;
  repetition_penalty?: number | null;
  seed?: number | null;
  stop?: string | string[] | null;
}

/** The generation's parameters, each unset field at its default (the OpenAI surface's too). */
export function resolveParams(p: SamplingFields, defaultMaxTokens: number): GenerateParams {
  return {
    maxTokens: p.max_tokens ?? defaultMaxTokens,
    temperature: p.temperature ?? 1,
    topK: p.top_k ?? 0,
    topP: p.top_p ?? 1,
    repetitionPenalty: p.repetition_penalty ?? 1,
    ...(p.seed !== undefined && p.seed !== null ? { seed: p.seed } : {}),
    stop: p.stop === undefined || p.stop === null ? [] : typeof p.stop === "string" ? [p.stop] : p.stop,
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
  if (ev.type === "token" && Number.isFinite(ev.index) && Number.isFinite(ev.token_id)) {
    // Every event but one or two is a token: its text is the only part worth JSON's escaping, so
    // the rest is written in place, the same bytes JSON.stringify gives the event (a token
    // event's keys in the order Generation makes them), without walking an object per token.
    return `event: token\ndata: {"type":"token","id":${JSON.stringify(ev.id)},"index":${ev.index},"text_output":${JSON.stringify(ev.text_output)},"token_id":${ev.token_id}}\n\n`;
  }
  return `event: ${ev.type}\ndata: ${JSON.stringify(ev)}\n\n`;
}
