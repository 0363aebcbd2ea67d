// Which of onnxruntime's refusals of a run are the caller's to fix (a 4xx it can act on) and
// which are the model's or the node's (a 500). onnxruntime-node 1.30 throws a plain Error whose
// message is the C++ exception's text and nothing else: the binding drops the status code
// (checked: no `code` field, and no "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT" prefix, which is
// the Python binding's form). So the class is told from the message and from what the node saw:
//
// - The session's own input checks (INVALID_ARGUMENT inside onnxruntime: wrong rank, dimensions,
//   element type or name against the graph's declared inputs) are the caller's: invalid_tensor.
//   The edge checks the same declared signature, so these come only where the two disagree.
// - A kernel's refusal ("Non-zero status code returned while running <Op> node": dynamic
//   dimensions that do not agree inside the graph, an index out of range) is the caller's
//   (input_rejected) once the same model has answered a call on this node: the graph runs, so
//   what differs is this call's inputs. Before any success it may be the model itself (a
//   Reshape no input fits), so it stays inference_failed, as does anything about memory.

import type { ErrorCode } from "../protocol/errors.js";

const INPUT_CHECKS = [
  /^Invalid rank for input/i,
  /^Got invalid dimensions for input/i,
  /^Unexpected input data type/i,
  /^Invalid (input|feed input|output) name/i,
  /^Missing Input/i,
];
const KERNEL_REFUSAL = /^Non-zero status code returned while running \S+ node/i;
/** Failures of the node, not of anyone's input: never the caller's. */
const NODE_TROUBLE = /alloc|out of memory|\bmemory\b|\bcuda|cudnn|cublas|\bdevice\b/i;

/**
 * The code a run's failure answers with. `raw` is onnxruntime's message; `modelHasAnswered`:
 * this model (its bytes) has answered a call on this node before.
 */
export function runErrorCode(raw: string, modelHasAnswered: boolean): Extract<ErrorCode, "invalid_tensor" | "input_rejected" | "inference_failed"> {
  const m = raw.trim();
  if (NODE_TROUBLE.test(m)) return "inference_failed";
  if (INPUT_CHECKS.some((r) => r.test(m))) return "invalid_tensor";
  if (KERNEL_REFUSAL.test(m) && modelHasAnswered) return "input_rejected";
  return "inference_failed";
}
