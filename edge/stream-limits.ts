// Bounds on the generation WebSocket that one tenant could otherwise stretch without limit
// (issue 10, items 7 and 14): open sockets per key and per account, requests running per
// account, the size of a client message, and how many bad messages a socket may send.
//
// Counted twice. In this isolate's memory, derived from the sockets it holds open (so they
// cannot drift), for every cap. And for the socket caps, across isolates in Redis: each open
// socket holds a lease (a member of a sorted set per key and per account, scored by its expiry,
// renewed while the socket lives, removed when it closes), so a socket whose isolate died stops
// counting within a lease. When Redis is unreachable the isolate's own counts still apply.
// Running requests per account are counted per isolate only; the region's fair shares
// (regions/fairness.ts) are what keep one account from crowding out the others there.

import type { Redis } from "@upstash/redis/cloudflare";
import { MeshError } from "../protocol/errors.js";

export interface StreamLimits {
  socketsPerKey: number;
  socketsPerAccount: number;
  streamsPerAccount: number;
  controlMessageBytes: number;
  strikes: number;
  strikeForgiveMs: number;
}

export const STREAM_LIMITS: Readonly<StreamLimits> = {
  /** WebSockets one key may hold open at once (in one isolate). */
  socketsPerKey: 8,
  /** WebSockets one account may hold open at once, all its keys together (in one isolate). */
  socketsPerAccount: 32,
  /** Requests one account may have running at once over all its sockets and SSE/generate calls (in one isolate). */
  streamsPerAccount: 128,
  /** An `ack` or `cancel` is a few dozen bytes; anything past this is refused. */
  controlMessageBytes: 1024,
  /** Bad messages (refused, malformed, over a limit) a socket may send before it is closed... */
  strikes: 16,
  /** ... with one forgiven per this many ms, so a long-lived socket's rare mistakes never add up. */
  strikeForgiveMs: 1_000,
};

/** What the registry needs of an open socket. */
export interface OpenSocket {
  readonly keyId: string;
  readonly accountId: string;
  /** Requests running (or being checked) on it now. */
  readonly streams: number;
}

function add<K, V>(m: Map<K, Set<V>>, k: K, v: V): void {
  let s = m.get(k);
  if (!s) m.set(k, (s = new Set()));
  s.add(v);
}

function remove<K, V>(m: Map<K, Set<V>>, k: K, v: V): void {
  const s = m.get(k);
  if (!s) return;
  s.delete(v);
  if (s.size === 0) m.delete(k);
}

/** This isolate's open generation sockets, by key and by account. */
export class SocketRegistry {
  private readonly byKey = new Map<string, Set<OpenSocket>>();
  private readonly byAccount = new Map<string, Set<OpenSocket>>();
  /** Requests running outside sockets (SSE, generate), per account. */
  private readonly single = new Map<string, number>();

  constructor(private readonly limits: Pick<StreamLimits, "socketsPerKey" | "socketsPerAccount" | "streamsPerAccount"> = STREAM_LIMITS) {}

  /** Throws rate_limited when the key or its account has its most sockets open already. */
  checkOpen(keyId: string, accountId: string): void {
    const perKey = this.byKey.get(keyId)?.size ?? 0;
    if (perKey >= this.limits.socketsPerKey) throw tooMany("key", this.limits.socketsPerKey);
    const perAccount = this.byAccount.get(accountId)?.size ?? 0;
    if (perAccount >= this.limits.socketsPerAccount) throw tooMany("account", this.limits.socketsPerAccount);
  }

  opened(s: OpenSocket): void {
    add(this.byKey, s.keyId, s);
    add(this.byAccount, s.accountId, s);
  }

  closed(s: OpenSocket): void {
    remove(this.byKey, s.keyId, s);
    remove(this.byAccount, s.accountId, s);
  }

  /**
   * A request outside a socket (SSE, generate) starts: throws rate_limited when the account has
   * its most running already; otherwise counts it until the returned release (idempotent).
   */
  holdStream(accountId: string): () => void {
    this.checkStream(accountId);
    this.single.set(accountId, (this.single.get(accountId) ?? 0) + 1);
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      const n = (this.single.get(accountId) ?? 1) - 1;
      if (n <= 0) this.single.delete(accountId);
      else this.single.set(accountId, n);
    };
  }

  /** Throws rate_limited when the account has its most requests running already. */
  checkStream(accountId: string): void {
    let running = this.single.get(accountId) ?? 0;
    for (const s of this.byAccount.get(accountId) ?? []) running += s.streams;
    if (running >= this.limits.streamsPerAccount) {
      throw new MeshError("rate_limited", `this account has ${running} generation requests running, the most at once; wait for one to end`, { "retry-after": "1" });
    }
  }
}

