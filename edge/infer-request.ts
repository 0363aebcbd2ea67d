// The Open Inference Protocol's inference request as the edge takes it: one zod schema that
// /openapi.json documents and the infer route checks every call against, then the typed fast
// path (formats/tensor.ts) for what depends on the model's signature. The schema checks the
// request's shape (fields, types, shapes, binary sizes) but not each element of `data`: walking
// a [64, 1024] tensor through zod costs about a third on top of today's check, while the fast
// path checks every element against its datatype anyway (bench/validation.ts measures both).

import { z } from "zod";
import type { TensorSpec } from "../formats/datatypes.js";
import { parseInferRequest, TensorError, type BinaryTail, type ParsedInferRequest } from "../formats/tensor.js";
import { zodProblems } from "./zod-problems.js";

/** A model input or output as its signature declares it (-1: any size). */
export const TensorSpecSchema = z.object({ name: z.string(), datatype: z.string(), shape: z.array(z.number().int()) });

/** An array whose elements the fast path checks (documented as an array; zod does not walk it). */
const TensorDataSchema = z
  .custom<unknown[]>((v) => Array.isArray(v), "must be an array (row-major, flat or nested)")
  .meta({ type: "array", description: "Row-major, flat or nested. Absent when the tensor is binary (`parameters.binary_data_size`)." });

export const JsonTensorSchema = z.object({
  name: z.string(),
  datatype: z.string().describe("An OIP datatype: BOOL, UINT8..UINT64, INT8..INT64, FP16, BF16, FP32, FP64, BYTES."),
  shape: z.array(z.number().int().min(0)),
  data: TensorDataSchema.optional(),
  parameters: z
    .object({ binary_data_size: z.number().int().min(0).optional() })
    .optional()
    .describe("Binary tensor data extension: the tensor's data is this many bytes after the JSON (docs/binary-tensors.md)."),
});

export const InferRequestSchema = z.object({
  id: z.string().optional().describe("Echoed in the answer; also the sticky key of a split when `x-mesh-sticky` is absent."),
  inputs: z.array(JsonTensorSchema).min(1, "must list at least one input"),
  outputs: z
    .array(z.object({ name: z.string(), parameters: z.object({ binary_data: z.boolean().optional() }).optional() }))
    .optional()
    .describe("A subset of the model's outputs (default: all); `parameters.binary_data: true` returns one in binary."),
  parameters: z
    .object({ binary_data_output: z.boolean().optional() })
    .catchall(z.unknown())
    .optional()
    .describe("`binary_data_output: true` returns every output in binary unless the output says otherwise."),
});

export type InferRequestBody = z.infer<typeof InferRequestSchema>;

/**
 * Checks a call's JSON against InferRequestSchema, then against the model's signature (every
 * input once, datatype, shape, element count and each element's value, binary parts). Throws
 * TensorError (400 invalid_tensor) with a message the caller can act on.
 */
export function checkInferRequest(json: unknown, signature: { inputs: TensorSpec[]; outputs: TensorSpec[] }, binary?: BinaryTail): ParsedInferRequest {
  if (!plainInferRequest(json)) {
    const r = InferRequestSchema.safeParse(json);
    if (!r.success) throw new TensorError(zodProblems(r.error, "body"));
  }
  // The fast path reads the original object: zod's output is a copy the call does not need.
  return parseInferRequest(json, signature, binary);
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
const isCount = (v: unknown): boolean => Number.isSafeInteger(v) && (v as number) >= 0;

/**
 * True for a body InferRequestSchema takes, in the shapes callers send, checked by hand: the
 * Worker cannot compile zod schemas, and its interpreter walking this one was about 6% of the
 * edge isolate's CPU per small call (docs/benchmarks.md, issue 14). It may only say yes where the
 * schema does (test/request-schemas.test.ts); anything else goes to the schema, whose refusal
 * names the field.
 */
export function plainInferRequest(json: unknown): boolean {
  if (!isObject(json)) return false;
  const { id, inputs, outputs, parameters } = json;
  if (id !== undefined && typeof id !== "string") return false;
  if (!Array.isArray(inputs) || inputs.length === 0) return false;
  for (const t of inputs) {
    if (!isObject(t) || typeof t.name !== "string" || typeof t.datatype !== "string" || !Array.isArray(t.shape) || !t.shape.every(isCount)) return false;
    if (t.data !== undefined && !Array.isArray(t.data)) return false;
    const p = t.parameters;
    if (p !== undefined && !(isObject(p) && (p.binary_data_size === undefined || isCount(p.binary_data_size)))) return false;
  }
  if (outputs !== undefined) {
    if (!Array.isArray(outputs)) return false;
    for (const o of outputs) {
      if (!isObject(o) || typeof o.name !== "string") return false;
      const p = o.parameters;
      if (p !== undefined && !(isObject(p) && (p.binary_data === undefined || typeof p.binary_data === "boolean"))) return false;
    }
  }
  return parameters === undefined || (isObject(parameters) && (parameters.binary_data_output === undefined || typeof parameters.binary_data_output === "boolean"));
}
