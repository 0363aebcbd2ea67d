// Latency histograms with fixed, log-spaced buckets, and their form as a Redis hash.
//
// GET /v1/regions reports percentiles over an hour of calls; keeping every sample made the
// report's cost grow with traffic. A histogram's size does not: BUCKETS buckets per doubling
// of latency (HDR-style), so a percentile read from it is off by at most one bucket's width,
// which is SUB_BUCKETS-th root of 2 (about 4.4%) of the value; reported at the bucket's
// geometric middle, the error is at most half that (about 2.2%).
//
// Pure TypeScript, no Node-only imports: the Worker writes and reads these.

/** Buckets per doubling of latency. */
export const SUB_BUCKETS = 16;
/** Lower edge of bucket 1 (ms); bucket 0 holds everything below it. */
export const MIN_MS = 1 / 64;
/** Doublings covered: bucket edges run from MIN_MS to MIN_MS * 2^OCTAVES (about 17.5 min). */
export const OCTAVES = 26;
/** Buckets in all; the last one also holds everything above its upper edge. */
export const BUCKETS = SUB_BUCKETS * OCTAVES;

/** The bucket a latency (ms) falls in. */
export function bucketOf(ms: number): number {
  if (!(ms >= MIN_MS)) return 0; // also NaN and negatives
  const i = Math.floor(Math.log2(ms / MIN_MS) * SUB_BUCKETS);
  return Math.min(BUCKETS - 1, Math.max(0, i));
}

/** A bucket's edges in ms: [lower, upper). Bucket 0 starts at 0. */
export function bucketBounds(i: number): [number, number] {
  const lower = i <= 0 ? 0 : MIN_MS * 2 ** (i / SUB_BUCKETS);
  return [lower, MIN_MS * 2 ** ((i + 1) / SUB_BUCKETS)];
}

/** The value a bucket stands for: its geometric middle (bucket 0: half its upper edge). */
export function bucketValue(i: number): number {
  if (i <= 0) return MIN_MS / 2;
  return MIN_MS * 2 ** ((i + 0.5) / SUB_BUCKETS);
}

/** A histogram's occupied buckets only: what a cache keeps (a few hundred bytes, not 3 KB). */
export interface SparseHistogram {
  buckets: Uint16Array;
  counts: Float64Array;
  errors: number;
}

export interface HistogramSummary {
  p50: number;
  p95: number;
  p99: number;
  /** Calls counted, errors included. */
  count: number;
  /** Calls answered with a server error: counted, but not in the percentiles. */
  errors: number;
}

/** Counts per bucket of successful calls' latencies, plus a count of failed calls. */
export class LatencyHistogram {
  readonly counts = new Float64Array(BUCKETS);
  ok = 0;
  errors = 0;

  add(ms: number, n = 1): void {
    this.addBucket(bucketOf(ms), n);
  }

  addBucket(i: number, n: number): void {
    if (!(i >= 0 && i < BUCKETS && n > 0)) return;
    this.counts[i] = this.counts[i]! + n;
    this.ok += n;
  }

  addSparse(s: SparseHistogram): this {
    for (let k = 0; k < s.buckets.length; k++) this.addBucket(s.buckets[k]!, s.counts[k]!);
    this.errors += s.errors;
    return this;
  }

  toSparse(): SparseHistogram {
    let used = 0;
    for (let i = 0; i < BUCKETS; i++) if (this.counts[i]! > 0) used++;
    const buckets = new Uint16Array(used);
    const counts = new Float64Array(used);
    for (let i = 0, k = 0; i < BUCKETS; i++) {
      if (this.counts[i]! > 0) {
        buckets[k] = i;
        counts[k++] = this.counts[i]!;
      }
    }
    return { buckets, counts, errors: this.errors };
  }

  merge(other: LatencyHistogram): this {
    for (let i = 0; i < BUCKETS; i++) this.counts[i] = this.counts[i]! + other.counts[i]!;
    this.ok += other.ok;
    this.errors += other.errors;
    return this;
  }

  /**
   * The p-th percentile (0..100) of the successful calls, nearest rank (the value of the
   * smallest sample with at least p% at or below it), as its bucket's middle; 0 when empty.
   */
  percentile(p: number): number {
    if (this.ok === 0) return 0;
    const rank = Math.min(this.ok, Math.max(1, Math.ceil((p / 100) * this.ok)));
    let seen = 0;
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.counts[i]!;
      if (seen >= rank) return bucketValue(i);
    }
    return bucketValue(BUCKETS - 1);
  }

  /** p50/p95/p99 rounded to 0.01 ms, with the counts. */
  summary(): HistogramSummary {
    const r = (p: number) => Math.round(this.percentile(p) * 100) / 100;
    return { p50: r(50), p95: r(95), p99: r(99), count: this.ok + this.errors, errors: this.errors };
  }
}

// ---------------------------------------------------------------------------------------------
// As a Redis hash: one hash per (region, minute, view), one field per caller colo and bucket
// ("SJC:143") plus one per colo for errors ("SJC:e"), each a count raised with HINCRBY, and the
// hash's total ("n", raised last in each write) so a reader can tell with one HGET whether the
// hash changed since it last read it. A hash holds at most colos x (BUCKETS + 1) + 1 fields,
// however many calls it counts.

/** The field holding a hash's total count (calls counted in it, errors included). */
export const TOTAL_FIELD = "n";

/**
 * The histogram hash of one region's minute, for one account's calls (`account`) or for
 * everyone's (null: the operator's view). The older per-sample lists (mesh:lat:...) just expire.
 */
export function latencyKey(region: string, minuteStart: number, account: string | null): string {
  return `mesh:lath:${region}:${minuteStart}:${account === null ? "*" : `a:${account}`}`;
}

/** The hash field a call is counted in: its colo and its latency's bucket, or the colo's errors. */
export function histogramField(colo: string, ms: number, ok: boolean): string {
  return ok ? `${colo}:${bucketOf(ms)}` : `${colo}:e`;
}

/** A hash read back (HGETALL; values as numbers or numeric strings) as one histogram per colo. */
export function histogramsByColo(hash: Record<string, unknown> | null | undefined): Map<string, LatencyHistogram> {
  const out = new Map<string, LatencyHistogram>();
  if (!hash) return out;
  for (const [field, raw] of Object.entries(hash)) {
    const sep = field.lastIndexOf(":");
    const n = Number(raw);
    if (sep <= 0 || !Number.isFinite(n) || n <= 0) continue; // also TOTAL_FIELD
    const colo = field.slice(0, sep);
    const bucket = field.slice(sep + 1);
    let h = out.get(colo);
    if (!h) out.set(colo, (h = new LatencyHistogram()));
    if (bucket === "e") h.errors += n;
    else h.addBucket(Number(bucket), n);
  }
  return out;
}
