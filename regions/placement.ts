// Where a call or a model load goes, as pure functions over a snapshot of the nodes, so the
// choice is unit-tested and replayed in bench/ without sockets. A call goes to a node holding
// the model warm with a free slot and the least in flight. A load goes to the node where it
// fits at the least cost: free memory first, else evicting the least valuable idle models, and
// only on a node whose disk can take the model's files (its cache budget and the filesystem's
// free space, from its heartbeats). When loads saturate the cluster, a load for a model worth
// less than what it would evict waits for a cheaper place instead (waitForCheaperPlace).

import type { ConversationHeld, DiskUsage } from "../protocol/messages.js";
import { MAX_REGION_CONVERSATIONS } from "../protocol/region-report.js";

export interface NodeState {
  id: string;
  /** Open, answering pings, not draining. */
  available: boolean;
  inflight: number;
  slots: number;
  memoryBudgetMb: number;
  /** 0: memory decides; 1: one model at a time (a runtime that must own the GPU). */
  maxModels: number;
  warm: ReadonlyMap<string, { memoryMb: number; lastUsed: number }>;
  /** Models being loaded, with the memory reserved for them. */
  loading: ReadonlyMap<string, number>;
  /** Calls in flight per model on this node; a model with calls running is never evicted. */
  modelInflight: ReadonlyMap<string, number>;
  /** Generations running, and how many the node runs at once (absent: it runs none). */
  streams?: number;
  streamSlots?: number;
  /** Conversation keys whose KV caches the node keeps (absent: none reported). */
  conversations?: ReadonlyMap<string, number>;
  /** Bytes of new model files the node can take on disk now (diskRoom, less loads it may not count yet); absent: unknown, not checked. */
  diskRoomBytes?: number | undefined;
  /** The node's whole model cache budget: a model larger than it never fits there; absent: unknown. */
  diskBudgetBytes?: number | undefined;
}

export interface LoadPlan {
  node: NodeState;
  evict: string[];
}

/** What the node will hold once the file is in onnxruntime; the node reports the real figure. */
export function estimateMemoryMb(artifactBytes: number): number {
  return Math.max(1, Math.ceil((artifactBytes * 1.5) / 2 ** 20));
}

/**
 * Bytes of new files a node's model cache can take, evicting whatever is not pinned: no more
 * than its budget leaves beside the pinned versions, and no more than the filesystem's free
 * space plus what eviction would free. (A load of files the node has cached needs no room; the
 * router does not know which those are, so such a load may be refused on a full node: safe.)
 */
export function diskRoom(d: DiskUsage): number {
  const evictable = Math.max(0, d.cacheUsedBytes - d.cachePinnedBytes);
  return Math.max(0, Math.min(d.cacheBudgetBytes - d.cachePinnedBytes, d.freeBytes + evictable));
}

export function usedMb(n: NodeState): number {
  let used = 0;
  for (const w of n.warm.values()) used += w.memoryMb;
  for (const m of n.loading.values()) used += m;
  return used;
}

export function pickWarm(nodes: Iterable<NodeState>, key: string, exclude?: ReadonlySet<string>): NodeState | undefined {
  let best: NodeState | undefined;
  for (const n of nodes) {
    if (!n.available || !n.warm.has(key) || n.inflight >= n.slots || exclude?.has(n.id)) continue;
    if (!best || n.inflight < best.inflight) best = n;
  }
  return best;
}

/**
 * How much busier than the least busy candidate a node that keeps the conversation's cache may
 * be and still get its follow-up: a share of its stream slots (at least one stream), so affinity
 * never piles a conversation's turns onto a node that is already the region's bottleneck.
 */
export const AFFINITY_SLACK = 0.25;

/**
 * A node to run a generation of `key`: warm, with a free stream slot, the fewest streams first.
 * A request that continues a kept KV cache (`affinity`: its keys, best first: a follow-up chat
 * turn's conversation key, or a plain prompt's prefix keys longest first) goes to a node that
 * holds the first of them any node holds (the fewest streams among those), unless that node is
 * markedly busier than the least busy one.
 */
