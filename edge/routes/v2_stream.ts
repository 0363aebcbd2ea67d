// Generation routes (key scope `infer`) for models that ship a tokenizer:
//
//   GET  /v2/models/{m}[/versions/{v}]/stream           WebSocket, many requests per socket
//   POST /v2/models/{m}[/versions/{v}]/generate_stream  Server-Sent Events, one request
//   POST /v2/models/{m}[/versions/{v}]/generate         the whole text at once (KServe generate)
//
// Every token is passed on as it arrives. The routes parse and authorise; generations.ts opens
// and carries an HTTP generation (SSE at the reader's pace, or gathered whole), stream-socket.ts
// runs an accepted WebSocket (windows and acks, caps, strikes).
// Auth: `Authorization: Bearer <key>`, or for browsers (which cannot set headers on a
// WebSocket) the subprotocol `mesh.key.<key>` offered next to `mesh.v1` (JSON text frames) or
// `mesh.v1.msgpack` (msgpack binary frames; also `?format=msgpack`). The server answers with
// the framing protocol, never the key. `?batch=true`: each server message is an array of the
// events ready at once (opt-in; one event per message by default).

import { z } from "zod";
import { MeshError } from "../../protocol/errors.js";
import type { AppContext } from "../context.js";
import { gatherGeneration, openHttpGeneration, sseGeneration, type OpenedGeneration } from "../generations.js";
import { authorize, bearer, limitBody, readJson, requireKey } from "../middleware.js";
import { meshRoute, RUN_ERRORS, type MeshApp } from "../openapi.js";
import { MAX_EVENTS_PER_MESSAGE, openStreamSocket } from "../stream-socket.js";
import { GenerateRequestSchema, MAX_GENERATE_BODY, parseGenerateInput, sseEvent } from "../stream-protocol.js";

export const KEY_PROTOCOL_PREFIX = "mesh.key.";
export const JSON_PROTOCOL = "mesh.v1";
export const MSGPACK_PROTOCOL = "mesh.v1.msgpack";

/** The KServe routes' request: read before the model is looked up (a bad body is a 400 first). */
async function openKserve(c: AppContext): Promise<OpenedGeneration> {
  const input = parseGenerateInput(await readJson(c.req.raw));
  return openHttpGeneration(c, c.req.param("m")!, c.req.param("v"), () => input);
}

async function generateStream(c: AppContext) {
  return sseGeneration(c, await openKserve(c), sseEvent);
}

async function generateWhole(c: AppContext) {
  const opened = await openKserve(c);
  const { text, end } = await gatherGeneration(c, opened);
  return c.json({
    model_name: end.model_name,
    model_version: end.model_version,
    ...(opened.input.id !== undefined ? { id: opened.input.id } : {}),
    text_output: text,
    finish_reason: end.finish_reason,
    usage: { prompt_tokens: end.prompt_tokens, completion_tokens: end.tokens, ...(end.cached_tokens ? { cached_tokens: end.cached_tokens } : {}) },
  });
}

/** The WebSocket's handshake: the key (header or subprotocol) and the framing; then stream-socket.ts. */
async function streamSocket(c: AppContext) {
  if ((c.req.header("upgrade") ?? "").toLowerCase() !== "websocket") {
    throw new MeshError("bad_request", "this route is a WebSocket: connect with 'Upgrade: websocket' (or use POST .../generate_stream for Server-Sent Events)");
  }
  const offered = (c.req.header("sec-websocket-protocol") ?? "")
    .split(",")
    .map((p) => p.trim())
    .filter(Boolean);
  const token = bearer(c.req.header("authorization")) ?? offered.find((p) => p.startsWith(KEY_PROTOCOL_PREFIX))?.slice(KEY_PROTOCOL_PREFIX.length) ?? null;
  if (!token) {
    throw new MeshError("unauthorized", `missing API key: send 'Authorization: Bearer <key>', or offer the subprotocol '${KEY_PROTOCOL_PREFIX}<key>' with '${JSON_PROTOCOL}'`);
  }
  const msgpack = c.req.query("format") === "msgpack" || offered.includes(MSGPACK_PROTOCOL);
  let protocol: string | null = null;
  if (offered.length > 0) {
    protocol = msgpack && offered.includes(MSGPACK_PROTOCOL) ? MSGPACK_PROTOCOL : offered.includes(JSON_PROTOCOL) ? JSON_PROTOCOL : offered.includes(MSGPACK_PROTOCOL) ? MSGPACK_PROTOCOL : null;
    if (!protocol) throw new MeshError("bad_request", `offer the subprotocol '${JSON_PROTOCOL}' (JSON frames) or '${MSGPACK_PROTOCOL}' (msgpack frames)`);
  }
  // Opening a socket counts against the key's rate limit like any call.
  const { key } = await authorize(c, token, "infer");
  const batch = c.req.query("batch") === "true";
  return openStreamSocket(c, { key, token, model: c.req.param("m")!, ref: c.req.param("v"), framing: msgpack ? "msgpack" : "json", batch, protocol });
}

