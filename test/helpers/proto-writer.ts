// Raw protobuf writing for hand-made (hostile or odd) ONNX test files: repeated singular
// fields, declared lengths that run past the end, fields in unusual order. A valid model is
// built with scripts/onnx-writer.ts (onnx-proto); this writes the bytes no encoder would, on
// protobufjs's own Writer (the one onnx-proto encodes with), field numbers from onnx.proto.
import protobuf from "protobufjs/minimal.js";

const { Writer } = protobuf;
type Long = protobuf.Long;
const Long = protobuf.util.Long as unknown as { fromString(text: string, unsigned?: boolean): Long };

/** protobufjs wants numbers or Longs for 64-bit fields; a bigint goes through its decimal text. */
const int64 = (v: number | bigint): number | Long => (typeof v === "number" ? v : Long.fromString(BigInt.asUintN(64, v).toString(), true));

export class ProtoWriter {
  private readonly w = Writer.create();

  /** `prefix`: an encoded message to add fields to (protobuf reads appended fields as part of it). */
  constructor(private readonly prefix: Uint8Array = new Uint8Array(0)) {}

  tag(field: number, wireType: number): this {
    this.w.uint32((field << 3) | wireType);
    return this;
  }

  /** Varint field (int64, int32, enum, bool share the wire type); negatives as 64-bit two's complement. */
  int64Field(field: number, value: number | bigint): this {
    this.tag(field, 0).w.uint64(int64(value));
    return this;
  }

  fixed32Field(field: number, bits: number): this {
    this.tag(field, 5).w.fixed32(bits >>> 0);
    return this;
  }

  floatField(field: number, value: number): this {
    this.tag(field, 5).w.float(value);
    return this;
  }

  doubleField(field: number, value: number): this {
    this.tag(field, 1).w.double(value);
    return this;
  }

  fixed64Field(field: number, value: bigint): this {
    this.tag(field, 1).w.fixed64(int64(value));
    return this;
  }

  bytesField(field: number, bytes: Uint8Array): this {
    this.tag(field, 2).w.bytes(bytes);
    return this;
  }

  stringField(field: number, value: string): this {
    this.tag(field, 2).w.string(value);
    return this;
  }

  /** A nested message: another writer, or bytes already encoded (onnx-writer's *Proto helpers). */
  messageField(field: number, message: ProtoWriter | Uint8Array): this {
    return this.bytesField(field, message instanceof Uint8Array ? message : message.finish());
  }

  packedVarints(field: number, values: Iterable<number | bigint>): this {
    const inner = Writer.create();
    for (const v of values) inner.uint64(int64(v));
    return this.bytesField(field, inner.finish());
  }

  finish(): Uint8Array {
    // A copy, not protobufjs's Node Buffer: a Buffer's slice() is a view, a Uint8Array's a copy.
    const own = this.w.finish();
    if (this.prefix.length === 0) return new Uint8Array(own);
    const out = new Uint8Array(this.prefix.length + own.length);
    out.set(this.prefix);
    out.set(own, this.prefix.length);
    return out;
  }
}
