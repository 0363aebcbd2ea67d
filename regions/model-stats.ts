// Per-model traffic as the router sees it: request rate and service time as EWMAs, a short
// linear-regression trend of the rate (as in 120n's capacity predictor) to see a rise coming,
// a long-memory rate that decides which models stay warm (keepValue), and recent queue and
// inference times for percentiles in the region report.

import { percentile as nearestRank } from "../protocol/percentile.js";

const BUCKET_MS = 1_000;
const TREND_BUCKETS = 10;
const SAMPLES = 512;

/**
 * Half-life of the call count behind a model's keep value. Which model to evict is a guess at
 * which is called again last, i.e. the lowest long-run rate. The 1 s EWMA (~5 s memory) cannot
 * tell a model called every 5 s from a one-off called a moment ago (both read ~0.2/s just after
 * a call), so loading Zipf's tail evicted the models just above it and they came back as loads
 * (thrashing). Two minutes separates them at tens of calls/s and still follows a shift in
 * popularity within a few minutes.
 */
export const KEEP_HALF_LIFE_MS = 120_000;
/** What each call waiting for a model adds to its keep value (calls/s): waiting calls come first. */
export const QUEUED_CALL_VALUE = 10;

/** Nearest rank, 0 for no samples (a report's figures are numbers). */
export const percentile = (sorted: readonly number[], p: number): number => nearestRank(sorted, p, 0);

class Ring {
  private readonly buf: number[] = [];
  private next = 0;
  constructor(private readonly size: number) {}
  push(v: number): void {
    if (this.buf.length < this.size) this.buf.push(v);
    else this.buf[this.next] = v;
    this.next = (this.next + 1) % this.size;
  }
  sorted(): number[] {
    return [...this.buf].sort((a, b) => a - b);
  }
}

export interface ModelStatsView {
  /** Calls per second, EWMA over about 10 s. */
  rate: number;
  /** Slope of the rate over the last ~10 s, calls/s per second. */
  trend: number;
  /** Seconds one call keeps a slot busy, EWMA. */
  serviceS: number;
  lastCall: number;
}

export class ModelStats {
  rate = 0;
  serviceS = 0.01;
  lastCall = 0;
  private bucketStart = 0;
  private bucketCount = 0;
  private readonly history: number[] = [];
  private readonly queueMs = new Ring(SAMPLES);
  private readonly inferMs = new Ring(SAMPLES);
  calls = 0;
  /** Calls, each weighted 2^(-age / half-life), as of `decayedAt`. */
  private decayed = 0;
  private decayedAt = 0;

  constructor(
    private readonly alpha = 0.2,
    private readonly keepHalfLifeMs = KEEP_HALF_LIFE_MS,
  ) {}

  /** Rolls the per-second buckets forward to `now` (also when no call came). */
  tick(now: number): void {
    if (this.bucketStart === 0) this.bucketStart = now;
    while (now - this.bucketStart >= BUCKET_MS) {
      const perS = this.bucketCount / (BUCKET_MS / 1000);
      this.rate = this.rate + this.alpha * (perS - this.rate);
      this.history.push(perS);
      if (this.history.length > TREND_BUCKETS) this.history.shift();
      this.bucketCount = 0;
      this.bucketStart += BUCKET_MS;
      // A long silence: jump instead of looping once per missed second.
      if (now - this.bucketStart > 60 * BUCKET_MS) {
        this.bucketStart = now;
        this.rate = 0;
        this.history.length = 0;
      }
    }
  }

  arrival(now: number): void {
    this.tick(now);
    this.bucketCount++;
    this.calls++;
    this.lastCall = now;
    this.decayed = this.decayedCount(now) + 1;
    this.decayedAt = now;
  }

  private decayedCount(now: number): number {
    if (this.decayed === 0) return 0;
    return this.decayed * 2 ** (-Math.max(0, now - this.decayedAt) / this.keepHalfLifeMs);
  }

  /**
   * Calls per second over the last few half-lives, exponentially weighted (a steady rate r
   * reads r; one call reads ln 2 / half-life, 0.006/s at two minutes). Continuous in `now`,
   * so two models' values compare at any instant, with no bucket boundary between them.
   */
  longRate(now: number): number {
    return (this.decayedCount(now) * Math.LN2) / (this.keepHalfLifeMs / 1000);
  }

  completed(queueMs: number, inferMs: number): void {
    this.queueMs.push(queueMs);
    this.inferMs.push(inferMs);
    this.serviceS = this.serviceS + this.alpha * (inferMs / 1000 - this.serviceS);
  }

  /** Least-squares slope of the per-second counts. */
  trend(): number {
    const n = this.history.length;
    if (n < 3) return 0;
    let sx = 0, sy = 0, sxy = 0, sxx = 0;
    this.history.forEach((y, x) => {
      sx += x;
      sy += y;
      sxy += x * y;
      sxx += x * x;
    });
    const d = n * sxx - sx * sx;
    return d === 0 ? 0 : (n * sxy - sx * sy) / d;
  }

  view(): ModelStatsView {
    return { rate: this.rate, trend: this.trend(), serviceS: this.serviceS, lastCall: this.lastCall };
  }

  percentiles(): { queueMs: { p50: number; p95: number; p99: number }; inferMs: { p50: number; p95: number; p99: number } } {
    const q = this.queueMs.sorted();
    const i = this.inferMs.sorted();
    const round = (v: number) => Math.round(v * 100) / 100;
    return {
      queueMs: { p50: round(percentile(q, 50)), p95: round(percentile(q, 95)), p99: round(percentile(q, 99)) },
      inferMs: { p50: round(percentile(i, 50)), p95: round(percentile(i, 95)), p99: round(percentile(i, 99)) },
    };
  }
}

/**
 * How much keeping `key` warm is worth, for planLoad's choice of what to evict (higher = keep)
 * and the warm policy's bound on what a speculative load may evict: the long-run call rate,
 * plus QUEUED_CALL_VALUE per call waiting for the model. The router and the placement replay
 * (bench/zipf-placement.ts) both use this one function.
 */
export function keepValue(stats: ModelStats | undefined, queued: number, now: number): number {
  return (stats?.longRate(now) ?? 0) + queued * QUEUED_CALL_VALUE;
}
