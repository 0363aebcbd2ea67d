// Traffic rules of a model, as pure functions: a weighted split of the calls that name no
// version over versions (A/B, canary, blue-green), and shadow copies (a share of calls also run
// on another version, compared and logged, never returned). Stored per model in D1 as JSON and
// read with the model (model-registry.ts), so a rule changes for a call atomically.
//
// Sticky callers: a call that carries `x-mesh-sticky` (or else an OIP `id`) lands in a bucket
// from a hash of the model and that key, so the same caller keeps its version while the split
// stays the same; other calls are spread at random.

import { z } from "zod";

export const MAX_SPLIT_ENTRIES = 10;
export const MAX_SHADOWS = 3;

const versionNumber = z.number().int().min(1).max(2 ** 31 - 1);

export const SplitEntrySchema = z.object({
  version: versionNumber.describe("A version number of the model (not an alias)."),
  weight: z.number().int().min(0).max(100).describe("Share of calls, in percent; the weights sum to 100."),
});

export const ShadowEntrySchema = z.object({
  version: versionNumber.describe("The version that gets the copies."),
  percent: z.number().min(0).max(100).describe("Share of calls copied to it, in percent (fractions allowed)."),
});

export const TrafficRuleSchema = z
  .object({
    split: z
      .array(SplitEntrySchema)
      .min(1)
      .max(MAX_SPLIT_ENTRIES)
      .optional()
      .describe("Weighted split of the calls that name no version. Without it, those calls go to `latest`."),
    shadow: z.array(ShadowEntrySchema).max(MAX_SHADOWS).optional().describe("Shadow copies: never returned, never waited for."),
  })
  .strict()
  .superRefine((rule, ctx) => {
    if (!rule.split && !rule.shadow) ctx.addIssue({ code: "custom", message: "send 'split' and/or 'shadow'" });
    if (rule.split) {
      const sum = rule.split.reduce((a, e) => a + e.weight, 0);
      if (sum !== 100) ctx.addIssue({ code: "custom", path: ["split"], message: `weights must sum to 100, not ${sum}` });
      const seen = new Set<number>();
      for (const e of rule.split) {
        if (seen.has(e.version)) ctx.addIssue({ code: "custom", path: ["split"], message: `version ${e.version} is listed twice` });
        seen.add(e.version);
      }
    }
    if (rule.shadow) {
      const seen = new Set<number>();
      for (const e of rule.shadow) {
        if (seen.has(e.version)) ctx.addIssue({ code: "custom", path: ["shadow"], message: `version ${e.version} is listed twice` });
        seen.add(e.version);
      }
    }
  });

export type TrafficRule = z.infer<typeof TrafficRuleSchema>;

/** Every version a rule names (a version named here cannot be deleted). */
export function ruleVersions(rule: TrafficRule | null): number[] {
  if (!rule) return [];
  return [...new Set([...(rule.split ?? []).map((e) => e.version), ...(rule.shadow ?? []).map((e) => e.version)])];
}

/** 32-bit FNV-1a followed by a murmur3 finalizer, so similar keys spread evenly. */
export function hash32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** A point in [0, 100): from the sticky key when there is one, else at random. */
export function bucketOf(modelId: string, sticky: string | null, random: () => number = Math.random): number {
  if (sticky !== null) return (hash32(`${modelId}\u0000${sticky}`) / 2 ** 32) * 100;
  return random() * 100;
}

/** The version a call lands on under a split, for a point in [0, 100). */
export function pickSplit(split: readonly { version: number; weight: number }[], point: number): number {
  let acc = 0;
  for (const e of split) {
    acc += e.weight;
    if (point < acc) return e.version;
  }
  // Only reached through rounding at the top end; the last weighted entry takes it.
  return [...split].reverse().find((e) => e.weight > 0)?.version ?? split[split.length - 1]!.version;
}

/** The shadow versions a call is copied to (never the version that serves it). */
export function pickShadows(rule: TrafficRule | null, served: number, random: () => number = Math.random): number[] {
  if (!rule?.shadow) return [];
  return rule.shadow.filter((s) => s.version !== served && random() * 100 < s.percent).map((s) => s.version);
}

/** The caller's sticky key: `x-mesh-sticky`, else the OIP request `id`; bounded in length. */
export function stickyKey(header: string | undefined | null, oipId: unknown): string | null {
  const h = header?.trim();
  if (h) return h.slice(0, 256);
  if (typeof oipId === "string" && oipId.length > 0) return oipId.slice(0, 256);
  return null;
}
