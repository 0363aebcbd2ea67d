// Tensor datatypes as the Open Inference Protocol names them, and how each maps to ONNX's
// element types and to the typed arrays that carry the data on the wire. Shared by the edge
// (validation), the router (pass-through) and the node (onnxruntime tensors); no Node-only code.

export const OIP_DATATYPES = [
  "BOOL",
  "UINT8",
  "UINT16",
  "UINT32",
  "UINT64",
  "INT8",
  "INT16",
  "INT32",
  "INT64",
  "FP16",
  "FP32",
  "FP64",
  "BF16",
  "BYTES",
] as const;

export type OipDatatype = (typeof OIP_DATATYPES)[number];

export function isOipDatatype(value: unknown): value is OipDatatype {
  return typeof value === "string" && (OIP_DATATYPES as readonly string[]).includes(value);
}

/**
 * The typed array that carries each fixed-size datatype on the wire and into the runtime: BOOL
 * as bytes 0/1, FP16 and BF16 as their raw 16 bits (BYTES travels as strings). One table for
 * every place that builds such an array (tensor.ts from JSON, binary-tensors.ts from bytes).
 */
export const TYPED_ARRAY = {
  BOOL: Uint8Array,
  UINT8: Uint8Array,
  UINT16: Uint16Array,
  UINT32: Uint32Array,
  UINT64: BigUint64Array,
  INT8: Int8Array,
  INT16: Int16Array,
  INT32: Int32Array,
  INT64: BigInt64Array,
  FP16: Uint16Array,
  FP32: Float32Array,
  FP64: Float64Array,
  BF16: Uint16Array,
} as const satisfies Record<Exclude<OipDatatype, "BYTES">, unknown>;

/**
 * ONNX TensorProto.DataType enum value -> OIP datatype (undefined: no OIP equivalent). Not the
 * same table as onnx-signature.ts's ONNX_ELEM_NAMES, though the two look alike line by line: that
 * one gives ONNX's own names (FLOAT, not FP32) for every element type, for error messages.
 */
export const ONNX_ELEM_TO_OIP: Readonly<Record<number, OipDatatype>> = {
  1: "FP32",
  2: "UINT8",
  3: "INT8",
  4: "UINT16",
  5: "INT16",
  6: "INT32",
  7: "INT64",
  8: "BYTES",
  9: "BOOL",
  10: "FP16",
  11: "FP64",
  12: "UINT32",
  13: "UINT64",
  16: "BF16",
};

// A model's signature (TensorSpec, ModelSignature) is a wire message: its schema and types live
// in messages.ts with the others. Re-exported as types only, so no module cycle at run time.
export type { ModelSignature, TensorSpec } from "../protocol/messages.js";
