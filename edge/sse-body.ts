// The body of a Server-Sent Events generation (generations.ts sseGeneration): a ReadableStream
// the runtime pulls as the caller's socket drains. It sets the generation's credit, and it ends
// a reader that stopped taking anything.
//
// Credit: the region may run `window` tokens ahead; each pull (the runtime took an event) grants
// the room the queue has left, so queued events plus credit outstanding never pass the window.
//
// Stall: workerd's socket gives no acknowledgement, only pulls, and the kernel's buffers between
// the edge and the reader take a few MB before the runtime stops pulling (2.7 MB measured on
// Linux loopback: more than a whole 4096-token answer), so a reader that stopped is seen only
// once those are full. From then, once the socket has taken nothing for `stallMs` while the body
// holds events, the reader is given up on: the generation is stopped and the body errored, so
// the runtime drops the connection rather than holding it (and what it queues) for as long as
// the reader sits. Nothing written then would reach a reader stuck behind what it has not read.
// A tail left once the generation ended is watched the same way.

/** What the body drives: the generation behind it. */
export interface SseFeed {
  /** The reader took events: the region may send `n` more tokens. */
  credit(n: number): void;
  /** The reader left (`gone`) or stopped reading (`stalled`) while the generation ran: stop it. */
  stop(why: "gone" | "stalled"): void;
}

export class SseBody {
  readonly stream: ReadableStream<Uint8Array>;
  private controller!: ReadableStreamDefaultController<Uint8Array>;
  private readonly encoder = new TextEncoder();
  /** Credit granted and not yet used by a token. */
  private outstanding: number;
  /** No more events: the generation ended, or the reader left or stalled. */
  private ended = false;
  /** Closed (its tail taken) or errored: nothing left to watch. */
  private over = false;
  /** When the socket last took an event (a pull follows a read that leaves room; the stall check sees any other). */
  private lastTake: number;
  /** Events enqueued, and of those how many were taken when the stall check last looked (or was armed). */
  private enqueued = 0;
  private takenSeen = 0;
  private timer: ReturnType<typeof setTimeout> | null = null;

  /** `window`: the credit the generation started with (its request's window). */
  constructor(
    private readonly feed: SseFeed,
    private readonly window: number,
    private readonly stallMs: number,
    private readonly onStalled: (info: { idleMs: number; queued: number; running: boolean }) => void = () => undefined,
  ) {
    this.outstanding = window;
    this.lastTake = Date.now();
    this.stream = new ReadableStream<Uint8Array>(
      {
        start: (c) => {
          this.controller = c;
        },
        pull: () => {
          this.lastTake = Date.now();
          if (this.ended) this.closeIfTaken();
          else this.refill();
        },
        cancel: () => this.giveUp("gone"),
      },
      new CountQueuingStrategy({ highWaterMark: window }),
    );
  }

  /** True once no more events are taken (the generation ended, or the reader left or stalled). */
  get closed(): boolean {
    return this.ended;
  }

  /** An event's text for the reader ("" writes nothing); `token`: it used one credit. */
  write(text: string, token: boolean): void {
    if (this.ended) return;
    if (token) this.outstanding = Math.max(0, this.outstanding - 1);
    if (text) {
      this.controller.enqueue(this.encoder.encode(text));
      this.enqueued++;
    }
    this.refill();
    this.watch();
  }

  /** The generation ended (its last event written): the body closes once the socket has taken it all. */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    this.closeIfTaken();
    this.watch();
  }

  /** The reader left (the runtime's request.signal, besides the body's own cancel). */
  gone(): void {
    this.giveUp("gone");
  }

  /** Events held that the socket has not taken. */
  private queued(): number {
    return this.window - (this.controller.desiredSize ?? this.window);
  }

  private refill(): void {
    const room = (this.controller.desiredSize ?? 0) - this.outstanding;
    if (room > 0 && !this.ended) {
      this.outstanding += room;
      this.feed.credit(room);
    }
  }

  private closeIfTaken(): void {
    if (this.ended && !this.over && this.queued() === 0) {
      this.stopWatching();
      this.controller.close();
    }
  }

  private giveUp(why: "gone" | "stalled"): void {
    if (this.over) return;
    const running = !this.ended;
    const queued = this.queued();
    this.ended = true;
    this.stopWatching();
    if (running) this.feed.stop(why);
    if (why === "stalled") {
      this.onStalled({ idleMs: Date.now() - this.lastTake, queued, running });
      this.controller.error(new Error(`the reader took nothing for ${this.stallMs} ms`));
    }
  }

  /** Armed while the body holds events the socket has not taken. */
  private watch(): void {
    if (this.over || this.timer || this.queued() === 0) return;
    this.takenSeen = this.enqueued - this.queued();
    this.timer = setTimeout(() => this.check(), this.stallMs);
  }

  private check(): void {
    this.timer = null;
    if (this.over || this.queued() === 0) return;
    // A read with the queue past the window (events that carry no credit) brings no pull.
    const taken = this.enqueued - this.queued();
    if (taken > this.takenSeen) {
      this.takenSeen = taken;
      this.lastTake = Math.max(this.lastTake, Date.now() - 1);
    }
    const idle = Date.now() - this.lastTake;
    if (idle >= this.stallMs) this.giveUp("stalled");
    else this.timer = setTimeout(() => this.check(), this.stallMs - idle);
  }

  private stopWatching(): void {
    this.over = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}
