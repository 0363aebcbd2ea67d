// Shadow copies of a call (a traffic rule's `shadow` versions): each runs the caller's body on
// its version after the caller's own answer is in, so a shadow never competes with it, and is
// never waited for by the response. Its outputs are compared with the served ones (shadow.ts),
// the comparison logged and recorded on the shadow's usage row (GET /v1/usage: mismatches).

import { MeshError } from "../protocol/errors.js";
import { TensorError, toJsonTensor, type ParsedInferRequest } from "../formats/tensor.js";
import { NO_TIME, parseWith, rankFor, runCall, usageRow, type CallPlan, type InferBody, type Outcome } from "./infer-call.js";
import { log } from "./log.js";
import type { RankedRegion } from "./region-client.js";
import { compareOutputs } from "./shadow.js";
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
        // Cut the served id, not the suffix: a shadow must never share the served call's id,
        // which regions treat as an idempotency key.
        requestId: `${served.requestId.slice(0, 64 - `.shadow-v${n}`.length)}.shadow-v${n}`,
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
      recordUsage(s.db, { ...outcome.usage, matched: comparison ? (comparison.matched ? 1 : 0) : null }, s.waitUntil);
    }),
  );
}
