// Conversion between the mesh's wire tensors and onnxruntime's tensors, shared by the session
// child (gpu-node/session-child.ts), which runs every model, and the agent, whose token loop
// (gpu-node/full-context-generator.ts) builds onnxruntime tensors for each step.

import * as ort from "onnxruntime-node";
import type { OipDatatype } from "../formats/datatypes.js";
import type { TensorData, WireTensor } from "../formats/tensor.js";

const OIP_TO_ORT: Record<OipDatatype, ort.Tensor.Type | null> = {
  BOOL: "bool",
  UINT8: "uint8",
  UINT16: "uint16",
  UINT32: "uint32",
  UINT64: "uint64",
  INT8: "int8",
  INT16: "int16",
  INT32: "int32",
  INT64: "int64",
  FP16: "float16",
  FP32: "float32",
  FP64: "float64",
  BF16: null, // onnxruntime's JavaScript API has no bfloat16 tensor
  BYTES: "string",
};

const ORT_TO_OIP: Partial<Record<string, OipDatatype>> = Object.fromEntries(
  Object.entries(OIP_TO_ORT)
    .filter(([, v]) => v !== null)
    .map(([k, v]) => [v, k as OipDatatype]),
);

/** A call the runtime refuses (input types, missing outputs): the caller's to fix. */
export class InferenceError extends Error {}

export function toOrt(t: WireTensor): ort.Tensor {
  const type = OIP_TO_ORT[t.datatype];
  if (!type) throw new InferenceError(`input '${t.name}': datatype ${t.datatype} is not supported by onnxruntime-node`);
  return new ort.Tensor(type, t.data as never, t.shape);
}

export function fromOrt(name: string, r: ort.Tensor | undefined): WireTensor {
  if (!r) throw new InferenceError(`model produced no output '${name}'`);
  const datatype = ORT_TO_OIP[r.type];
  if (!datatype) throw new InferenceError(`output '${name}' has type ${r.type}, which the protocol cannot carry`);
  return { name, datatype, shape: [...r.dims], data: r.data as TensorData };
}
