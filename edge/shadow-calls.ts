// Shadow copies of a call or a generation (a traffic rule's `shadow` versions): each runs the
// caller's request on its version after the caller's own answer is in, a failure included (a
// generation: once it has ended, done, stopped or failed, or no region took it: Generation.start
// tells its shadows), so a shadow never competes with it, and is never waited
// for by the response. Its answer is compared with the served one (shadow.ts), the comparison
// logged and recorded on the shadow's usage row (GET /v1/usage: shadow calls, tokens,
// mismatches). Shadows are the mesh's own: no rate limit, quota or running-stream cap counts
// them, and their failure never reaches the caller.

import { MeshError } from "../protocol/errors.js";
import { GENERATE_LIMITS } from "../protocol/messages.js";
import { TensorError, toJsonTensor, type ParsedInferRequest } from "../formats/tensor.js";
import { NO_TIME, parseWith, rankFor, runCall, usageRow, type CallPlan, type InferBody, type Outcome } from "./infer-call.js";
import { generationUsageRow, runToEnd, type GenerationPlan } from "./generation-runner.js";
import { log } from "./log.js";
import type { VersionInfo } from "./model-registry.js";
import type { RankedRegion } from "./region-client.js";
import { compareGenerations, compareOutputs, shadowRequestId, type GenerationText } from "./shadow.js";
import { HttpChannelSource } from "./stream-client.js";
import type { GenerateInput, StreamEvent } from "./stream-protocol.js";
import type { TokenizerInfo } from "./tokenizers.js";
import { pickShadows } from "./traffic.js";
import { recordUsage } from "./usage.js";

/** Runs the shadow copies of a call once its own answer is in; logs and records the comparison. */
export async function runShadows(body: InferBody, served: CallPlan, servedOutcome: Promise<Outcome>, versions: number[]): Promise<void> {
  const primary = await servedOutcome;
  const s = served.services;
  await Promise.all(
    versions.map(async (n) => {
      const startedAt = Date.now();
      const plan: CallPlan = {
        ...served,
        requestId: shadowRequestId(served.requestId, n),
        startedAt,
        deadline: startedAt + s.config.inferTimeoutMs,
        shadowOf: served.version.version,
      };
      const failed = (error: MeshError): Outcome => ({
        ok: false,
        region: null,
        error,
        usage: usageRow(plan, { version: n, status: error.status, region: null, node: null, times: NO_TIME, edgeMs: 0 }),
      });
      let outcome: Outcome;
      const version = served.model.versions.find((v) => v.version === n);
      if (!version) {
        outcome = failed(new MeshError("version_not_found", `version ${n} is gone`));
      } else {
        let parsed: ParsedInferRequest | null = null;
        try {
          parsed = parseWith(body, version.signature);
        } catch (err) {
          if (!(err instanceof TensorError)) throw err;
          outcome = failed(new MeshError("invalid_tensor", err.message));
        }
        if (parsed) {
          const ranked = await rankFor(plan, served.model, version).catch(() => [] as RankedRegion[]);
          outcome = await runCall({ ...plan, version, parsed, ranked });
        }
      }
      outcome ??= failed(new MeshError("internal_error", "internal error"));
      const comparison = primary.ok && outcome.ok ? compareOutputs(primary.outputs.map(toJsonTensor), outcome.outputs.map(toJsonTensor)) : null;
      log(outcome.ok ? "info" : "warn", served.requestId, "shadow call", {
        model: served.model.name,
        served: served.version.version,
        shadow: n,
        servedStatus: primary.ok ? 200 : primary.error.status,
        shadowStatus: outcome.ok ? 200 : outcome.error.status,
        ...(outcome.ok ? {} : { shadowError: outcome.error.code }),
        ...(comparison ? { matched: comparison.matched, maxAbsDiff: comparison.maxAbsDiff, reason: comparison.reason } : {}),
      });
      recordUsage(s, { ...outcome.usage, matched: comparison ? (comparison.matched ? 1 : 0) : null });
    }),
  );
}

/**
 * What a shadow generation runs on its version: that version's tokenizer, and the caller's
 * request made for it (a chat is rendered per version: one bundle has a chat template, another
 * gets the plain prompt). Throws a MeshError when the version cannot generate.
 */
export type ShadowRetarget = (version: VersionInfo) => Promise<{ tokenizer: TokenizerInfo | null; input: GenerateInput }>;

/**
 * The shadow copies of a served generation: undefined when the model's rule copies it to none;
 * else an observer for the served generation's events, which gathers its text and, at its
 * `done` or `error`, starts the copies (after the caller's end, never waited for).
 */
