// Models whose file size the test chooses (test/model-cache.test.ts, test/disk-pressure.test.ts):
// the bytes are one initializer, so a size in the cache is a size on disk.

import { encodeModel, OnnxType } from "../../scripts/onnx-writer.js";

/** y = x + sum(w), with w `n` floats that are all 0 but the first (`seed`): a file of about 4n bytes whose answer says which it is. */
export function weightModel(n: number, seed: number): Uint8Array {
  const w = new Float32Array(n);
  w[0] = seed;
  return encodeModel({
    graph: {
      name: "weights",
      nodes: [
        { opType: "ReduceSum", inputs: ["w"], outputs: ["s"] },
        { opType: "Add", inputs: ["x", "s"], outputs: ["y"] },
      ],
      inputs: [{ name: "x", elemType: OnnxType.FLOAT, shape: [1, 1] }],
      outputs: [{ name: "y", elemType: OnnxType.FLOAT, shape: [1, 1] }],
      initializers: [{ name: "w", elemType: OnnxType.FLOAT, dims: [n], values: new Uint8Array(w.buffer) }],
    },
  });
}
