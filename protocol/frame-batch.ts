// Coalesces one socket's outgoing frames per turn of the event loop into batch messages
// (protocol/messages.ts, `batch`). Every token used to be its own socket message at each hop:
// with a batched decoder making a token for every stream in one step, a router relaying 512
// streams paid 512 sends (a syscall and a WebSocket frame each) on the way in and again on the
// way out, and each receiver as many wake-ups. Queued frames go out together once the current
// turn is done (setImmediate where there is one, else a microtask): never on a timer, so an idle
// socket's lone frame leaves as soon as the code that made it returns, as a plain frame.
// Order is kept: frames leave in the order they were pushed, and `flush()` sends what waits at
// once (before a close, so the close does not overtake them).
// Only to a peer that announced `batch` (protocol/wire-version.ts): until `batching` is set,
// every frame leaves at once as its own message, which is all a part from before batches
// reads (it closes the socket on a batch).

import { MAX_BATCH_BYTES, MAX_BATCH_FRAMES } from "./messages.js";

/** Runs a function once the current turn of the event loop is done (never on a timer). */
export type Schedule = (f: () => void) => void;

/** Node's setImmediate runs right after this turn's I/O (so frames read in one turn go together); a Worker's microtask queue otherwise. */
const immediate = (globalThis as { setImmediate?: (f: () => void) => unknown }).setImmediate;
/** The end of this turn: what the edge's caller-facing coalescers (edge/turn-coalescer.ts) flush on too. */
export const nextTurn: Schedule = immediate ? (f) => void immediate.call(globalThis, f) : (f) => queueMicrotask(f);

export class FrameBatcher<F> {
  private queue: F[] = [];
  private scheduled = false;
  /**
   * The peer announced `batch`: a turn's frames leave together. False (the default, and what a
   * peer that announced nothing gets): each frame is written the moment it is pushed.
   */
  batching = false;

  constructor(
    private readonly encode: (value: unknown) => Uint8Array,
    /** Writes one socket message; called in order, from flush. */
    private readonly write: (bytes: Uint8Array) => void,
    private readonly schedule: Schedule = nextTurn,
  ) {}

  /** Frames waiting for the end of this turn. */
  get pending(): number {
    return this.queue.length;
  }

  push(frame: F): void {
    if (!this.batching) return this.sendNow(frame);
    this.queue.push(frame);
    if (this.scheduled) return;
    this.scheduled = true;
    this.schedule(() => {
      this.scheduled = false;
      this.flush();
    });
  }

  /**
   * Sends `frame` now, after whatever waits (order kept), never batched: for frames whose
   * encoding is large (a call's tensors), which a batch over the byte bound would encode twice.
   */
  sendNow(frame: F): void {
    this.flush();
    this.write(this.encode(frame));
  }

  /** Sends everything queued now, in order: one frame alone, more as batches within the bounds. */
  flush(): void {
    const queue = this.queue;
    if (queue.length === 0) return;
    this.queue = [];
    // Nearly always one batch's worth: sent as it is, not copied.
    if (queue.length <= MAX_BATCH_FRAMES) return this.send(queue);
    for (let at = 0; at < queue.length; at += MAX_BATCH_FRAMES) this.send(queue.slice(at, at + MAX_BATCH_FRAMES));
  }

  private send(frames: F[]): void {
    // Not batching (any more): what was queued before leaves one by one, in order.
    if (!this.batching) return frames.forEach((f) => this.write(this.encode(f)));
    if (frames.length === 1) return this.write(this.encode(frames[0]));
    const bytes = this.encode({ t: "batch", frames });
    // Rare (long token texts, error messages): halve until each part is under the byte bound.
    if (bytes.length > MAX_BATCH_BYTES) {
      const half = frames.length >> 1;
      this.send(frames.slice(0, half));
      this.send(frames.slice(half));
      return;
    }
    this.write(bytes);
  }
}
