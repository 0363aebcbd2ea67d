// Which of onnxruntime's refusals are the caller's (gpu-node/run-errors.ts), on the messages
// onnxruntime-node 1.30 really throws (taken from runs of small models: it gives no status code).

import { describe, expect, it } from "vitest";
import { runErrorCode } from "../gpu-node/run-errors.js";

const BROADCAST =
  "Non-zero status code returned while running Add node. Name:'' Status Message: /onnxruntime_src/onnxruntime/core/providers/cpu/math/element_wise_ops.h:563 void onnxruntime::BroadcastIterator::Init(ptrdiff_t, ptrdiff_t) axis == 1 || axis == largest was false. Attempting to broadcast an axis by a dimension other than 1. 2 by 3\n";
const MATMUL = "Non-zero status code returned while running MatMul node. Name:'' Status Message: matmul_helper.h:59 Compute MatMul dimension mismatch";
const RESHAPE =
  "Non-zero status code returned while running Reshape node. Name:'' Status Message: /onnxruntime_src/onnxruntime/core/providers/cpu/tensor/reshape_helper.h:91 onnxruntime::ReshapeHelper::ReshapeHelper(const onnxruntime::TensorShape&, onnxruntime::TensorShapeVector&, bool) input_shape_size == requested_shape_size was false. The input tensor cannot be reshaped to the requested shape. Input shape:{1,4}, requested shape:{5}\n";
const RANK = "Invalid rank for input: a Got: 2 Expected: 1 Please fix either the inputs/outputs or the model.";

describe("run errors", () => {
  it("the session's own input checks are invalid_tensor, whatever the model did before", () => {
    expect(runErrorCode(RANK, false)).toBe("invalid_tensor");
    expect(runErrorCode("Got invalid dimensions for input: x for the following indices\n index: 1 Got: 3 Expected: 4", true)).toBe("invalid_tensor");
    expect(runErrorCode("Unexpected input data type. Actual: (tensor(double)) , expected: (tensor(float))", false)).toBe("invalid_tensor");
  });

  it("a kernel's refusal is the caller's once the model has answered here, the model's before", () => {
    expect(runErrorCode(BROADCAST, true)).toBe("input_rejected");
    expect(runErrorCode(MATMUL, true)).toBe("input_rejected");
    // A Reshape that no input fits looks the same: before any success it stays the model's 500.
    expect(runErrorCode(RESHAPE, false)).toBe("inference_failed");
  });

  it("memory and device failures are never the caller's", () => {
    expect(runErrorCode("Non-zero status code returned while running MatMul node. Name:'' Status Message: Failed to allocate memory for requested buffer of size 4294967296", true)).toBe("inference_failed");
    expect(runErrorCode("Non-zero status code returned while running Conv node. Name:'' Status Message: CUDA error cudaErrorMemoryAllocation:out of memory", true)).toBe("inference_failed");
    expect(runErrorCode("something else entirely", true)).toBe("inference_failed");
  });
});
