// Where a call or a model load goes, as pure functions over a snapshot of the nodes, so the
// choice is unit-tested and replayed in bench/ without sockets. A call goes to a node holding
// the model warm with a free slot and the least in flight. A load goes to the node where it
// fits at the least cost: free memory first, else evicting the least valuable idle models, and
// only on a node whose disk can take the model's files (its cache budget and the filesystem's
// free space, from its heartbeats).

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
 * A node to run a generation of `key`: warm, with a free stream slot, the fewest streams first;
 * a follow-up chat turn (`affinity`, its conversation key) goes to a node that keeps that
 * conversation's KV cache unless that node is markedly busier than the least busy one.
 */
export function pickWarmForStream(nodes: Iterable<NodeState>, key: string, exclude?: ReadonlySet<string>, affinity?: string): NodeState | undefined {
  let best: NodeState | undefined;
  let holder: NodeState | undefined;
  for (const n of nodes) {
    const streams = n.streams ?? 0;
    if (!n.available || !n.warm.has(key) || streams >= (n.streamSlots ?? 0) || exclude?.has(n.id)) continue;
    if (!best || streams < (best.streams ?? 0)) best = n;
    if (affinity && n.conversations?.has(affinity) && (!holder || streams < (holder.streams ?? 0))) holder = n;
  }
  if (holder && best) {
    const slack = Math.max(1, Math.floor((holder.streamSlots ?? 0) * AFFINITY_SLACK));
    if ((holder.streams ?? 0) - (best.streams ?? 0) <= slack) return holder;
  }
  return best;
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
      const candidates = [...n.warm]
        .filter(([k]) => (n.modelInflight.get(k) ?? 0) === 0 && !protect(n, k) && valueOf(k) < maxEvictValue)
        .sort(([ka, a], [kb, b]) => valueOf(ka) - valueOf(kb) || a.lastUsed - b.lastUsed);
      for (const [k, w] of candidates) {
        if (fits() && (!diskShort || evict.length > 0)) break;
        evict.push(k);
        free += w.memoryMb;
        count--;
        cost += valueOf(k) + 1;
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
