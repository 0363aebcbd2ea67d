// What the edge writes to a caller's WebSocket opened with `?batch=true`, coalesced per turn of
// the event loop. By default a generation's events leave one message each, one per token; when
// the edge falls behind, a read of the region's socket holds several streams' tokens, and each
// still cost its own send. With the opt-in, what becomes ready in one turn leaves as one JSON
// array once the turn is done (the frame batchers' schedule, protocol/frame-batch.ts: a microtask
// in the Worker), never on a timer: a lone event on an idle stream still leaves as soon as the
// code that made it returns. The bound is on the items' count; reaching it flushes at once.
//
// Not used for SSE: a probe at 64 and 128 SSE streams found no read of a region's response that
// held two of a stream's events (the router writes one HTTP chunk per token and workerd reads one
// chunk per read), so joining SSE writes had nothing to join (docs/benchmarks.md).

import { nextTurn, type Schedule } from "../protocol/frame-batch.js";

export class TurnCoalescer<T> {
  private items: T[] = [];
  private size = 0;
  private scheduled = false;

  constructor(
    /** Writes what one turn (or one bound's worth) gathered, in the order pushed; never called with nothing. */
    private readonly write: (items: T[]) => void,
    /** Most size one write gathers before it leaves at once. */
    private readonly maxSize: number,
    private readonly schedule: Schedule = nextTurn,
  ) {}

  /** Items waiting for the end of this turn. */
  get pending(): number {
    return this.items.length;
  }

  /** Queues `item` (of `size`) for the end of this turn; what waits leaves first when it would pass the bound. */
  push(item: T, size: number): void {
    if (this.items.length > 0 && this.size + size > this.maxSize) this.flush();
    this.items.push(item);
    this.size += size;
    if (this.size >= this.maxSize) return this.flush();
    if (this.scheduled) return;
    this.scheduled = true;
    this.schedule(() => {
      this.scheduled = false;
      this.flush();
    });
  }

  /** Writes what waits now (before an end, so nothing is left behind it). */
  flush(): void {
    if (this.items.length === 0) return;
    const items = this.items;
    this.items = [];
    this.size = 0;
    this.write(items);
  }

  /** Forgets what waits (the reader went away). */
  drop(): void {
    this.items = [];
    this.size = 0;
  }
}
