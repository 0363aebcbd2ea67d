// The one percentile of the project (router reports, edge views, benches): nearest rank over an
// ascending array, the smallest sample with at least p% of the samples at or below it. Pure TS.

/** The p-th percentile (0..100) of an ascending array; `empty` (NaN unless given) when there is none. */
export function percentile(sorted: readonly number[], p: number, empty = NaN): number {
  if (sorted.length === 0) return empty;
  if (p <= 0) return sorted[0]!;
  if (p >= 100) return sorted[sorted.length - 1]!;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
}