export function generationShadows(served: GenerationPlan, retarget: ShadowRetarget): ((ev: StreamEvent) => void) | undefined {
  const versions = pickShadows(served.model.traffic, served.version.version);
  if (versions.length === 0) return undefined;
  const parts: string[] = [];
  return (ev) => {
    if (ev.type === "token") parts.push(ev.text_output);
    if (ev.type !== "done" && ev.type !== "error") return;
    const text: GenerationText = { ended: endedAs(ev), text: parts.join(""), tokens: parts.length };
    served.services.waitUntil(
      Promise.all(versions.map((n) => runShadowGeneration(served, text, n, retarget))).catch((err: unknown) =>
        log("warn", served.requestId, "shadow generation failed", { error: String(err) }),
      ),
    );
  };
}

type GenerationEndEvent = Extract<StreamEvent, { type: "done" | "error" }>;

/** How a generation's last event (none: it never ran) ended it, for the comparison. */
function endedAs(ev: GenerationEndEvent | null): GenerationText["ended"] {
  if (ev?.type !== "done") return "error";
  return ev.finish_reason === "cancelled" ? "cancelled" : "done";
}

/** One shadow generation on version `n`, run to its end at full speed; logged and recorded. */
async function runShadowGeneration(served: GenerationPlan, servedText: GenerationText, n: number, retarget: ShadowRetarget): Promise<void> {
  const s = served.services;
  const startedAt = Date.now();
  const version = served.model.versions.find((v) => v.version === n);
  // The served plan less its input: a shadow's prompt or chat is made for its own version.
  const { chat: _chat, prompt: _prompt, ...rest } = served;
  const base = { ...rest, requestId: shadowRequestId(served.requestId, n), startedAt, shadowOf: served.version.version };
  const refused = (error: MeshError) => ({ error, usage: generationUsageRow({ ...base, version: { version: n } }, { region: null, node: null, status: error.status, edgeMs: 0, queueMs: 0, inferMs: 0, tokensIn: 0, tokensOut: 0 }) });
  let outcome: { error: MeshError | null; usage: ReturnType<typeof generationUsageRow> };
  const parts: string[] = [];
  let end: GenerationEndEvent | null = null;
  if (!version) {
    outcome = refused(new MeshError("version_not_found", `version ${n} is gone`));
  } else {
    try {
      const { tokenizer, input } = await retarget(version);
      // Its own channel: the caller's (an SSE request, a WebSocket) may be gone by now.
      const pool = new HttpChannelSource(s.config, served.caller.colo);
      const plan: GenerationPlan = {
        ...base,
        version,
        tokenizer,
        prompt: input.prompt,
        ...(input.chat ? { chat: input.chat } : {}),
        // The served settings, the same seed and max_tokens included.
        params: served.params,
        window: GENERATE_LIMITS.maxWindow,
        deadline: startedAt + s.config.inferTimeoutMs,
        pool,
      };
      let ran: Awaited<ReturnType<typeof runToEnd>>;
      try {
        ran = await runToEnd(plan, parts);
      } finally {
        pool.closeAll();
      }
      end = ran.end;
      outcome = { error: end?.type === "error" ? new MeshError(end.code, end.error) : null, usage: ran.gen.usage! };
    } catch (err) {
      if (!(err instanceof MeshError)) log("error", served.requestId, "shadow generation threw", { shadow: n, error: String(err) });
      outcome = refused(err instanceof MeshError ? err : new MeshError("internal_error", "internal error"));
    }
  }
  const shadowText: GenerationText = {
    ended: endedAs(end),
    text: parts.join(""),
    tokens: parts.length,
  };
  const comparison = compareGenerations(servedText, shadowText, served.params);
  log(outcome.error ? "warn" : "info", served.requestId, "shadow generation", {
    model: served.model.name,
    served: served.version.version,
    shadow: n,
    servedEnd: servedText.ended,
    shadowStatus: outcome.usage.status,
    ...(outcome.error ? { shadowError: outcome.error.code } : {}),
    // Lengths always; whether the texts match only when sampling was deterministic.
    servedTokens: servedText.tokens,
    shadowTokens: shadowText.tokens,
    servedChars: servedText.text.length,
    shadowChars: shadowText.text.length,
    ...(comparison ? { matched: comparison.matched, reason: comparison.reason } : {}),
  });
  recordUsage(s, { ...outcome.usage, matched: comparison ? (comparison.matched ? 1 : 0) : null });
}
