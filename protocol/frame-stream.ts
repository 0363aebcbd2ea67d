// Frames in one byte stream: each frame is a 4-byte big-endian length, then that many bytes (a
// msgpack value). The router's streamed HTTP generation (POST /v1/streams) answers with a body
// of these, so one HTTP response carries a generation's progress, tokens and end. The reader
// bounds every frame before it buffers it: a length over `maxFrame` is an error, never an
// allocation.

export const FRAME_STREAM_CONTENT_TYPE = "application/x-mesh-frames";
/** A region-to-edge frame is a token or a short message: 1 MiB is far above any honest one. */
export const MAX_STREAM_FRAME_BYTES = 1024 * 1024;

export class FrameStreamError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "FrameStreamError";
  }
}

/** One frame with its length prefix, ready to write. */
export function frameBytes(payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + payload.length);
  new DataView(out.buffer).setUint32(0, payload.length);
  out.set(payload, 4);
  return out;
}

/** The splitter's "nothing kept": one shared empty array, not a new one per chunk (an allocation per token otherwise). */
const NOTHING = new Uint8Array(0);

/**
 * Splits a byte stream into frames as chunks arrive (a chunk may hold many frames, or part of
 * one). Keeps at most one partial frame, itself bounded by maxFrame.
 */
export class FrameSplitter {
  private buf = NOTHING;

  constructor(private readonly maxFrame = MAX_STREAM_FRAME_BYTES) {}

  /** The whole frames completed by `chunk`, in order; throws FrameStreamError on an oversized one. */
  push(chunk: Uint8Array): Uint8Array[] {
    let data: Uint8Array;
    if (this.buf.length === 0) {
      data = chunk;
    } else {
      data = new Uint8Array(this.buf.length + chunk.length);
      data.set(this.buf, 0);
      data.set(chunk, this.buf.length);
    }
    const frames: Uint8Array[] = [];
    let at = 0;
    while (data.length - at >= 4) {
      const len = ((data[at]! << 24) | (data[at + 1]! << 16) | (data[at + 2]! << 8) | data[at + 3]!) >>> 0;
      if (len > this.maxFrame) throw new FrameStreamError(`frame of ${len} bytes is over the ${this.maxFrame}-byte bound`);
      if (data.length - at - 4 < len) break;
      frames.push(data.subarray(at + 4, at + 4 + len));
      at += 4 + len;
    }
    // Copied so a kept partial frame does not pin the whole chunk it came in.
    this.buf = at === data.length ? NOTHING : data.slice(at);
    return frames;
  }

  /** Bytes of a frame still incomplete (a stream that ends with some is cut short). */
  get pending(): number {
    return this.buf.length;
  }
}
