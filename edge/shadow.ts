// Comparing a shadow copy's answer with the answer the caller got, as pure functions: for a
// call, the same outputs (names, datatypes, shapes) and every value within a tolerance; for a
// generation, the same text, judged only when sampling was deterministic. The result is logged
// and counted in usage (GET /v1/usage: shadow mismatches), never returned to the caller.

import type { GenerateParams } from "../protocol/messages.js";
import type { JsonTensor } from "../formats/tensor.js";

/**
 * A shadow copy's request id: never the served one's, which regions treat as an idempotency
 * key. The served id is cut, not the suffix, so ids stay within 64 characters and distinct.
 */
export function shadowRequestId(servedRequestId: string, version: number): string {
  const suffix = `.shadow-v${version}`;
  return `${servedRequestId.slice(0, 64 - suffix.length)}${suffix}`;
}

export interface ShadowComparison {
  matched: boolean;
  /** Largest absolute difference over numeric outputs present in both (0 when none). */
  maxAbsDiff: number;
  /** Why it did not match (first reason), for the log. */
  reason?: string;
}

export const SHADOW_TOLERANCE = 1e-4;

export function compareOutputs(served: JsonTensor[], shadow: JsonTensor[], tolerance = SHADOW_TOLERANCE): ShadowComparison {
  let maxAbsDiff = 0;
  let reason: string | undefined;
  const byName = new Map(shadow.map((t) => [t.name, t]));
  if (served.length !== shadow.length) reason = `${served.length} outputs vs ${shadow.length}`;
  for (const a of served) {
    const b = byName.get(a.name);
    if (!b) {
      reason ??= `output '${a.name}' missing`;
      continue;
    }
    if (a.datatype !== b.datatype) reason ??= `output '${a.name}': ${a.datatype} vs ${b.datatype}`;
    if (a.shape.length !== b.shape.length || a.shape.some((d, i) => d !== b.shape[i])) {
      reason ??= `output '${a.name}': shape [${a.shape}] vs [${b.shape}]`;
      continue;
    }
    for (let i = 0; i < a.data.length; i++) {
      const x = a.data[i];
      const y = b.data[i];
      if (typeof x === "number" && typeof y === "number") {
        const d = Math.abs(x - y);
        if (Number.isNaN(d) ? !(Number.isNaN(x) && Number.isNaN(y)) : d > tolerance) reason ??= `output '${a.name}' differs at ${i}`;
        if (Number.isFinite(d) && d > maxAbsDiff) maxAbsDiff = d;
      } else if (x !== y) {
        reason ??= `output '${a.name}' differs at ${i}`;
      }
    }
  }
  return reason ? { matched: false, maxAbsDiff, reason } : { matched: true, maxAbsDiff };
}

/** How a generation ended, as far as comparing it goes. */
export interface GenerationText {
  /** done: ran to its end (`finish_reason` length or stop); else cancelled or failed. */
  ended: "done" | "cancelled" | "error";
  text: string;
  tokens: number;
}

/**
 * Whether two generations under these settings must give the same text: greedy (temperature 0)
 * or a seed the caller gave. Otherwise each draws its own, and only the lengths say anything.
 */
export function deterministicSampling(params: GenerateParams): boolean {
  return params.temperature === 0 || params.seed !== undefined;
}

/**
 * A shadow generation's text against the served one's; null when there is nothing to judge
 * (sampling not deterministic, or either did not run to its end: a cut text proves nothing).
 */
export function compareGenerations(served: GenerationText, shadow: GenerationText, params: GenerateParams): ShadowComparison | null {
  if (!deterministicSampling(params) || served.ended !== "done" || shadow.ended !== "done") return null;
  if (served.text === shadow.text) return { matched: true, maxAbsDiff: 0 };
  let i = 0;
  while (i < served.text.length && served.text[i] === shadow.text[i]) i++;
  return { matched: false, maxAbsDiff: 0, reason: `texts differ at character ${i} (${served.tokens} tokens vs ${shadow.tokens})` };
}