// ---------------------------------------------------------------------------------------------
// Schemas and registration

const GenerateResponseSchema = z.object({
  model_name: z.string(),
  model_version: z.string(),
  id: z.string().optional(),
  text_output: z.string(),
  finish_reason: z.enum(["length", "stop", "cancelled"]),
  usage: z.object({
    prompt_tokens: z.number().int(),
    completion_tokens: z.number().int(),
    cached_tokens: z.number().int().optional().describe("Prompt tokens the node reused from a kept KV cache (a text this prompt continues); absent when none."),
  }),
});

/** The socket's framing by query, for clients that cannot offer subprotocols (default: JSON text frames, one event each). */
const StreamQuerySchema = z.object({
  format: z.enum(["json", "msgpack"]).optional().describe("`msgpack`: msgpack binary frames (as the subprotocol `mesh.v1.msgpack` asks); default JSON text frames."),
  batch: z
    .enum(["true", "false"])
    .optional()
    .describe(`\`true\`: every message from the server is an array of events (those ready at the same moment, in order, at most ${MAX_EVENTS_PER_MESSAGE}) instead of one event; default one event per message.`),
});

function registerStream(app: MeshApp, base: string, versioned: boolean): void {
  const auth = requireKey("infer");
  const params: Record<string, string> = { m: "Model name (a generative model with a tokenizer)." };
  if (versioned) params.v = "A version number, an alias or `latest`.";
  const generation = { tag: "Generation", auth: "infer", params, errors: ["bad_request", ...RUN_ERRORS] } as const;
  app.openapi(
    meshRoute({
      ...generation,
      method: "get",
      path: `${base}/stream`,
      summary: "Token stream over a WebSocket (many requests per socket)",
      description:
        "Send `{\"type\":\"generate\",\"id\",\"text_input\",\"parameters\",\"window\"}`; receive `progress`, `token` (one per token), then `done` or `error`, each naming its `id`. " +
        "Acknowledge tokens with `{\"type\":\"ack\",\"id\",\"tokens\":n}` (cumulative) to let more than `window` (default 256) be produced; `{\"type\":\"cancel\",\"id\"}` stops one. " +
        "Browsers authenticate with the subprotocol `mesh.key.<key>` next to `mesh.v1`; `mesh.v1.msgpack` (or `?format=msgpack`) switches to msgpack binary frames. " +
        "`?batch=true` (opt-in): every server message is an array of the events ready at the same moment instead of one event.",
      query: StreamQuerySchema,
      headers: {
        upgrade: "`websocket` (anything else is 400).",
        "sec-websocket-protocol": "`mesh.v1` (JSON frames) or `mesh.v1.msgpack`, and for browsers `mesh.key.<key>` instead of `Authorization`.",
      },
      responses: { 101: { description: "Switching protocols: the socket is open.", headers: { "sec-websocket-protocol": "The framing chosen (never the key)." } } },
    }),
    streamSocket,
  );
  // generate_stream and generate: the same request, two ways of answering it.
  const kserve = (max_tokens: number, temperature: number) =>
    ({
      ...generation,
      method: "post",
      headers: { "x-mesh-timeout-ms": "Deadline for the first token (default and maximum INFER_TIMEOUT_MS)." },
      // Checked by the handler with this schema (parseGenerateInput), which also turns it into
      // the generation's parameters: one pass, with the same messages as a WebSocket request's.
      body: { schema: GenerateRequestSchema, checkedBy: "handler", maxBytes: MAX_GENERATE_BODY, example: { text_input: "The river", parameters: { max_tokens, temperature, seed: 1 } } },
      middleware: [auth, limitBody(MAX_GENERATE_BODY)],
    }) as const;
  app.openapi(
    meshRoute({
      ...kserve(40, 0.8),
      path: `${base}/generate_stream`,
      summary: "Token stream as Server-Sent Events",
      description: "The same events as the WebSocket, one request per call: `event: token` lines with JSON data, ending with `done` or `error`. The node runs at the reader's pace.",
      responses: { 200: { description: "An event stream.", contentType: "text/event-stream" } },
    }),
    generateStream,
  );
  app.openapi(
    meshRoute({
      ...kserve(40, 0),
      path: `${base}/generate`,
      summary: "Generate text (KServe generate extension): the whole text at once",
      responses: {
        200: {
          description: "The generated text.",
          schema: GenerateResponseSchema,
          headers: { "x-mesh-region": "The region that ran it.", "x-mesh-node": "The node.", "x-mesh-version": "The version.", "server-timing": "queue, load, ttft, infer, total (ms)." },
        },
      },
    }),
    generateWhole,
  );
}

export function registerV2Stream(app: MeshApp): void {
  registerStream(app, "/v2/models/{m}", false);
  registerStream(app, "/v2/models/{m}/versions/{v}", true);
}
