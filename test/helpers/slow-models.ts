// Models built for the node-isolation tests and bench (test/node-isolation.test.ts,
// bench/node-workers.ts): a model whose run time the caller sets (a Loop of MatMuls), a load-time
// memory bomb (a tiny file whose constant folding makes a huge constant), a run-time one (its
// run allocates what its inputs say) and a model whose
// initializer names external data in a sibling file (the cross-model read of issue 10 item 1).

import { encodeModel, OnnxType, type GraphDesc } from "../../scripts/onnx-writer.js";

/**
 * spin: y = Loop(n) { x = Tanh(MatMul(x, w)) } over x [size, size] FP32; `n` (INT64 [1]) sets
 * the number of MatMuls, so one model serves as the fast model (n = 1) and the slow one.
 * Inputs: n INT64 [1], x FP32 [size, size]. Output: y FP32 [size, size].
 */
export function spinModel(size = 128): Uint8Array {
  const body: GraphDesc = {
    name: "spin_body",
    nodes: [
      { opType: "Identity", inputs: ["cond_in"], outputs: ["cond_out"] },
      { opType: "MatMul", inputs: ["x_in", "w"], outputs: ["mm"] },
      { opType: "Tanh", inputs: ["mm"], outputs: ["x_out"] },
    ],
    inputs: [
      { name: "iter", elemType: OnnxType.INT64, shape: [] },
      { name: "cond_in", elemType: OnnxType.BOOL, shape: [] },
      { name: "x_in", elemType: OnnxType.FLOAT, shape: [size, size] },
    ],
    outputs: [
      { name: "cond_out", elemType: OnnxType.BOOL, shape: [] },
      { name: "x_out", elemType: OnnxType.FLOAT, shape: [size, size] },
    ],
  };
  const w = Float32Array.from({ length: size * size }, (_, i) => ((i * 7919) % 13) / 13 - 0.5);
  return encodeModel({
    producerVersion: "1",
    graph: {
      name: "spin",
      nodes: [
        { opType: "Squeeze", inputs: ["n"], outputs: ["n_scalar"] },
        { opType: "Loop", name: "loop", inputs: ["n_scalar", "cond", "x"], outputs: ["y"], attributes: [{ name: "body", g: body }] },
      ],
      inputs: [
        { name: "n", elemType: OnnxType.INT64, shape: [1] },
        { name: "x", elemType: OnnxType.FLOAT, shape: [size, size] },
      ],
      outputs: [{ name: "y", elemType: OnnxType.FLOAT, shape: [size, size] }],
      initializers: [
        { name: "w", elemType: OnnxType.FLOAT, dims: [size, size], values: new Uint8Array(w.buffer) },
        { name: "cond", elemType: OnnxType.BOOL, dims: [], values: [true] },
      ],
    },
  });
}

/**
 * A file of a few hundred bytes whose constant folding at session creation makes a constant of
 * `mib` MiB: y = Expand(c, shape) + x, where c and shape are initializers (so the Expand folds).
 */
export function memoryBombModel(mib = 1024): Uint8Array {
  const elements = (mib * 2 ** 20) / 4;
  const rows = 1024;
  const cols = Math.ceil(elements / rows);
  return encodeModel({
    producerVersion: "1",
    graph: {
      name: "bomb",
      nodes: [
        { opType: "Expand", inputs: ["c", "shape"], outputs: ["big"] },
        { opType: "Add", inputs: ["big", "x"], outputs: ["y"] },
      ],
      inputs: [{ name: "x", elemType: OnnxType.FLOAT, shape: [1, 1] }],
      outputs: [{ name: "y", elemType: OnnxType.FLOAT, shape: [rows, cols] }],
      initializers: [
        { name: "c", elemType: OnnxType.FLOAT, dims: [1, 1], values: [1] },
        { name: "shape", elemType: OnnxType.INT64, dims: [2], values: [BigInt(rows), BigInt(cols)] },
      ],
    },
  });
}

/**
 * A model whose *run* takes memory its file does not show: y = ReduceSum(Tanh(Expand(x, shape)))
 * with `shape` an input (INT64 [2]), so nothing folds at load and a run allocates two FP32
 * tensors of shape[0] × shape[1] (runBombInputs). Inputs: x FP32 [1, 1], shape INT64 [2]; output y FP32 (scalar).
 */
export function runMemoryBombModel(): Uint8Array {
  return encodeModel({
    producerVersion: "1",
    graph: {
      name: "run_bomb",
      nodes: [
        { opType: "Expand", inputs: ["x", "shape"], outputs: ["big"] },
        { opType: "Tanh", inputs: ["big"], outputs: ["t"] },
        { opType: "ReduceSum", inputs: ["t"], outputs: ["y"], attributes: [{ name: "keepdims", i: 0 }] },
      ],
      inputs: [
        { name: "x", elemType: OnnxType.FLOAT, shape: [1, 1] },
        { name: "shape", elemType: OnnxType.INT64, shape: [2] },
      ],
      outputs: [{ name: "y", elemType: OnnxType.FLOAT, shape: [] }],
    },
  });
}

/**
 * y = Identity(stolen): `stolen` is a UINT8 [length] initializer whose bytes are external data
 * in `location` (relative to the model file's folder), offset 0. Deliberately close to
 * scripts/onnx-writer.ts's externalDataModel, but with an input `x` FP32 [1], so a node is
 * asked to run it like any model (that one has no inputs: the edge refuses it before any run).
 */
export function externalDataModel(location: string, length: number): Uint8Array {
  return encodeModel({
    graph: {
      name: "external",
      nodes: [{ opType: "Identity", inputs: ["stolen"], outputs: ["y"] }],
      inputs: [{ name: "x", elemType: OnnxType.FLOAT, shape: [1] }],
      outputs: [{ name: "y", elemType: OnnxType.UINT8, shape: [length] }],
      initializers: [{ name: "stolen", elemType: OnnxType.UINT8, dims: [length], external: { location, offset: 0, length } }],
    },
  });
}
