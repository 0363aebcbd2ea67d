// Models loaded into onnxruntime-node and the conversion between the mesh's wire tensors and
// onnxruntime's tensors. Any ONNX file works: inputs and outputs are taken from the session.

import * as ort from "onnxruntime-node";
import type { OipDatatype } from "../protocol/datatypes.js";
import type { WarmModel } from "../protocol/messages.js";
import type { TensorData, WireTensor } from "../protocol/tensor.js";

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

export class InferenceError extends Error {}

interface Loaded {
  session: ort.InferenceSession;
  memoryMb: number;
  lastUsed: number;
}

export class OnnxRuntime {
  private readonly models = new Map<string, Loaded>();

  constructor(private readonly executionProviders: string[]) {}

  has(key: string): boolean {
    return this.models.has(key);
  }

  warm(): WarmModel[] {
    return [...this.models].map(([key, m]) => ({ key, memoryMb: m.memoryMb, lastUsed: m.lastUsed }));
  }

  async load(key: string, path: string, fileBytes: number): Promise<{ memoryMb: number }> {
    if (this.models.has(key)) return { memoryMb: this.models.get(key)!.memoryMb };
    const session = await ort.InferenceSession.create(path, {
      executionProviders: this.executionProviders,
      graphOptimizationLevel: "all",
    });
    // Weights dominate; onnxruntime's arena adds some on top.
    const memoryMb = Math.max(1, Math.ceil((fileBytes * 1.5) / 2 ** 20));
    this.models.set(key, { session, memoryMb, lastUsed: Date.now() });
    return { memoryMb };
  }

  /** The loaded session, for the token loop (gpu-node/generation.ts); marks the model used. */
  session(key: string): ort.InferenceSession | undefined {
    const m = this.models.get(key);
    if (m) m.lastUsed = Date.now();
    return m?.session;
  }

  async unload(key: string): Promise<void> {
    const m = this.models.get(key);
    this.models.delete(key);
    await m?.session.release();
  }

  async run(key: string, inputs: WireTensor[], outputs?: string[]): Promise<WireTensor[]> {
    const m = this.models.get(key);
    if (!m) throw new InferenceError(`model ${key} is not loaded on this node`);
    m.lastUsed = Date.now();
    const feeds: Record<string, ort.Tensor> = {};
    for (const t of inputs) {
      const type = OIP_TO_ORT[t.datatype];
      if (!type) throw new InferenceError(`input '${t.name}': datatype ${t.datatype} is not supported by onnxruntime-node`);
      feeds[t.name] = new ort.Tensor(type, t.data as never, t.shape);
    }
    const fetches = outputs ?? m.session.outputNames;
    const result = await m.session.run(feeds, fetches as string[]);
    return fetches.map((name) => {
      const r = result[name];
      if (!r) throw new InferenceError(`model produced no output '${name}'`);
      const datatype = ORT_TO_OIP[r.type];
      if (!datatype) throw new InferenceError(`output '${name}' has type ${r.type}, which the protocol cannot carry`);
      return { name, datatype, shape: [...r.dims], data: r.data as TensorData };
    });
  }

  async releaseAll(): Promise<void> {
    for (const key of [...this.models.keys()]) await this.unload(key);
  }
}
