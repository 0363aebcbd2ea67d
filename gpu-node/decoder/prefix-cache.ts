// Finished generations' KV caches, kept so that a later prompt that starts with the same ids
// (a conversation's next turn: the earlier prompt, the answer, then the new message) prefills
// only what is new. Entries are per tenant (the account, inside one model version's child):
// a lookup only ever compares against the caller's own tenant's entries, so no account can
// reuse another's cache or learn from its speed what another account asked.
//
// Least recently used first out. The owner (child-generations.ts) counts the bytes against the
// model's KV budget and evicts from here before refusing a stream for memory, so kept caches
// only ever use memory that live streams do not need.

import { headOf, type KvBatch, type KvShape } from "./kv-cache.js";
import type { KeptCache, KvPrefix } from "./engine.js";

export interface PrefixEntry {
  tenant: string;
  ids: readonly number[];
  kv: KvBatch;
  /**
   * The affinity keys (protocol/conversation-key.ts) routers steer continuations by, set once
   * hashed: a chat turn's conversation key, or a plain text's prefix keys, each with the tokens
   * of the entry it covers (about, for a prefix of a text).
   */
  keys?: readonly { key: string; tokens: number }[];
  used: number;
}

export interface PrefixCacheOptions {
  /** Entries kept at most, whatever their bytes (bounds the lookup's scan). */
  maxEntries?: number;
  /** Shorter shared prefixes are not worth a copy: prefill them. */
  minReuse?: number;
}

export interface PrefixMatch extends KvPrefix {
  /** Of the entry that matched: for counters and tests. */
  entryTokens: number;
}

export class PrefixCache {
  private readonly entries: PrefixEntry[] = [];
  private clock = 0;
  private heldBytes = 0;
  readonly maxEntries: number;
  readonly minReuse: number;
  /** Lookups that reused a prefix, and lookups in all. */
  hits = 0;
  lookups = 0;

  constructor(
    private readonly shape: KvShape,
    opts: PrefixCacheOptions = {},
  ) {
    this.maxEntries = opts.maxEntries ?? 256;
    this.minReuse = opts.minReuse ?? 8;
  }

  get bytes(): number {
    return this.heldBytes;
  }

  get size(): number {
    return this.entries.length;
  }

  /**
   * Keeps a finished stream's cache for `tenant`. Its own earlier entries whose ids it extends
   * (the previous turn of the same conversation) are dropped: the new one covers them.
   */
  put(tenant: string, kept: KeptCache): PrefixEntry {
    for (let i = this.entries.length - 1; i >= 0; i--) {
      const e = this.entries[i]!;
      if (e.tenant === tenant && e.ids.length <= kept.ids.length && commonPrefix(e.ids, kept.ids) === e.ids.length) this.removeAt(i);
    }
    const entry: PrefixEntry = { tenant, ids: kept.ids, kv: kept.kv, used: ++this.clock };
    this.entries.push(entry);
    this.heldBytes += kept.kv.bytes;
    while (this.entries.length > this.maxEntries) this.evictOne();
    return entry;
  }

  /**
   * The longest prefix of `promptIds` some entry of `tenant` holds, leaving at least the
   * prompt's last id to run (its logits give the first token); null below minReuse.
   */
  match(tenant: string, promptIds: readonly number[]): PrefixMatch | null {
    this.lookups++;
    let best: PrefixEntry | null = null;
    let bestN = 0;
    for (const e of this.entries) {
      if (e.tenant !== tenant) continue;
      const n = commonPrefix(e.ids, promptIds);
      if (n > bestN) {
        best = e;
        bestN = n;
      }
    }
    const n = Math.min(bestN, promptIds.length - 1);
    if (!best || n < this.minReuse) return null;
    best.used = ++this.clock;
    this.hits++;
    // The whole entry: shared (nothing writes to a cache array once made). Part of it: a copy.
    const kv = n === best.kv.pastLength ? best.kv : headOf(this.shape, { batch: best.kv, row: 0 }, n);
    return { kv, length: n, entryTokens: best.ids.length };
  }

  /** Evicts least recently used entries until at most `maxBytes` are held; the bytes freed. */
  shrinkTo(maxBytes: number): number {
    const before = this.heldBytes;
    while (this.heldBytes > Math.max(0, maxBytes) && this.entries.length > 0) this.evictOne();
    return before - this.heldBytes;
  }

  /** Affinity keys held, of the most recently used entries first, with their token counts; at most `limit`. */
  conversations(limit: number): { key: string; tokens: number }[] {
    const out: { key: string; tokens: number }[] = [];
    for (const e of this.entries.filter((x) => x.keys).sort((a, b) => b.used - a.used)) {
      for (const k of e.keys!) {
        if (out.length >= limit) return out;
        out.push(k);
      }
    }
    return out;
  }

  clear(): void {
    this.entries.length = 0;
    this.heldBytes = 0;
  }

  private evictOne(): void {
    let oldest = 0;
    for (let i = 1; i < this.entries.length; i++) if (this.entries[i]!.used < this.entries[oldest]!.used) oldest = i;
    this.removeAt(oldest);
  }

  private removeAt(i: number): void {
    const [e] = this.entries.splice(i, 1);
    if (e) this.heldBytes -= e.kv.bytes;
  }
}

/** How many leading ids two sequences share. */
export function commonPrefix(a: readonly number[], b: readonly number[]): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}