export function pickWarmForStream(nodes: Iterable<NodeState>, key: string, exclude?: ReadonlySet<string>, affinity?: readonly string[]): NodeState | undefined {
  let best: NodeState | undefined;
  let holder: NodeState | undefined;
  /** The index in `affinity` of the key `holder` holds. */
  let held = Infinity;
  for (const n of nodes) {
    const streams = n.streams ?? 0;
    if (!n.available || !n.warm.has(key) || streams >= (n.streamSlots ?? 0) || exclude?.has(n.id)) continue;
    if (!best || streams < (best.streams ?? 0)) best = n;
    if (!affinity || !n.conversations || n.conversations.size === 0) continue;
    const i = firstHeld(n.conversations, affinity, held);
    if (i < held || (i === held && i < Infinity && streams < (holder!.streams ?? 0))) {
      holder = n;
      held = i;
    }
  }
  if (holder && best) {
    const slack = Math.max(1, Math.floor((holder.streamSlots ?? 0) * AFFINITY_SLACK));
    if ((holder.streams ?? 0) - (best.streams ?? 0) <= slack) return holder;
  }
  return best;
}

/** The index of the first of `keys` (before `before`) that `held` has; Infinity for none. */
function firstHeld(held: ReadonlyMap<string, number>, keys: readonly string[], before: number): number {
  for (let i = 0; i < keys.length && i <= before; i++) if (held.has(keys[i]!)) return i;
  return Infinity;
}

/**
 * The cheapest node to load `key` on: one with room needs no eviction; otherwise the one whose
 * evicted models are worth the least (`valueOf`: higher = keep). Models with calls in flight,
 * models being loaded and `protect`ed ones (keep-warm floors) are never evicted. Undefined
 * when no node can take the model now.
 */
export function planLoad(
  nodes: Iterable<NodeState>,
  key: string,
  memoryMb: number,
  valueOf: (key: string) => number,
  protect: (node: NodeState, key: string) => boolean = () => false,
  exclude?: ReadonlySet<string>,
  /** Only evict models worth less than this (a speculative load must not push out better ones). */
  maxEvictValue = Infinity,
  /** The model's files on disk (graph plus data files): a node without that room is passed over. */
  diskBytes = 0,
): LoadPlan | undefined {
  let best: { plan: LoadPlan; cost: number } | undefined;
  for (const n of nodes) {
    if (!n.available || n.warm.has(key) || n.loading.has(key) || exclude?.has(n.id)) continue;
    if (memoryMb > n.memoryBudgetMb) continue;
    if (n.diskBudgetBytes !== undefined && diskBytes > n.diskBudgetBytes) continue;
    let free = n.memoryBudgetMb - usedMb(n);
    let count = n.warm.size + n.loading.size;
    // Short of disk: the room counts loaded models' files as pinned, and unloading one unpins
    // them (the router does not know their sizes). So a node short of disk is passed over only
    // when nothing on it can be unloaded; otherwise the plan unloads at least one model, and the
    // node's own cache refuses the download cleanly if that still was not enough.
    const diskShort = n.diskRoomBytes !== undefined && diskBytes > n.diskRoomBytes;
    const fits = () => free >= memoryMb && (n.maxModels === 0 || count < n.maxModels);
    const evict: string[] = [];
    let cost = 0;
    if (!fits() || diskShort) {
      // Each value once (not once per comparison): the router plans a load per waiting model.
      const candidates: { k: string; v: number; memoryMb: number; lastUsed: number }[] = [];
      for (const [k, w] of n.warm) {
        if ((n.modelInflight.get(k) ?? 0) !== 0 || protect(n, k)) continue;
        const v = valueOf(k);
        if (v < maxEvictValue) candidates.push({ k, v, memoryMb: w.memoryMb, lastUsed: w.lastUsed });
      }
      candidates.sort((a, b) => a.v - b.v || a.lastUsed - b.lastUsed);
      for (const c of candidates) {
        if (fits() && (!diskShort || evict.length > 0)) break;
        evict.push(c.k);
        free += c.memoryMb;
        count--;
        cost += c.v + 1;
      }
      if (!fits() || (diskShort && evict.length === 0)) continue;
    }
    // Ties: less busy, then more room left.
    const score = cost * 1e6 + n.inflight * 1e3 - Math.min(999, free - memoryMb) / 1e3;
    if (!best || score < best.cost) best = { plan: { node: n, evict }, cost: score };
  }
  return best?.plan;
}

