// Models built for the node-isolation tests and bench (test/node-isolation.test.ts,
// bench/node-workers.ts): a model whose run time the caller sets (a Loop of MatMuls), a load-time
// memory bomb (a tiny file whose constant folding makes a huge constant) and a model whose
// initializer names external data in a sibling file (the cross-model read of issue 10 item 1).
// onnx-writer has no graph attributes or external data, so those fields are written here with
// its ProtoWriter (field numbers from onnx/onnx.proto).

import { encodeModel, graphProto, OnnxType, ProtoWriter, type GraphDesc, type ModelDesc } from "../../scripts/onnx-writer.js";

/** AttributeProto with a graph (g = 6, type GRAPH = 5), for Loop's body. */
function graphAttribute(name: string, g: GraphDesc): ProtoWriter {
  const w = new ProtoWriter();
  w.stringField(1, name);
  w.messageField(6, graphProto(g));
  w.int64Field(20, 5);
  return w;
}

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
  // The Loop node is written by hand (graph attribute); the rest goes through graphProto.
  const loop = new ProtoWriter();
  for (const i of ["n_scalar", "cond", "x"]) loop.stringField(1, i);
  loop.stringField(2, "y");
  loop.stringField(3, "loop");
  loop.stringField(4, "Loop");
  loop.messageField(5, graphAttribute("body", body));
  return encodeWithExtraNode(
    {
      producerVersion: "1",
      graph: {
        name: "spin",
        nodes: [{ opType: "Squeeze", inputs: ["n"], outputs: ["n_scalar"] }],
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
    },
    loop,
  );
}

/** encodeModel with one more NodeProto appended to the graph (graph.node = 1 is repeated, so order is kept by appending after the others). */
function encodeWithExtraNode(desc: ModelDesc, node: ProtoWriter): Uint8Array {
  const g = graphProto(desc.graph);
  g.messageField(1, node);
  return encodeModelWithGraph(desc, g);
}

/** ModelProto around an already built GraphProto (same fields as encodeModel). */
function encodeModelWithGraph(desc: ModelDesc, graph: ProtoWriter): Uint8Array {
  const w = new ProtoWriter();
  w.int64Field(1, desc.irVersion ?? 8);
  w.stringField(2, desc.producerName ?? "inference-mesh");
  w.messageField(7, graph);
  const opset = new ProtoWriter();
  opset.stringField(1, "");
  opset.int64Field(2, desc.opsetVersion ?? 17);
  w.messageField(8, opset);
  return w.finish();
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
 * y = Identity(stolen): `stolen` is a UINT8 [length] initializer whose bytes are external data
 * in `location` (relative to the model file's folder), offset 0. TensorProto: data_location = 14
 * (EXTERNAL = 1), external_data = 13 (StringStringEntryProto key = 1, value = 2).
 */
export function externalDataModel(location: string, length: number): Uint8Array {
  const t = new ProtoWriter();
  t.int64Field(1, length);
  t.int64Field(2, OnnxType.UINT8);
  t.stringField(8, "stolen");
  for (const [k, v] of [["location", location], ["offset", "0"], ["length", String(length)]] as const) {
    const e = new ProtoWriter();
    e.stringField(1, k);
    e.stringField(2, v);
    t.messageField(13, e);
  }
  t.int64Field(14, 1);
  const g = graphProto({
    name: "external",
    nodes: [{ opType: "Identity", inputs: ["stolen"], outputs: ["y"] }],
    inputs: [{ name: "x", elemType: OnnxType.FLOAT, shape: [1] }],
    outputs: [{ name: "y", elemType: OnnxType.UINT8, shape: [length] }],
  });
  g.messageField(5, t);
  return encodeModelWithGraph({ graph: { name: "external", nodes: [], inputs: [], outputs: [] } }, g);
}
