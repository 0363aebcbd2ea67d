// How many replicas of a model stay warm: enough slots for the predicted load, where the
// prediction is the rate's EWMA pushed forward along its trend (so a rising model is pre-warmed
// before its queue builds), never below the model's keep-warm floor, and exactly the manual
// override when one is set. A model with no traffic for `idleTtlMs` drops to its floor.

import type { ModelStatsView } from "./model-stats.js";
import type { NodeState } from "./placement.js";

export interface ModelPolicy {
  /** Replicas kept warm whatever the traffic. */
  keepWarm: number;
  /** When set, exactly this many replicas, whatever the traffic. */
  replicas: number | null;
}

export interface WarmPolicyConfig {
  /** Target share of slots busy; lower keeps more headroom. */
  targetUtilisation: number;
  /** How far ahead the trend is followed, seconds. */
  horizonS: number;
  idleTtlMs: number;
  maxReplicas: number;
}

export const WARM_POLICY_DEFAULTS: WarmPolicyConfig = {
  targetUtilisation: 0.7,
  horizonS: 5,
  idleTtlMs: 5 * 60_000,
  maxReplicas: 16,
};

export function desiredReplicas(
  stats: ModelStatsView | undefined,
  policy: ModelPolicy | undefined,
  slotsPerNode: number,
  now: number,
  cfg: WarmPolicyConfig = WARM_POLICY_DEFAULTS,
): number {
  const floor = policy?.keepWarm ?? 0;
  if (policy?.replicas !== null && policy?.replicas !== undefined) return policy.replicas;
  if (!stats || stats.lastCall === 0 || now - stats.lastCall > cfg.idleTtlMs) return floor;
  const predicted = Math.max(stats.rate, stats.rate + Math.max(0, stats.trend) * cfg.horizonS);
  // Little's law: busy slots = arrival rate x service time.
  const busySlots = predicted * stats.serviceS;
  const needed = Math.ceil(busySlots / (Math.max(1, slotsPerNode) * cfg.targetUtilisation));
  return Math.min(cfg.maxReplicas, Math.max(floor, 1, needed));
}

export type WarmAction =
  /** Load one more replica; evict only models worth less than `maxEvictValue`. */
  | { kind: "load"; maxEvictValue: number }
  | { kind: "unload"; nodeId: string }
  | { kind: "none" };

/**
 * One step of the warm policy for one model. A model with no replica and no floor is left to
 * on-demand loading: pre-loading it for nobody would push out a model callers are using. Extra
 * replicas (scale-out, rising trend) may only evict less valuable models; a keep-warm floor or
 * override may evict anything not protected. Scale-down is one idle replica per step.
 */
export function warmAction(
  key: string,
  nodes: readonly NodeState[],
  stats: ModelStatsView | undefined,
  policy: ModelPolicy | undefined,
  now: number,
  value: number,
  cfg: WarmPolicyConfig = WARM_POLICY_DEFAULTS,
): WarmAction {
  const usable = nodes.filter((n) => n.available);
  if (usable.length === 0) return { kind: "none" };
  const slots = Math.max(1, Math.round(usable.reduce((s, n) => s + n.slots, 0) / usable.length));
  const want = Math.min(usable.length, desiredReplicas(stats, policy, slots, now, cfg));
  const holding = usable.filter((n) => n.warm.has(key));
  const loading = usable.filter((n) => n.loading.has(key));
  const have = holding.length + loading.length;
  const pinned = policy ? (policy.replicas ?? policy.keepWarm) : 0;
  if (have < want) {
    if (have < pinned) return { kind: "load", maxEvictValue: Infinity };
    if (have === 0) return { kind: "none" };
    return { kind: "load", maxEvictValue: value };
  }
  if (have > want && loading.length === 0) {
    const victim = holding
      .filter((n) => (n.modelInflight.get(key) ?? 0) === 0)
      .sort((a, b) => a.warm.get(key)!.lastUsed - b.warm.get(key)!.lastUsed)[0];
    if (!victim) return { kind: "none" };
    const idleFor = now - Math.max(stats?.lastCall ?? 0, victim.warm.get(key)!.lastUsed);
    if (want === 0 ? idleFor > cfg.idleTtlMs : idleFor > 30_000) return { kind: "unload", nodeId: victim.id };
  }
  return { kind: "none" };
}
