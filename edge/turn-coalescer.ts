// What the edge writes to its callers, coalesced per turn of the event loop. A generation's
// events used to leave one write each: one SSE chunk per token (a TextEncoder call, an enqueue
// and a pull of the response body by the runtime, then a socket write), one WebSocket message per
// token. When the edge falls behind, a read of the region's response holds several of a stream's
// tokens, and each still cost its own write, so the more behind the edge was the more it paid per
// token. Now what becomes ready in one turn leaves together once the turn is done (the frame
// batchers' schedule, protocol/frame-batch.ts: a microtask in the Worker), never on a timer: a lone
// event on an idle stream still leaves as soon as the code that made it returns.
//
// Users: SSE responses (generations.ts: the events' text joined into one chunk; several
// `data: ...\n\n` events in one chunk are the same stream to any SSE parser) and, when the caller
// asks for it, the public WebSocket (stream-socket.ts: one JSON array of events per turn). The
// bound is on the items' size as the user measures it (SSE: characters); reaching it flushes at
// once, so no write exceeds it unless one item alone does.

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
