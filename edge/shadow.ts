// Comparing a shadow copy's answer with the answer the caller got, as a pure function: the same
// outputs (names, datatypes, shapes) and every value within a tolerance. The result is logged
// and counted in usage (GET /v1/usage: shadow mismatches), never returned to the caller.

import type { JsonTensor } from "../formats/tensor.js";

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