/** This isolate's open generation sockets and HTTP generations: the per-key and per-account caps count them. */
export const sockets = new SocketRegistry();

/**
 * A socket's record of bad messages: each refusal is a strike, one is forgiven per
 * `strikeForgiveMs`; past `strikes` the socket is to be closed (1008) instead of answered, so a
 * flood of junk costs the edge a few replies, not one per message.
 */
export class Strikes {
  private count = 0;
  private at = 0;

  constructor(
    private readonly limits: Pick<StreamLimits, "strikes" | "strikeForgiveMs"> = STREAM_LIMITS,
    private readonly now: () => number = Date.now,
  ) {}

  /** Records one; true when the socket is past its limit and must be closed. */
  strike(): boolean {
    const t = this.now();
    this.count = Math.max(0, this.count - (t - this.at) / this.limits.strikeForgiveMs);
    this.at = t;
    this.count++;
    return this.count > this.limits.strikes;
  }
}

/** A client message's size before any parsing: UTF-16 units of a text frame (never more than its UTF-8 bytes), bytes of a binary one. */
export function messageSize(data: unknown): number {
  if (typeof data === "string") return data.length;
  if (data instanceof ArrayBuffer) return data.byteLength;
  if (ArrayBuffer.isView(data)) return data.byteLength;
  return Number.POSITIVE_INFINITY;
}

/** How long a socket's lease in Redis lasts; the socket renews it at half that. */
export const SOCKET_LEASE_MS = 60_000;

/** The slice of the shared store (redis.ts) the leases use. */
export interface LeaseStore {
  available(): boolean;
  run<T>(op: (redis: Redis) => Promise<T>): Promise<T>;
}

const KEY_SET = (keyId: string) => `mesh:ws:key:${keyId}`;
const ACCOUNT_SET = (accountId: string) => `mesh:ws:acct:${accountId}`;

function tooMany(what: "key" | "account", cap: number): MeshError {
  return new MeshError("rate_limited", `at most ${cap} stream sockets may be open per ${what}; close one first`, { "retry-after": "1" });
}

/** One socket's leases in the per-key and per-account sets, across every isolate. */
export class SocketLease {
  constructor(
    private readonly store: LeaseStore | null,
    readonly keyId: string,
    readonly accountId: string,
    readonly id: string = crypto.randomUUID(),
    private readonly limits: Pick<StreamLimits, "socketsPerKey" | "socketsPerAccount"> = STREAM_LIMITS,
    private readonly leaseMs = SOCKET_LEASE_MS,
  ) {}

  /**
   * Takes the leases; throws rate_limited (and gives them back) when the key's or the account's
   * sockets in every isolate are past the cap. Without Redis it takes nothing and refuses
   * nothing: the isolate's own count decides.
   */
  async acquire(now = Date.now()): Promise<void> {
    if (!this.store?.available()) return;
    let counts: number[];
    try {
      counts = await this.store.run(async (redis) => {
        const p = redis.pipeline();
        for (const set of [KEY_SET(this.keyId), ACCOUNT_SET(this.accountId)]) {
          p.zremrangebyscore(set, 0, now); // leases of sockets whose isolate went away
          p.zadd(set, { score: now + this.leaseMs, member: this.id });
          p.zcard(set);
          p.pexpire(set, 2 * this.leaseMs);
        }
        const out = (await p.exec()) as unknown[];
        return [Number(out[2]), Number(out[6])];
      });
    } catch {
      return;
    }
    const [perKey, perAccount] = counts as [number, number];
    if (perKey > this.limits.socketsPerKey || perAccount > this.limits.socketsPerAccount) {
      await this.release();
      throw tooMany(perKey > this.limits.socketsPerKey ? "key" : "account", perKey > this.limits.socketsPerKey ? this.limits.socketsPerKey : this.limits.socketsPerAccount);
    }
  }

  /** Extends the leases (XX: only a lease still held, never one already given back). */
  async renew(now = Date.now()): Promise<void> {
    if (!this.store?.available()) return;
    await this.store
      .run(async (redis) => {
        const p = redis.pipeline();
        for (const set of [KEY_SET(this.keyId), ACCOUNT_SET(this.accountId)]) {
          p.zadd(set, { xx: true }, { score: now + this.leaseMs, member: this.id });
          p.pexpire(set, 2 * this.leaseMs);
        }
        await p.exec();
      })
      .catch(() => undefined);
  }

  async release(): Promise<void> {
    if (!this.store) return;
    await this.store
      .run(async (redis) => {
        const p = redis.pipeline();
        p.zrem(KEY_SET(this.keyId), this.id);
        p.zrem(ACCOUNT_SET(this.accountId), this.id);
        await p.exec();
      })
      .catch(() => undefined);
  }
}
