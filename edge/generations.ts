// What the generation routes (KServe generate and generate_stream, the WebSocket, the OpenAI
// surface) share once a request is parsed and its key checked: the target it runs on (model,
// version, tokenizer), the plan generation-runner.ts runs, and the two HTTP ways of carrying it:
// Server-Sent Events at the reader's pace, or gathered whole. A route picks one and formats.
// Every way (the WebSocket's too) passes its events to the model's shadow copies (shadowsOf),
// which start once the served generation has ended.
//
// Back-pressure over HTTP: for SSE the response body is a ReadableStream the runtime pulls as
// the socket drains; each pull grants the region one more token, so the node runs at the
// reader's pace (plus what the TCP buffers between the edge and the reader hold). Gathered, the
// node runs at full speed.

import { asc, eq } from "drizzle-orm";
import { artifactKey } from "../protocol/presign.js";
import { MeshError } from "../protocol/errors.js";
import { GENERATE_LIMITS, type ChatMessage, type GenerateParams } from "../protocol/messages.js";
import { models } from "../schema/schema.js";
import { formatTraceparent } from "../protocol/trace-context.js";
import type { KeyRecord } from "./api-keys.js";
import { deadlineOf, services, type AppContext, type Services } from "./context.js";
import { bundleTokenizer, hasChatTemplate } from "./generative-bundle.js";
import { cancelOnAbort, Generation, runToEnd, type GenerationPlan } from "./generation-runner.js";
import { callerLocation } from "./geo.js";
import { log } from "./log.js";
import { chargeQuota } from "./middleware.js";
import { OpenAIParamError, plainChatPrompt } from "./openai-format.js";
import { requireModel, routeVersion, type ModelInfo, type VersionInfo } from "./model-registry.js";
import { HttpChannelSource, type ChannelSource } from "./stream-client.js";
import { generationShadows } from "./shadow-calls.js";
import { SseBody } from "./sse-body.js";
import { sockets } from "./stream-limits.js";
import type { GenerateInput, StreamEvent } from "./stream-protocol.js";
import { generativeSignature, versionTokenizer, type TokenizerInfo } from "./tokenizers.js";

/** Tokens an SSE stream lets the region run ahead of the reader (beyond the socket's buffers). */
export const SSE_WINDOW = 32;

export interface Target {
  model: ModelInfo;
  version: VersionInfo;
  /** An uploaded tokenizer; null when the version's bundle carries its own tokenizer.json. */
  tokenizer: TokenizerInfo | null;
}

/**
 * The model, version and tokenizer a generation runs on (no `ref`: the traffic split picks the
 * version); 4xx when it cannot be one. A bundle's own tokenizer.json comes before an uploaded one.
 */
export async function generationTarget(s: Services, key: KeyRecord, name: string, ref: string | undefined): Promise<Target> {
  const model = await requireModel(s, key.accountId, name);
  const { version } = routeVersion(model, ref, null);
  return versionTarget(s, model, version);
}

/** A version's target; 4xx when it cannot generate (also a shadow version's check, shadow-calls.ts). */
async function versionTarget(s: Services, model: ModelInfo, version: VersionInfo): Promise<Target> {
  const { problem } = generativeSignature(version.signature);
  if (problem) throw new MeshError("bad_request", `model '${model.name}' version ${version.version} cannot generate text: ${problem}`);
  if (bundleTokenizer(version)) return { model, version, tokenizer: null };
  const tokenizer = await versionTokenizer(s.db, model.id, version.version);
  if (!tokenizer) {
    throw new MeshError(
      "bad_request",
      `model '${model.name}' version ${version.version} has no tokenizer: upload its tokenizer.json with PUT /v1/models/${model.name}/versions/${version.version}/tokenizer, or put one in the version's bundle`,
    );
  }
  return { model, version, tokenizer };
}

/** The target of a model (and version) when it can generate now; null when it cannot (no such model or version, no tokenizer, not a decoder). */
export async function generativeTarget(s: Services, key: KeyRecord, name: string, ref: string | undefined): Promise<Target | null> {
  try {
    return await generationTarget(s, key, name, ref);
  } catch (err) {
    if (err instanceof MeshError && err.status < 500) return null;
    throw err;
  }
}