/**
 * The conversations a region's nodes keep, for its report: each key once with the largest
 * saving any node offers, at most `limit` (the nodes list their most recent first, so the
 * first entries of each node are kept when the list is cut).
 */
export function regionConversations(nodes: readonly NodeState[], limit = MAX_REGION_CONVERSATIONS): ConversationHeld[] {
  const out = new Map<string, number>();
  const lists = nodes.map((n) => [...(n.conversations ?? new Map<string, number>())]);
  for (let i = 0; out.size < limit && lists.some((l) => i < l.length); i++) {
    for (const l of lists) {
      const c = l[i];
      if (!c || (out.size >= limit && !out.has(c[0]))) continue;
      out.set(c[0], Math.max(c[1], out.get(c[0]) ?? 0));
    }
  }
  return [...out].map(([key, savedMs]) => ({ key, savedMs }));
}

/** waitForCheaperPlace's patience before the router has timed a load (then: its loads' EWMA). */
export const LOAD_PATIENCE_MS = 2_000;

/**
 * Whether a load for calls waiting on `key` should wait rather than take `plan`: the plan
 * evicts a model worth more than `key` (`worth`: long-run calls/s, queued calls not counted),
 * and a cheaper place will come free soon, because a model worth less than that victim is
 * loading or has calls running, and becomes evictable when they end. This is admission by
 * frequency (as in TinyLFU) that still serves every call: a rare model's call waits for a
 * rare model's place instead of evicting a hot model, which would come back as a load. When
 * loads saturate the cluster, evicting hot models for the tail means fewer warm places, more
 * misses and still more loads, until nearly every place holds a load (the collapse the
 * placement replay showed at the load-bandwidth ceiling); waiting keeps the tail to the places
 * it already holds. `patienceMs` (about one load time) bounds the extra wait: calls that have
 * waited longer take the plan, so the tail's share of places grows when its loads need it. The
 * patience scales with the share of memory held by loads (full from half): below the ceiling
 * waiting bought ~0.2% of the optimum's warm hits and cost the tail a second cold start.
 */
export function waitForCheaperPlace(
  nodes: Iterable<NodeState>,
  plan: LoadPlan,
  key: string,
  memoryMb: number,
  worth: (key: string) => number,
  waitedMs: number,
  patienceMs: number,
): boolean {
  if (plan.evict.length === 0) return false;
  // The wait protects load bandwidth: with few places loading, evicting a hot model costs one
  // more load the nodes have room for, and waiting would only add a cold start to the call. So
  // the patience grows with the share of memory held by loads, full from half of it.
  let budget = 0;
  let loadingMb = 0;
  for (const n of nodes) {
    if (!n.available) continue;
    budget += n.memoryBudgetMb;
    for (const mb of n.loading.values()) loadingMb += mb;
  }
  if (waitedMs >= patienceMs * Math.min(1, budget > 0 ? (2 * loadingMb) / budget : 1)) return false;
  let victimWorth = 0;
  for (const k of plan.evict) victimWorth = Math.max(victimWorth, worth(k));
  if (victimWorth <= worth(key)) return false;
  for (const n of nodes) {
    if (!n.available || memoryMb > n.memoryBudgetMb) continue;
    for (const k of n.loading.keys()) if (k !== key && worth(k) < victimWorth) return true;
    for (const [k, inflight] of n.modelInflight) if (inflight > 0 && n.warm.has(k) && worth(k) < victimWorth) return true;
  }
  return false;
}
