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

export type Framing = "msgpack" | "json";

// JSON framing exists to measure what msgpack buys (bench/), not for production: typed arrays
// become {"$ta": type, "d": [...]}, 64-bit integers strings.
const TYPED = {
  Float32Array, Float64Array, Int8Array, Int16Array, Int32Array, Uint8Array, Uint16Array, Uint32Array,
  BigInt64Array, BigUint64Array,
} as const;
type TypedName = keyof typeof TYPED;

function jsonReplacer(_key: string, value: unknown): unknown {
  if (ArrayBuffer.isView(value) && !(value instanceof DataView)) {
    const name = (Object.keys(TYPED) as TypedName[]).find((n) => value instanceof TYPED[n]) ?? "Uint8Array";
    const arr = Array.from(value as unknown as ArrayLike<number | bigint>, (v) => (typeof v === "bigint" ? v.toString() : v));
    return { $ta: name, d: arr };
  }
  return value;
}

function jsonReviver(_key: string, value: unknown): unknown {
  if (value && typeof value === "object" && "$ta" in value && "d" in value) {
    const { $ta, d } = value as { $ta: string; d: unknown[] };
    if (!Object.prototype.hasOwnProperty.call(TYPED, $ta) || !Array.isArray(d)) throw new CodecError("bad typed array");
    if ($ta === "BigInt64Array" || $ta === "BigUint64Array") {
      return (TYPED[$ta] as typeof BigInt64Array).from(d, (v) => BigInt(String(v)));
    }
    return (TYPED[$ta as Exclude<TypedName, "BigInt64Array" | "BigUint64Array">] as typeof Float64Array).from(d as number[]);
  }
  return value;
}

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false });

export function createCodec(framing: Framing = "msgpack"): Codec {
  if (framing === "json") {
    return {
      encode: (value) => textEncoder.encode(JSON.stringify(value, jsonReplacer)) as Uint8Array<ArrayBuffer>,
      decode: (bytes) => {
        if (bytes.length === 0) throw new CodecError("empty frame");
        try {
          return JSON.parse(textDecoder.decode(bytes), jsonReviver);
        } catch (err) {
          throw new CodecError(`invalid JSON frame: ${(err as Error).message.slice(0, 120)}`);
        }
      },
    };
  }
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
