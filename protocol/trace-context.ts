// W3C Trace Context (https://www.w3.org/TR/trace-context/): parsing and formatting of the
// `traceparent` value, and new spans. One call is one trace from the edge through its region to
// the node; each process that handles it opens its own span (a new parent-id within the same
// trace id) and sends that span on, so the next hop's parent is the hop before it. Only Web
// APIs (crypto.getRandomValues), so the Worker and Node share it.

import { toHex } from "./signing.js";

export interface TraceContext {
  /** 32 lowercase hex, never all zeros. */
  traceId: string;
  /** 16 lowercase hex, never all zeros: the span that sent (or, for our own, is) this context. */
  spanId: string;
  /** 2 lowercase hex; bit 0 is "sampled". */
  flags: string;
}

const ZERO_TRACE = "0".repeat(32);
const ZERO_SPAN = "0".repeat(16);
/** version 00 is exactly this; a later version may append fields after the flags ("-..."). */
const TRACEPARENT_RE = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;
/** Longest value we read: version 00 is 55 characters; a future version gets some room, bounded. */
const MAX_TRACEPARENT_CHARS = 512;

/**
 * The context a `traceparent` value carries, or null when the value is absent or not valid (the
 * spec's rule: an invalid traceparent is ignored and a new trace starts). Version ff is invalid;
 * version 00 must be exactly 55 characters; a higher version is read by its first four fields.
 */
export function parseTraceparent(value: string | null | undefined): TraceContext | null {
  if (typeof value !== "string" || value.length > MAX_TRACEPARENT_CHARS) return null;
  const m = TRACEPARENT_RE.exec(value.trim());
  if (!m) return null;
  const [, version, traceId, spanId, flags, rest] = m as unknown as [string, string, string, string, string, string | undefined];
  if (version === "ff") return null;
  if (version === "00" && rest !== undefined) return null;
  if (traceId === ZERO_TRACE || spanId === ZERO_SPAN) return null;
  return { traceId, spanId, flags };
}

/** The `traceparent` value (version 00) for a context. */
export function formatTraceparent(t: TraceContext): string {
  return `00-${t.traceId}-${t.spanId}-${t.flags}`;
}

/**
 * Random bytes are drawn 512 at a time and each used once: a getRandomValues call per span (a
 * node opens one per call) cost more than the rest of the span (bench/node-call-cost.ts). Filled
 * on first use, never at module load: the Worker allows no random values in its global scope.
 */
const POOL = new Uint8Array(512);
let poolAt = POOL.length;

function randomHex(bytes: number): string {
  if (poolAt + bytes > POOL.length) {
    crypto.getRandomValues(POOL);
    poolAt = 0;
  }
  const s = toHex(POOL.subarray(poolAt, poolAt + bytes));
  poolAt += bytes;
  return s;
}

function nonZero(bytes: number): string {
  for (;;) {
    const s = randomHex(bytes);
    if (!/^0+$/.test(s)) return s;
  }
}

/**
 * This process's span for a call: a new span id within the caller's trace (its flags kept), or,
 * with no valid parent, the root of a new trace (sampled: every process logs every call).
 */
export function childSpan(parent: TraceContext | null): TraceContext {
  return { traceId: parent?.traceId ?? nonZero(16), spanId: nonZero(8), flags: parent?.flags ?? "01" };
}

/** Parses `value` and opens this process's span under it; a new trace when it is not valid. */
export function spanFrom(value: string | null | undefined): TraceContext {
  return childSpan(parseTraceparent(value));
}
