// Fair shares between accounts in one region: the ledger of which account holds which call and
// stream slots (per node and in the region) and how many of its requests wait, and the rules
// the scheduler places by. Tenants are hostile: one account must not be able to take every slot
// and starve the others (issue 10, item 7).
//
// The rules, per kind of slot (calls and streams are counted apart, as nodes run them apart):
//  - Contention is "another account waits for this kind of slot". Without it there is no cap:
//    an account alone may use the whole region.
//  - With it, an account may take one more slot only while it holds fewer than its share of the
//    node's slots and of the region's: slots x its weight / the weights of the accounts holding
//    or waiting (rounded up, so together the shares cover every slot).
//  - A free slot goes to the waiting account holding the fewest slots per weight (max-min fair).
//    When no waiting request within its shares can use a free slot (its model is not warm
//    there), the scheduler lets the fewest-holding one that can have it: a slot never idles.
//  - A running stream whose reader stalled is asked to give its slot back when others wait and
//    its account is at or over its share (`shouldYield`), once per slot someone waits for.
//  - Admission: when the region holds MAX_INFLIGHT requests, an account still under its share
//    of MAX_INFLIGHT (all of it when alone) is let in, so one account filling the region cannot
//    shut the others out.
// No I/O and no timers here: the scheduler owns those, so this is unit-tested with plain data.

export type SlotKind = "call" | "stream";

/** What the rules need of a node (placement.ts NodeState has these). */
export interface SlotNode {
  id: string;
  available: boolean;
  slots: number;
  streamSlots?: number;
}

export function slotsOf(kind: SlotKind, n: SlotNode): number {
  return kind === "call" ? n.slots : (n.streamSlots ?? 0);
}

function bump(m: Map<string, number>, k: string, d: number): void {
  const v = (m.get(k) ?? 0) + d;
  if (v <= 0) m.delete(k);
  else m.set(k, v);
}

class Holdings {
  readonly region = new Map<string, number>();
  readonly perNode = new Map<string, Map<string, number>>();

  change(account: string, node: string, d: number): void {
    bump(this.region, account, d);
    let m = this.perNode.get(node);
    if (!m) this.perNode.set(node, (m = new Map()));
    bump(m, account, d);
    if (m.size === 0) this.perNode.delete(node);
  }

  onNode(node: string, account: string): number {
    return this.perNode.get(node)?.get(account) ?? 0;
  }
}

export class FairShare {
  private readonly held: Record<SlotKind, Holdings> = { call: new Holdings(), stream: new Holdings() };
  private readonly waiting: Record<SlotKind, Map<string, number>> = { call: new Map(), stream: new Map() };
  /** Streams asked to give their slot back and not ended yet, per account. */
  private readonly yielding = new Map<string, number>();

  constructor(
    /** Off: first come, first served, as before (an operator's escape hatch). */
    readonly enabled: boolean,
    private readonly weights: Readonly<Record<string, number>>,
  ) {}

  weight(account: string): number {
    return this.weights[account] ?? 1;
  }

  /** One request of `account` started (+1) or stopped (-1) waiting for a `kind` slot. */
  wait(kind: SlotKind, account: string, d: 1 | -1): void {
    bump(this.waiting[kind], account, d);
  }

  /** `account` took (+1) or gave back (-1) a `kind` slot on `node`. */
  hold(kind: SlotKind, account: string, node: string, d: 1 | -1): void {
    this.held[kind].change(account, node, d);
  }

  heldInRegion(kind: SlotKind, account: string): number {
    return this.held[kind].region.get(account) ?? 0;
  }

  heldOnNode(kind: SlotKind, node: string, account: string): number {
    return this.held[kind].onNode(node, account);
  }

  waitingOf(kind: SlotKind, account: string): number {
    return this.waiting[kind].get(account) ?? 0;
  }

  /** Requests of accounts other than `account` waiting for a `kind` slot. */
  othersWaiting(kind: SlotKind, account: string): number {
    let n = 0;
    for (const [a, c] of this.waiting[kind]) if (a !== account) n += c;
    return n;
  }

  /** The weights of the accounts holding or waiting for `kind` slots, `account` included. */
  private competingWeight(kind: SlotKind, account: string): number {
    const seen = new Set<string>([account]);
    for (const a of this.waiting[kind].keys()) seen.add(a);
    for (const a of this.held[kind].region.keys()) seen.add(a);
    let sum = 0;
    for (const a of seen) sum += this.weight(a);
    return sum;
  }

  /** `account`'s share of `total` slots of this kind against the accounts competing now. */
  share(kind: SlotKind, account: string, total: number): number {
    return Math.max(1, Math.ceil((total * this.weight(account)) / this.competingWeight(kind, account)));
  }

  /**
   * May `account` take one more `kind` slot on `node` (which has a free one)? Always when no
   * other account waits; otherwise only under its share of the node's and the region's slots.
   */
  allows(kind: SlotKind, account: string, node: SlotNode, regionSlots: number): boolean {
    if (!this.enabled || this.othersWaiting(kind, account) === 0) return true;
    if (this.heldOnNode(kind, node.id, account) >= this.share(kind, account, slotsOf(kind, node))) return false;
    return this.heldInRegion(kind, account) < this.share(kind, account, regionSlots);
  }

  /** Placement order among waiting accounts: the fewest slots held per weight first. */
  rank(kind: SlotKind, account: string): number {
    if (!this.enabled) return 0; // oldest first, whoever it is
    return this.heldInRegion(kind, account) / this.weight(account);
  }

  /**
   * Should a stalled stream of `account` on `node` give its slot back now? Yes when other
   * accounts wait for more stream slots than are free (`freeSlots`, e.g. held for a model
   * being loaded for them) or already being given back, and `account` holds at least its share
   * (not counting its streams already giving theirs back). A yes is recorded: call `yielded`
   * when that stream ends.
   */
  shouldYield(account: string, node: SlotNode, regionSlots: number, freeSlots = 0): boolean {
    if (!this.enabled) return false;
    let givingBack = freeSlots;
    for (const c of this.yielding.values()) givingBack += c;
    if (this.othersWaiting("stream", account) <= givingBack) return false;
    const mine = this.yielding.get(account) ?? 0;
    const overNode = this.heldOnNode("stream", node.id, account) - mine >= this.share("stream", account, slotsOf("stream", node));
    const overRegion = this.heldInRegion("stream", account) - mine >= this.share("stream", account, regionSlots);
    if (!overNode && !overRegion) return false;
    bump(this.yielding, account, 1);
    return true;
  }

  /** A stream that was asked to yield has ended. */
  yielded(account: string): void {
    bump(this.yielding, account, -1);
  }

  /** Requests of `account` queued or running (calls and streams). */
  inflightOf(account: string): number {
    let n = 0;
    for (const k of ["call", "stream"] as const) n += this.waitingOf(k, account) + this.heldInRegion(k, account);
    return n;
  }

  /** Is `account` under its share of the region's `maxInflight` (all of it when alone)? */
  underInflightShare(account: string, maxInflight: number): boolean {
    const mine = this.inflightOf(account);
    if (!this.enabled) return mine < maxInflight;
    const active = new Set<string>([account]);
    for (const k of ["call", "stream"] as const) {
      for (const a of this.waiting[k].keys()) active.add(a);
      for (const a of this.held[k].region.keys()) active.add(a);
    }
    let sum = 0;
    for (const a of active) sum += this.weight(a);
    return mine < Math.max(1, Math.ceil((maxInflight * this.weight(account)) / sum));
  }
}