/** The account's models that can generate now (their latest, or the traffic split's version), by name; at most `max` looked at. */
export async function generativeTargets(s: Services, key: KeyRecord, max: number): Promise<Target[]> {
  const rows = await s.db.select({ name: models.name }).from(models).where(eq(models.accountId, key.accountId)).orderBy(asc(models.name)).limit(max);
  const out: Target[] = [];
  for (const r of rows) {
    const t = await generativeTarget(s, key, r.name, undefined);
    if (t) out.push(t);
  }
  return out;
}

/**
 * A chat's input for its target: the messages themselves when the version's bundle has a chat
 * template (the node renders them), else one plain "role: content" prompt written here.
 */
export async function chatInput(bucket: R2Bucket, t: Target, messages: ChatMessage[], params: GenerateParams): Promise<GenerateInput> {
  if (t.tokenizer === null && (await hasChatTemplate(bucket, t.version, artifactKey))) return { prompt: "", chat: messages, params };
  const prompt = plainChatPrompt(messages);
  if (prompt.length > GENERATE_LIMITS.maxPromptChars) throw new OpenAIParamError("messages", `the chat, written as one prompt, is longer than ${GENERATE_LIMITS.maxPromptChars} characters`);
  return { prompt, params };
}

/** The plan of one generation of this request (its own request id and window; a socket runs many). */
export function generationPlan(c: AppContext, t: Target, input: GenerateInput, opts: { requestId: string; id: string; window: number; pool: ChannelSource }): GenerationPlan {
  const startedAt = Date.now();
  return {
    services: services(c),
    key: c.get("key"),
    model: t.model,
    version: t.version,
    tokenizer: t.tokenizer,
    requestId: opts.requestId,
    id: opts.id,
    prompt: input.prompt,
    ...(input.chat ? { chat: input.chat } : {}),
    params: input.params,
    window: opts.window,
    caller: callerLocation(c.req.raw, c.get("config").localMode),
    startedAt,
    deadline: deadlineOf(c, startedAt),
    pool: opts.pool,
    traceparent: formatTraceparent(c.get("trace")),
  };
}

/**
 * The observer that starts a served generation's shadow copies once it ends (shadow-calls.ts),
 * or undefined when its model's rule copies it to none. `inputFor` makes the caller's request for a
 * shadow's version, as for the served one (a chat template is the version's own).
 */
export function shadowsOf(plan: GenerationPlan, inputFor: InputFor): ((ev: StreamEvent) => void) | undefined {
  return generationShadows(plan, async (version) => {
    const t = await versionTarget(plan.services, plan.model, version);
    return { tokenizer: t.tokenizer, input: await inputFor(t) };
  });
}

/** The caller's request made for a target (a chat depends on the version's template). */
export type InputFor = (t: Target) => GenerateInput | Promise<GenerateInput>;

/** A generation opened over HTTP, before its first frame (see openHttpGeneration). */
export interface OpenedGeneration {
  input: GenerateInput;
  /** How `input` was made: a shadow copy makes its own for its version. */
  inputFor: InputFor;
  t: Target;
  release: () => void;
  requestId: string;
  pool: ChannelSource;
}

/**
 * What the HTTP generation routes (SSE, plain generate, the OpenAI surface) share before their
 * first frame: the model resolved, the request (`inputFor` may depend on the version: a chat
 * template), a place among the account's running streams (released by the caller when the
 * generation ends) and the quota charged.
 */
export async function openHttpGeneration(
  c: AppContext,
  name: string,
  ref: string | undefined,
  inputFor: InputFor,
): Promise<OpenedGeneration> {
  const t = await generationTarget(services(c), c.get("key"), name, ref);
  const input = await inputFor(t);
  // Counted with the account's socket requests (its running cap) until it ends.
  const release = sockets.holdStream(c.get("key").accountId);
  try {
    await chargeQuota(c);
  } catch (err) {
    release();
    throw err;
  }
  const requestId = c.get("requestId");
  // One streamed HTTP request to the region per generation: no socket upgrade before it (see HttpRegionChannel).
  const pool = new HttpChannelSource(c.get("config"), callerLocation(c.req.raw, c.get("config").localMode).colo);
  return { input, inputFor, t, release, requestId, pool };
}

