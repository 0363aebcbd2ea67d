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

/** ONNX TensorProto.DataType enum value -> OIP datatype (undefined: no OIP equivalent). */
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
export type { ModelSignature, TensorSpec } from "./messages.js";
