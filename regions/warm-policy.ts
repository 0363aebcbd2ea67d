// How many replicas of a model stay warm: enough slots for the predicted load, where the
// prediction is the rate's EWMA pushed forward along its trend (so a rising model is pre-warmed
// before its queue builds), never below the model's keep-warm floor, and exactly the manual
// override when one is set. A model with no traffic for `idleTtlMs` drops to its floor.

import type { ModelStatsView } from "./model-stats.js";

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
