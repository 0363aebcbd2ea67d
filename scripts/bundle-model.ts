// A generated ONNX bundle for tests and benches (issue 11, "models of any size"): a graph whose
// big weight matrix is ONNX external data in a separate file. y = (x W1) W2 with W1 (k x m)
// every element `value`, read from `location`, and W2 (m x 1) inline ones, so
// y = m * value * sum(x): checkable exactly with small integer inputs. The data file is written
// in chunks and hashed on the way, never held in memory whole.

import { createHash } from "node:crypto";
import { createWriteStream } from "node:fs";
import { encodeModel, OnnxType } from "./onnx-writer.js";

export interface BundleShape {
  k: number;
  m: number;
}

/** The data file's length: k x m float32. */
export const dataBytes = (s: BundleShape) => s.k * s.m * 4;

/** Writes W1's bytes (every element `value`) to `path`; their sha256. */
export async function writeBundleWeights(path: string, s: BundleShape, value: number): Promise<string> {
  const chunk = Buffer.from(new Float32Array(4 * 1024 * 1024).fill(value).buffer);
  const hash = createHash("sha256");
  const out = createWriteStream(path);
  for (let left = dataBytes(s); left > 0; left -= chunk.length) {
    const piece = left >= chunk.length ? chunk : chunk.subarray(0, left);
    hash.update(piece);
    if (!out.write(piece)) await new Promise<void>((r) => out.once("drain", () => r()));
  }
  await new Promise<void>((res, rej) => out.end((err?: Error | null) => (err ? rej(err) : res())));
  return hash.digest("hex");
}

/** The graph naming its weights at `location` (offset/length default to the whole file). */
export function bundleGraph(s: BundleShape, location: string, opts: { offset?: number; length?: number } = {}): Uint8Array<ArrayBuffer> {
  return encodeModel({
    graph: {
      name: "bundle",
      initializers: [
        { name: "W1", elemType: OnnxType.FLOAT, dims: [s.k, s.m], external: { location, offset: opts.offset ?? 0, length: opts.length ?? dataBytes(s) } },
        { name: "W2", elemType: OnnxType.FLOAT, dims: [s.m, 1], values: new Uint8Array(new Float32Array(s.m).fill(1).buffer) },
      ],
      nodes: [
        { opType: "MatMul", inputs: ["x", "W1"], outputs: ["h"] },
        { opType: "MatMul", inputs: ["h", "W2"], outputs: ["y"] },
      ],
      inputs: [{ name: "x", elemType: OnnxType.FLOAT, shape: [1, s.k] }],
      outputs: [{ name: "y", elemType: OnnxType.FLOAT, shape: [1, 1] }],
    },
  }) as Uint8Array<ArrayBuffer>;
}