/**
 * Streams an opened generation as Server-Sent Events, each event written by `write` (which may
 * return "" to skip one). Credit follows the reader: the node runs at the pace the body is pulled
 * (sse-body.ts). A reader that goes away (the body cancelled, or request.signal), or that stops
 * reading for STREAM_STALL_TIMEOUT_MS once the buffers to it are full, cancels the generation on
 * the node.
 */
export async function sseGeneration(c: AppContext, opened: OpenedGeneration, write: (ev: StreamEvent) => string): Promise<Response> {
  const { input, inputFor, t, release, requestId, pool } = opened;
  const stallMs = c.get("config").streamStallTimeoutMs;
  let unlisten = () => {};
  // The generation is over for the body: its region stream and its place among the account's running streams go.
  let finished = false;
  const finish = () => {
    if (finished) return;
    finished = true;
    unlisten();
    pool.closeAll();
    release();
  };
  const body = new SseBody(
    {
      credit: (n) => gen.credit(n),
      // The cancel goes out on the region stream before it closes (closing it cancels too).
      stop: () => {
        gen.cancel();
        finish();
      },
    },
    SSE_WINDOW,
    stallMs,
    (info) => log("warn", requestId, "ending a server-sent event stream whose reader took nothing", { stallMs, ...info }),
  );
  const plan = generationPlan(c, t, input, { requestId, id: input.id ?? requestId, window: SSE_WINDOW, pool });
  const shadows = shadowsOf(plan, inputFor);
  const gen: Generation = new Generation(plan, (ev) => {
    // Before the body is looked at: a reader gone away still ends the generation (cancelled).
    shadows?.(ev);
    if (body.closed) return;
    body.write(write(ev), ev.type === "token");
    if (ev.type === "done" || ev.type === "error") {
      finish();
      body.end();
    }
  });
  // The caller's disconnect as the runtime reports it (compat flag enable_request_signal), besides the body's cancel.
  unlisten = cancelOnAbort(c.req.raw.signal, { cancel: () => body.gone(), finished: gen.finished }, plan.services.waitUntil);
  try {
    // No region took it: the shadow copies still run (they hear its error), the caller gets an HTTP error.
    await gen.start(shadows);
  } catch (err) {
    finish();
    throw err;
  }
  // Through c.body, not a bare Response: that would drop what init set on the context
  // (x-request-id, traceparent), which every answer carries, streams included.
  return c.body(body.stream, 200, {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache, no-transform",
    "x-accel-buffering": "no",
    "x-mesh-version": String(t.version.version),
    ...(gen.region ? { "x-mesh-region": gen.region } : {}),
  });
}

/**
 * Runs an opened generation to its end at full speed and gives its whole text with its `done`
 * event (an error ends as a thrown MeshError); sets the x-mesh-* and Server-Timing headers.
 */
export async function gatherGeneration(c: AppContext, opened: OpenedGeneration): Promise<{ text: string; end: Extract<StreamEvent, { type: "done" }> }> {
  const { input, inputFor, t, release, requestId, pool } = opened;
  const parts: string[] = [];
  const plan = generationPlan(c, t, input, { requestId, id: input.id ?? requestId, window: GENERATE_LIMITS.maxWindow, pool });
  const shadows = shadowsOf(plan, inputFor);
  let ran: Awaited<ReturnType<typeof runToEnd>>;
  try {
    // A caller that goes away while the text is gathered cancels the generation on the node.
    ran = await runToEnd(plan, parts, shadows, c.req.raw.signal);
  } finally {
    pool.closeAll();
    release();
  }
  const { gen, end } = ran;
  c.header("x-mesh-version", String(t.version.version));
  if (gen.region) c.header("x-mesh-region", gen.region);
  if (!end || end.type === "error") throw end ? new MeshError(end.code, end.error) : new MeshError("internal_error", "internal error");
  if (end.type !== "done") throw new MeshError("internal_error", "internal error");
  if (end.node) c.header("x-mesh-node", end.node);
  const tm = end.timing;
  c.header(
    "Server-Timing",
    [`queue;dur=${tm.queue_ms}`, `load;dur=${tm.load_ms}`, `ttft;dur=${tm.ttft_ms}`, `infer;dur=${tm.gen_ms}`, `total;dur=${tm.total_ms}`].join(", "),
  );
  return { text: parts.join(""), end };
}
