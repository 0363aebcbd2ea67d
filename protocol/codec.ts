// The msgpack framing every hop of the mesh uses (edge -> region over HTTP bodies, router <-> node
// over WebSocket frames). Typed arrays travel as themselves (`moreTypes`), so tensors are not
// re-encoded as JSON numbers between parts. Each side keeps one Packr for what it sends and one
// Unpackr for what it receives: a Packr shared across directions with records on corrupted frames.

import { Packr, Unpackr } from "msgpackr";

const OPTIONS = { moreTypes: true, useRecords: false, mapsAsObjects: true } as const;

export class CodecError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CodecError";
  }
}

export interface Codec {
  encode(value: unknown): Uint8Array<ArrayBuffer>;
  /** Decodes one whole frame; throws CodecError for anything that is not exactly one msgpack value. */
  decode(bytes: Uint8Array): unknown;
}

export function createCodec(): Codec {
  const packr = new Packr(OPTIONS);
  const unpackr = new Unpackr(OPTIONS);
  return {
    encode: (value) => packr.pack(value) as Uint8Array<ArrayBuffer>,
    decode: (bytes) => {
      if (bytes.length === 0) throw new CodecError("empty frame");
      try {
        return unpackr.unpack(bytes);
      } catch (err) {
        throw new CodecError(`invalid msgpack frame: ${(err as Error).message.slice(0, 120)}`);
      }
    },
  };
}

export const MSGPACK_CONTENT_TYPE = "application/x-msgpack";
