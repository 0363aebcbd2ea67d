// The edge's streaming ONNX signature reader (formats/onnx-signature.ts) against a full
// protobuf decode by onnx-proto (ONNX's own schema), on every model the repository makes and on
// a few odd ones: both must name the same inputs, outputs, shapes, versions and external files.
// The reader stays hand-written because it never holds a model's weights (it jumps over them as
// the upload streams); the library decode holds everything, which is fine for a test.
import { readFileSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ONNX_ELEM_TO_OIP } from "../formats/datatypes.js";
import { OnnxSignatureReader, type OnnxModelInfo } from "../formats/onnx-signature.js";
import { buildCharModel, readCorpus } from "../scripts/make-char-model.js";
import { makeDemoModels } from "../scripts/make-demo-models.js";
import { decodeModel, encodeModel, externalDataModel, OnnxType, type ModelDesc } from "../scripts/onnx-writer.js";
import { externalDataModel as nodeExternalDataModel, memoryBombModel, spinModel } from "./helpers/slow-models.js";

type Decoded = ReturnType<typeof decodeModel>;
type Graph = NonNullable<Decoded["graph"]>;
type ValueInfo = NonNullable<Graph["input"]>[number];
type Tensor = NonNullable<Graph["initializer"]>[number];

/** What the library's decode says the reader must find. */
function expected(bytes: Uint8Array): Omit<OnnxModelInfo, "externalData"> & { external: (string | null)[] } {
  const m = decodeModel(bytes);
  const g: Graph = m.graph!;
  const initializers = new Set((g.initializer ?? []).map((t) => t.name));
  const spec = (v: ValueInfo) => {
    const type = v.type!.tensorType!;
    return {
      name: v.name ?? "",
      datatype: ONNX_ELEM_TO_OIP[type.elemType ?? 0]!,
      // A dimension without dim_value (a dim_param name, or nothing) is dynamic: -1.
      shape: (type.shape?.dim ?? []).map((d) => (d.dimValue != null ? Number(d.dimValue) : -1)),
    };
  };
  const constants = (g.node ?? []).flatMap((n) => (n.attribute ?? []).flatMap((a) => (a.t ? [a.t] : [])));
  const tensors: Tensor[] = [...(g.initializer ?? []), ...constants];
  return {
    inputs: (g.input ?? []).filter((v) => !initializers.has(v.name)).map(spec),
    outputs: (g.output ?? []).map(spec),
    irVersion: Number(m.irVersion),
    opsetVersion: Number(m.opsetImport.find((o) => o.domain === "" || o.domain === "ai.onnx")?.version ?? NaN),
    producer: m.producerName,
    external: tensors
      .filter((t) => t.dataLocation === 1 || (t.externalData ?? []).length > 0)
      .map((t) => (t.externalData ?? []).find((e) => e.key === "location")?.value ?? null),
  };
}

/** The reader as the edge runs it: the upload in chunks, never the whole file at once. */
function streamed(bytes: Uint8Array, chunk = 4096): OnnxModelInfo {
  const reader = new OnnxSignatureReader(bytes.length);
  for (let at = 0; at < bytes.length; at += chunk) reader.push(bytes.slice(at, at + chunk));
  return reader.end();
}

function crossCheck(bytes: Uint8Array): void {
  const want = expected(bytes);
  for (const chunk of [1 << 20, 4096, 7]) {
    const got = streamed(bytes, chunk);
    expect({ ...got, externalData: undefined, external: got.externalData.map((e) => e.location) }).toEqual({ ...want, externalData: undefined });
  }
}

const models: [string, () => Uint8Array][] = [];
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "onnx-crosscheck-"));
  for (const f of await makeDemoModels(dir)) {
    const bytes = new Uint8Array(await readFile(f.path));
    models.push([`${f.name} v${f.version}`, () => bytes]);
  }
});

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("streaming signature reader vs onnx-proto's decode", () => {
  it("agree on the demo models", () => {
    expect(models.length).toBeGreaterThanOrEqual(3);
    for (const [, bytes] of models) crossCheck(bytes());
  });

  it("agree on the char model, the committed tiny-gpt graphs and the node-isolation models", async () => {
    crossCheck(encodeModel(buildCharModel(await readCorpus()).model));
    for (const file of ["models/tiny-gpt/model.onnx", "models/tiny-gpt/model_fp16.onnx"]) crossCheck(new Uint8Array(readFileSync(file)));
    crossCheck(spinModel(16));
    crossCheck(memoryBombModel(1));
  });

  it("agree on external data, wherever its file is and whether or not it is flagged", () => {
    crossCheck(externalDataModel("../victim.onnx", 64));
    crossCheck(nodeExternalDataModel("weights.bin", 8));
    crossCheck(
      encodeModel({
        graph: {
          name: "g",
          nodes: [{ opType: "Constant", name: "c", inputs: [], outputs: ["y"], attributes: [{ name: "value", t: { name: "k", elemType: OnnxType.FLOAT, dims: [2], external: { location: "k.bin", markExternal: false } } }] }],
          inputs: [],
          outputs: [{ name: "y", elemType: OnnxType.FLOAT, shape: [2] }],
        },
      }),
    );
  });

  it("agree on dynamic and unknown dimensions, many inputs, and every element type", () => {
    const types = Object.keys(ONNX_ELEM_TO_OIP).map(Number);
    const inputs = Array.from({ length: 300 }, (_, i) => ({ name: `x${i}`, elemType: types[i % types.length]!, shape: [i % 3 === 0 ? "batch" : i % 3 === 1 ? null : i + 1, 4] }));
    const desc: ModelDesc = {
      irVersion: 9,
      opsetVersion: 21,
      producerName: "crosscheck",
      graph: {
        name: "many",
        nodes: inputs.map((x, i) => ({ opType: "Identity", inputs: [x.name], outputs: [`y${i}`] })),
        inputs,
        outputs: inputs.map((x, i) => ({ ...x, name: `y${i}` })),
        // An initializer listed among the inputs too (IR < 4 style): not an input to send.
        initializers: [{ name: "x2", elemType: types[2]!, dims: [3, 4], values: new Uint8Array(12 * 8) }],
      },
    };
    crossCheck(encodeModel(desc));
  });
});
