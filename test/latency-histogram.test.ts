// Unit tests of the latency histograms behind GET /v1/regions (edge/latency-histogram.ts):
// bucket edges, percentiles against exact nearest-rank ones on seeded data (off by at most the
// width of the bucket the exact value falls in), merging, and the Redis hash form.
import { describe, expect, it } from "vitest";
import { mulberry32 } from "../protocol/prng.js";
import {
  BUCKETS,
  bucketBounds,
  bucketOf,
  bucketValue,
  histogramField,
  histogramsByColo,
  LatencyHistogram,
  latencyKey,
  MIN_MS,
  SUB_BUCKETS,
  TOTAL_FIELD,
} from "../edge/latency-histogram.js";

const prng = mulberry32;

/** Nearest-rank percentile of a sorted array (what the report computed from raw samples). */
const exact = (sorted: number[], p: number) => sorted[Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length))) - 1]!;

describe("buckets", () => {
  it("every value lands in a bucket whose edges hold it, and the value a bucket stands for is inside it", () => {
    const rand = prng(1);
    for (let k = 0; k < 3_000; k++) {
      const ms = MIN_MS * 2 ** (rand() * (BUCKETS / SUB_BUCKETS - 0.01));
      const i = bucketOf(ms);
      const [lo, hi] = bucketBounds(i);
      expect(ms).toBeGreaterThanOrEqual(lo * (1 - 1e-12));
      expect(ms).toBeLessThan(hi * (1 + 1e-12));
      expect(bucketValue(i)).toBeGreaterThan(lo);
      expect(bucketValue(i)).toBeLessThan(hi);
    }
  });

  it("has a fixed count and a relative width of 2^(1/16) - 1 (~4.4%)", () => {
    expect(BUCKETS).toBe(416);
    for (const i of [1, 100, 300, BUCKETS - 1]) {
      const [lo, hi] = bucketBounds(i);
      expect(hi / lo).toBeCloseTo(2 ** (1 / SUB_BUCKETS), 12);
    }
  });

  it("clamps what is out of range: below the first edge, above the last, NaN, negative", () => {
    expect(bucketOf(0)).toBe(0);
    expect(bucketOf(-5)).toBe(0);
    expect(bucketOf(Number.NaN)).toBe(0);
    expect(bucketOf(MIN_MS / 3)).toBe(0);
    expect(bucketOf(1e12)).toBe(BUCKETS - 1);
    expect(bucketOf(Infinity)).toBe(BUCKETS - 1);
  });
});

describe("percentiles", () => {
  it("are within the width of the exact value's bucket, on seeded log-normal and bimodal data", () => {
    for (const seed of [1, 2, 3, 4, 5]) {
      const rand = prng(seed);
      const gauss = () => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
      const n = 500 + seed * 1_700;
      const samples = Array.from({ length: n }, (_, k) =>
        // Log-normal around 8 ms, with a far slower mode (cross-ocean callers, cold starts).
        k % 7 === 0 ? 140 * Math.exp(0.2 * gauss()) : 8 * Math.exp(0.6 * gauss()),
      );
      const h = new LatencyHistogram();
      for (const ms of samples) h.add(ms);
      const sorted = [...samples].sort((a, b) => a - b);
      for (const p of [1, 10, 50, 90, 95, 99, 99.9, 100]) {
        const x = exact(sorted, p);
        const [lo, hi] = bucketBounds(bucketOf(x));
        const got = h.percentile(p);
        expect(Math.abs(got - x), `seed ${seed} p${p}: ${got} vs exact ${x}`).toBeLessThanOrEqual(hi - lo);
        // And relatively: at most half a bucket either side of the geometric middle.
        expect(Math.abs(got - x) / x).toBeLessThanOrEqual(2 ** (1 / (2 * SUB_BUCKETS)) - 1 + 1e-9);
      }
    }
  });

  it("leave errors out of the percentiles but count them; an empty histogram reads 0", () => {
    const h = new LatencyHistogram();
    expect(h.summary()).toEqual({ p50: 0, p95: 0, p99: 0, count: 0, errors: 0 });
    for (let i = 1; i <= 100; i++) h.add(i);
    h.errors += 5;
    const s = h.summary();
    expect(s.count).toBe(105);
    expect(s.errors).toBe(5);
    expect(Math.abs(s.p50 - 50) / 50).toBeLessThan(0.025);
    expect(Math.abs(s.p99 - 99) / 99).toBeLessThan(0.025);
  });

  it("merged histograms read as one built from all the samples", () => {
    const rand = prng(9);
    const a = new LatencyHistogram();
    const b = new LatencyHistogram();
    const both = new LatencyHistogram();
    for (let k = 0; k < 3_000; k++) {
      const ms = 1 + rand() * 200;
      (k % 3 ? a : b).add(ms);
      both.add(ms);
    }
    a.errors = 2;
    b.errors = 3;
    both.errors = 5;
    expect(new LatencyHistogram().merge(a).merge(b).summary()).toEqual(both.summary());
    // The sparse form a cache keeps adds up the same, in the occupied buckets only.
    const sa = a.toSparse();
    expect(sa.buckets.length).toBeLessThan(BUCKETS);
    expect(new LatencyHistogram().addSparse(sa).addSparse(b.toSparse()).summary()).toEqual(both.summary());
  });
});

describe("as a Redis hash", () => {
  it("fields per colo and bucket (and errors) read back as the same histograms, from numbers or strings", () => {
    const hash: Record<string, number> = {};
    const direct = new Map<string, LatencyHistogram>();
    const rand = prng(3);
    for (let k = 0; k < 5_000; k++) {
      const colo = ["SJC", "ICN", "FRA"][k % 3]!;
      const ms = 2 + rand() * 50;
      const ok = k % 41 !== 0;
      const f = histogramField(colo, ms, ok);
      hash[f] = (hash[f] ?? 0) + 1;
      let h = direct.get(colo);
      if (!h) direct.set(colo, (h = new LatencyHistogram()));
      if (ok) h.add(ms);
      else h.errors++;
    }
    // Bounded by buckets, not by calls.
    expect(Object.keys(hash).length).toBeLessThanOrEqual(3 * (BUCKETS + 1));
    const asStrings = Object.fromEntries(Object.entries(hash).map(([k, v]) => [k, String(v)]));
    for (const read of [histogramsByColo(hash), histogramsByColo(asStrings)]) {
      expect([...read.keys()].sort()).toEqual(["FRA", "ICN", "SJC"]);
      for (const [colo, h] of direct) expect(read.get(colo)!.summary()).toEqual(h.summary());
    }
  });

  it("keys a hash per region, minute and view: everyone's apart from each account's", () => {
    expect(latencyKey("us-west", 60_000, null)).not.toBe(latencyKey("us-west", 60_000, "acct-1"));
    expect(latencyKey("us-west", 60_000, "acct-1")).not.toBe(latencyKey("us-west", 120_000, "acct-1"));
    expect(latencyKey("us-west", 60_000, "acct-1")).not.toBe(latencyKey("ap-seoul", 60_000, "acct-1"));
  });

  it("ignores what it does not understand (missing hash, the total, odd fields, bad counts)", () => {
    expect(histogramsByColo(null).size).toBe(0);
    const read = histogramsByColo({ "SJC:10": 2, [TOTAL_FIELD]: 2, "SJC:x": 5, "SJC:9999": 1, nocolon: 3, "ICN:3": "abc", "ICN:4": -1 });
    expect([...read.keys()]).toEqual(["SJC"]);
    expect(read.get("SJC")!.summary().count).toBe(2);
  });
});
