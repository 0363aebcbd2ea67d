// protocol/codec.ts and protocol/messages.ts: the msgpack framing every hop uses, with typed
// arrays carried as themselves, and the validators that turn a decoded frame into a message.
import { Packr } from "msgpackr";
import { describe, expect, it } from "vitest";
import { CodecError, createCodec, type Codec } from "../protocol/codec.js";
import {
  MessageError,
  parseModelRef,
  parseNodeMessage,
  parseRegionInferRequest,
  parseRegionInferResponse,
  parseRouterMessage,
  type ModelRef,
  type NodeToRouter,
  type RegionInferRequest,
  type RouterToNode,
} from "../protocol/messages.js";
import type { WireTensor } from "../formats/tensor.js";
import { toWireTensor, type CarriedTensor } from "../formats/binary-tensors.js";

const model: ModelRef = {
  key: "m-1@3",
  account: "acct-1",
  name: "demo-mlp",
  version: 3,
  sha256: "a".repeat(64),
  size: 123_456,
  artifactUrl: "https://edge.example/internal/artifacts/aaaa?exp=1&sig=bb",
  signature: {
    inputs: [
      { name: "x", datatype: "FP32", shape: [-1, 4] },
      { name: "ids", datatype: "INT64", shape: [-1] },
    ],
    outputs: [{ name: "y", datatype: "FP32", shape: [-1, 2] }],
  },
};

function tensors(): WireTensor[] {
  return [
    { name: "x", datatype: "FP32", shape: [2, 4], data: new Float32Array([0.5, -1, 2.25, 3, 4, 5, 6, 1e-30]) },
    { name: "ids", datatype: "INT64", shape: [3], data: new BigInt64Array([-1n, 0n, 9_007_199_254_740_993n]) },
    { name: "mask", datatype: "BOOL", shape: [4], data: new Uint8Array([1, 0, 0, 1]) },
    { name: "h", datatype: "FP16", shape: [2], data: new Uint16Array([0x3c00, 0xfbff]) },
    { name: "s", datatype: "BYTES", shape: [3], data: ["a", "", "ünïcode ✓"] },
    { name: "u64", datatype: "UINT64", shape: [1], data: new BigUint64Array([2n ** 64n - 1n]) },
    { name: "f64", datatype: "FP64", shape: [2], data: new Float64Array([Math.PI, -0]) },
    { name: "i8", datatype: "INT8", shape: [2], data: new Int8Array([-128, 127]) },
    { name: "i16", datatype: "INT16", shape: [1], data: new Int16Array([-300]) },
    { name: "i32", datatype: "INT32", shape: [1], data: new Int32Array([-70_000]) },
    { name: "u32", datatype: "UINT32", shape: [1], data: new Uint32Array([4_000_000_000]) },
  ];
}

function request(): RegionInferRequest {
  return { requestId: "req-42", model, inputs: tensors(), outputs: ["y"], deadline: 1_750_000_030_000 };
}

/** Asserts a decoded tensor has the same typed-array class and contents as the original. */
function expectSameTensor(carried: CarriedTensor, expected: CarriedTensor): void {
  const got = toWireTensor(carried);
  const want = toWireTensor(expected);
  expect(got.name).toBe(want.name);
  expect(got.datatype).toBe(want.datatype);
  expect(got.shape).toEqual(want.shape);
  expect(Object.getPrototypeOf(got.data)).toBe(Object.getPrototypeOf(want.data));
  expect(Array.from(got.data as ArrayLike<unknown>)).toEqual(Array.from(want.data as ArrayLike<unknown>));
}

function expectMessageError(fn: () => unknown, message?: RegExp): void {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught, "expected a MessageError").toBeInstanceOf(MessageError);
  if (message) expect((caught as Error).message).toMatch(message);
}

function expectCodecError(codec: Codec, bytes: Uint8Array, message?: RegExp): void {
  let caught: unknown;
  try {
    codec.decode(bytes);
  } catch (err) {
    caught = err;
  }
  expect(caught, `expected a CodecError for ${Array.from(bytes.subarray(0, 16))}`).toBeInstanceOf(CodecError);
  expect((caught as Error).name).toBe("CodecError");
  if (message) expect((caught as Error).message).toMatch(message);
}

describe("createCodec: round trips", () => {
  it("a RegionInferRequest with typed arrays survives encode -> decode -> parseRegionInferRequest", () => {
    const a = createCodec();
    const b = createCodec();
    const req = request();
    const bytes = a.encode(req);
    expect(bytes).toBeInstanceOf(Uint8Array);
    const parsed = parseRegionInferRequest(b.decode(bytes));
    expect(parsed.requestId).toBe(req.requestId);
    expect(parsed.model).toEqual(req.model);
    expect(parsed.outputs).toEqual(["y"]);
    expect(parsed.deadline).toBe(req.deadline);
    expect(parsed.inputs).toHaveLength(req.inputs.length);
    req.inputs.forEach((t, i) => expectSameTensor(parsed.inputs[i]!, t));
    // -0 survives as -0 inside a Float64Array.
    expect(Object.is((toWireTensor(parsed.inputs[6]!).data as Float64Array)[1], -0)).toBe(true);
  });

  it("without outputs the field stays absent; null outputs read as absent", () => {
    const codec = createCodec();
    const { outputs: _drop, ...rest } = request();
    expect(parseRegionInferRequest(codec.decode(codec.encode(rest)))).not.toHaveProperty("outputs");
    expect(parseRegionInferRequest(codec.decode(codec.encode({ ...rest, outputs: null })))).not.toHaveProperty("outputs");
  });

  it("a typed array that is a view into a larger buffer carries only its own elements", () => {
    const codec = createCodec();
    const whole = new Float32Array([1, 2, 3, 4, 5]);
    const view = whole.subarray(1, 3);
    const out = codec.decode(codec.encode({ v: view })) as { v: Float32Array };
    expect(out.v).toBeInstanceOf(Float32Array);
    expect(Array.from(out.v)).toEqual([2, 3]);
  });

  it("decoded typed arrays do not alias the frame they came from", () => {
    const codec = createCodec();
    const bytes = codec.encode({ d: new Uint8Array([9, 9, 9]), f: new Float32Array([1]) });
    const copy = bytes.slice();
    const out = codec.decode(copy) as { d: Uint8Array; f: Float32Array };
    copy.fill(0);
    expect(Array.from(out.d)).toEqual([9, 9, 9]);
    expect(Array.from(out.f)).toEqual([1]);
  });

  it("decodes a frame that is a view into a larger buffer", () => {
    const codec = createCodec();
    const frame = codec.encode({ t: "unload", key: "k" });
    const big = new Uint8Array(frame.length + 20).fill(0xc1);
    big.set(frame, 10);
    expect(parseRouterMessage(codec.decode(big.subarray(10, 10 + frame.length)))).toEqual({ t: "unload", key: "k" });
  });
});

describe("createCodec: invalid frames", () => {
  const codec = createCodec();

  it("an empty frame", () => {
    expectCodecError(codec, new Uint8Array(0), /^empty frame$/);
  });

  it("truncated msgpack", () => {
    const good = codec.encode({ t: "welcome", region: "eu-west" });
    expectCodecError(codec, good.subarray(0, good.length - 1), /invalid msgpack frame/);
    expectCodecError(codec, new Uint8Array([0x92, 0x01]), /invalid msgpack frame/); // array of 2, one element
    expectCodecError(codec, new Uint8Array([0x81, 0xa1]), /invalid msgpack frame/); // map, key cut short
    expectCodecError(codec, new Uint8Array([0xd9]), /invalid msgpack frame/); // str8 without its length
    expectCodecError(codec, new Uint8Array([0xcb, 0x40]), /invalid msgpack frame/); // float64 cut short
  });

  it("trailing garbage after one whole value", () => {
    const good = codec.encode({ t: "welcome", region: "eu-west" });
    expectCodecError(codec, new Uint8Array([...good, 0x00]), /invalid msgpack frame/);
    expectCodecError(codec, new Uint8Array([...good, ...good]), /invalid msgpack frame/);
    expectCodecError(codec, new Uint8Array([0x80, 0x80]), /invalid msgpack frame/);
  });

  it("a typed-array extension with an unknown element code", () => {
    expectCodecError(codec, new Uint8Array([0xd4, 0x74, 0x63]), /invalid msgpack frame/);
  });

  it("the codec keeps working after a bad frame", () => {
    expectCodecError(codec, new Uint8Array([0x92, 0x01]));
    expect(codec.decode(codec.encode({ t: "unload", key: "k" }))).toEqual({ t: "unload", key: "k" });
  });

  it("the error message stays short", () => {
    const huge = codec.encode({ s: "x".repeat(10_000) });
    let msg = "";
    try {
      codec.decode(new Uint8Array([...huge, 0]));
    } catch (err) {
      msg = (err as Error).message;
    }
    expect(msg.length).toBeLessThan(200);
  });
});

describe("createCodec: concurrent codecs", () => {
  it("two codecs used in both directions, interleaved, do not corrupt frames", () => {
    const router = createCodec();
    const node = createCodec();
    const toNode: { bytes: Uint8Array; msg: RouterToNode }[] = [];
    const toRouter: { bytes: Uint8Array; msg: NodeToRouter }[] = [];
    // Encode everything first and decode afterwards, so any frame that shares (and lets a later
    // encode overwrite) an internal buffer would show up. Sizes vary to force buffer growth.
    for (let i = 0; i < 400; i++) {
      const n = (i * 37) % 3000;
      const inMsg: RouterToNode = {
        t: "infer",
        id: `r${i}`,
        key: `m@${i % 7}`,
        sha256: "e".repeat(64),
        deadline: 1_700_000_000_000 + i,
        inputs: [{ name: "x", datatype: "FP32", shape: [n], data: Float32Array.from({ length: n }, (_, k) => i + k / 8) }],
        ...(i % 2 ? { outputs: ["y"] } : {}),
      };
      toNode.push({ bytes: router.encode(inMsg), msg: inMsg });
      const outMsg: NodeToRouter =
        i % 3 === 0
          ? { t: "error", id: `r${i}`, code: "inference_failed", message: `boom ${i}` }
          : {
              t: "result",
              id: `r${i}`,
              inferMs: i / 4,
              outputs: [
                { name: "y", datatype: "INT64", shape: [n], data: BigInt64Array.from({ length: n }, (_, k) => BigInt(i * 10_000 + k)) },
                { name: "s", datatype: "BYTES", shape: [2], data: [`a${i}`, "b".repeat(i)] },
              ],
            };
      toRouter.push({ bytes: node.encode(outMsg), msg: outMsg });
      // The same codecs also decode what the other side sent, between their own encodes.
      if (i % 5 === 0) {
        expect(parseRouterMessage(node.decode(toNode[i]!.bytes)).t).toBe("infer");
        expect(parseNodeMessage(router.decode(toRouter[i]!.bytes)).t).toBe(outMsg.t);
      }
    }
    for (const { bytes, msg } of toNode) {
      const got = parseRouterMessage(node.decode(bytes));
      expect(got).toMatchObject({ t: msg.t, id: (msg as { id: string }).id });
      if (got.t !== "infer" || msg.t !== "infer") throw new Error("expected infer");
      expectSameTensor(got.inputs[0]!, msg.inputs[0]!);
      expect(got.outputs).toEqual(msg.outputs);
    }
    for (const { bytes, msg } of toRouter) {
      const got = parseNodeMessage(router.decode(bytes));
      if (msg.t === "result") {
        if (got.t !== "result") throw new Error("expected result");
        expect(got.id).toBe(msg.id);
        expect(got.inferMs).toBe(msg.inferMs);
        msg.outputs.forEach((t, k) => expectSameTensor(got.outputs[k]!, t));
      } else {
        expect(got).toEqual(msg);
      }
    }
  });

  it("frames from different codecs decode the same and are byte-identical", () => {
    const a = createCodec();
    const b = createCodec();
    const req = request();
    const fa = a.encode(req);
    const fb = b.encode(req);
    expect(Array.from(fa)).toEqual(Array.from(fb));
    expect(b.decode(fa)).toEqual(a.decode(fb));
  });
});

describe("createCodec(\"json\") (the benchmark's framing)", () => {
  it("round-trips a RegionInferRequest with typed arrays", () => {
    const codec = createCodec("json");
    const req = request();
    // JSON has no -0 (nor NaN/Infinity): keep to values it can spell.
    req.inputs = (req.inputs as WireTensor[]).map((t) => (t.data instanceof Float64Array ? { ...t, data: new Float64Array([Math.PI, 0]) } : t));
    const parsed = parseRegionInferRequest(codec.decode(codec.encode(req)));
    expect(parsed.model).toEqual(req.model);
    req.inputs.forEach((t, i) => expectSameTensor(parsed.inputs[i]!, t));
  });

  it("refuses empty, malformed and non-UTF-8 frames with a CodecError", () => {
    const codec = createCodec("json");
    expectCodecError(codec, new Uint8Array(0), /^empty frame$/);
    expectCodecError(codec, new TextEncoder().encode('{"t":'), /invalid JSON frame/);
    expectCodecError(codec, new Uint8Array([0x22, 0xff, 0x22]), /invalid JSON frame/);
    expectCodecError(codec, new TextEncoder().encode('{"$ta":"Evil","d":[]}'), /bad typed array/);
  });
});

describe("parseNodeMessage", () => {
  const codec = createCodec();
  const valid: NodeToRouter[] = [
    {
      t: "hello",
      nodeId: "node-1",
      accelerator: { kind: "gpu", name: "H100", memoryMb: 81_920 },
      executionProvider: "cuda",
      memoryBudgetMb: 60_000,
      slots: 4,
      maxModels: 1,
      warm: [{ key: "m@1", memoryMb: 12, lastUsed: 1_750_000_000_000 }],
    },
    {
      t: "hello",
      nodeId: "n2",
      accelerator: { kind: "cpu", name: "x86", memoryMb: 0 },
      executionProvider: "cpu",
      memoryBudgetMb: 1,
      slots: 1,
      maxModels: 0,
      warm: [],
    },
    { t: "heartbeat", inflight: 3, queued: 0, utilisation: 0.25, warm: [] },
    { t: "draining" },
    { t: "load_progress", key: "m@1", bytes: 100, total: 1000 },
    { t: "loaded", key: "m@1", loadMs: 12.5, downloadMs: 0, cached: true, memoryMb: 40 },
    { t: "load_failed", key: "m@1", message: "sha256 mismatch" },
    { t: "result", id: "r1", outputs: [{ name: "y", datatype: "FP32", shape: [1], data: new Float32Array([1]) }], inferMs: 0.4 },
    { t: "result", id: "r2", outputs: [], inferMs: 0 },
    { t: "error", id: "r1", code: "inference_failed", message: "bad input" },
    // Appended (the tests below take the frames above by position): a node on the WebGPU provider.
    {
      t: "hello",
      nodeId: "node-webgpu",
      accelerator: { kind: "gpu", name: "NVIDIA H200", memoryMb: 143_771 },
      executionProvider: "webgpu",
      memoryBudgetMb: 143_771,
      slots: 8,
      maxModels: 0,
      warm: [],
    },
  ];

  it("accepts every valid frame type, through the codec", () => {
    for (const msg of valid) expect(parseNodeMessage(codec.decode(codec.encode(msg)))).toEqual(msg);
  });

  it("drops fields the protocol does not name", () => {
    expect(parseNodeMessage({ t: "load_failed", key: "k", message: "m", extra: 1 })).toEqual({ t: "load_failed", key: "k", message: "m" });
  });

  it("refuses a frame that is not a map", () => {
    for (const v of [null, undefined, 1, "hello", [], [{ t: "heartbeat" }], new Uint8Array([1]), true]) {
      expectMessageError(() => parseNodeMessage(v), /frame must be a map/);
    }
  });

  it("refuses an unknown or missing t", () => {
    expectMessageError(() => parseNodeMessage({ t: "welcome", region: "x" }), /unknown frame type "welcome"/);
    expectMessageError(() => parseNodeMessage({ t: "HELLO" }), /unknown frame type/);
    expectMessageError(() => parseNodeMessage({}), /unknown frame type/);
    expectMessageError(() => parseNodeMessage({ t: 7 }), /unknown frame type 7/);
    expectMessageError(() => parseNodeMessage({ t: "x".repeat(1000) }), /unknown frame type/);
  });

  it("refuses a t that JSON cannot print (a 64-bit integer decodes as a BigInt)", () => {
    const frame = new Packr({ useRecords: false }).pack({ t: 2n ** 63n + 5n });
    expectMessageError(() => parseNodeMessage(codec.decode(frame)), /unknown frame type/);
    expectMessageError(() => parseRouterMessage({ t: { nested: 1n } }), /unknown frame type/);
  });

  it("refuses missing fields", () => {
    for (const msg of valid) {
      for (const k of Object.keys(msg)) {
        if (k === "t") continue;
        const broken: Record<string, unknown> = { ...msg };
        delete broken[k];
        expectMessageError(() => parseNodeMessage(broken));
      }
    }
  });

  it("refuses wrong types", () => {
    const [hello, , heartbeat, , progress, loaded, , result, , error] = valid as [
      Extract<NodeToRouter, { t: "hello" }>,
      unknown,
      Extract<NodeToRouter, { t: "heartbeat" }>,
      unknown,
      Extract<NodeToRouter, { t: "load_progress" }>,
      Extract<NodeToRouter, { t: "loaded" }>,
      unknown,
      Extract<NodeToRouter, { t: "result" }>,
      unknown,
      Extract<NodeToRouter, { t: "error" }>,
    ];
    expectMessageError(() => parseNodeMessage({ ...hello, nodeId: 5 }), /'nodeId' must be a string/);
    expectMessageError(() => parseNodeMessage({ ...hello, nodeId: "n".repeat(129) }), /'nodeId' must be a string/);
    expectMessageError(() => parseNodeMessage({ ...hello, accelerator: "gpu" }), /accelerator must be a map/);
    expectMessageError(() => parseNodeMessage({ ...hello, accelerator: { ...hello.accelerator, kind: "tpu" } }), /cpu or gpu/);
    expectMessageError(() => parseNodeMessage({ ...hello, accelerator: { ...hello.accelerator, memoryMb: "80G" } }), /'memoryMb'/);
    expectMessageError(() => parseNodeMessage({ ...hello, memoryBudgetMb: Infinity }), /'memoryBudgetMb' must be a number/);
    expectMessageError(() => parseNodeMessage({ ...hello, warm: {} }), /'warm' must be an array/);
    expectMessageError(() => parseNodeMessage({ ...hello, warm: ["m@1"] }), /warm model must be a map/);
    expectMessageError(() => parseNodeMessage({ ...hello, warm: [{ key: "k", memoryMb: 1, lastUsed: "now" }] }), /'lastUsed'/);
    expectMessageError(() => parseNodeMessage({ ...heartbeat, inflight: "3" }), /'inflight' must be a number/);
    expectMessageError(() => parseNodeMessage({ ...heartbeat, inflight: NaN }), /'inflight' must be a number/);
    expectMessageError(() => parseNodeMessage({ ...heartbeat, inflight: 3n }), /'inflight' must be a number/);
    expectMessageError(() => parseNodeMessage({ ...heartbeat, utilisation: "25%" }), /'utilisation' must be a number/);
    expectMessageError(() => parseNodeMessage({ ...hello, slots: null }), /'slots' must be a number/);
    expectMessageError(() => parseNodeMessage({ ...progress, key: ["k"] }), /'key' must be a string/);
    expectMessageError(() => parseNodeMessage({ ...loaded, cached: "yes" }), /'cached' must be a boolean/);
    expectMessageError(() => parseNodeMessage({ ...loaded, cached: 1 }), /'cached' must be a boolean/);
    expectMessageError(() => parseNodeMessage({ ...result, outputs: "y" }), /'outputs' must be an array/);
    expectMessageError(() => parseNodeMessage({ ...result, outputs: [null] }), /tensor must be a map/);
    expectMessageError(() => parseNodeMessage({ ...error, id: 1 }), /'id' must be a string/);
    expectMessageError(() => parseNodeMessage({ ...error, message: null }), /'message' must be a string/);
  });

  it("refuses tensors with a bad datatype or shape", () => {
    const t = { name: "y", datatype: "FP32", shape: [1], data: new Float32Array([1]) };
    const frame = (tensor: unknown) => ({ t: "result", id: "r", inferMs: 1, outputs: [tensor] });
    expectMessageError(() => parseNodeMessage(frame({ ...t, datatype: "FLOAT" })), /not an OIP datatype/);
    expectMessageError(() => parseNodeMessage(frame({ ...t, name: 3 })), /'name' must be a string/);
    for (const shape of [[1.5], [-2], ["1"], "1", new Array(17).fill(1)]) {
      expectMessageError(() => parseNodeMessage(frame({ ...t, shape })), /'shape' must be an array of integers/);
    }
  });

  it("refuses data that is neither a typed array nor an array of strings", () => {
    const frame = (data: unknown) => ({
      t: "result",
      id: "r",
      inferMs: 1,
      outputs: [{ name: "y", datatype: "FP32", shape: [2], data }],
    });
    for (const data of [[1, 2], ["a", 2], [null], { 0: 1, 1: 2 }, "ab", 5, null, undefined, new DataView(new ArrayBuffer(8)), new ArrayBuffer(8)]) {
      expectMessageError(() => parseNodeMessage(frame(data)), /'data' must be a typed array or an array of strings/);
    }
    // And the same after a trip through msgpack (ArrayBuffer and DataView have their own codes).
    for (const data of [[1, 2], new DataView(new ArrayBuffer(8)), new ArrayBuffer(8)]) {
      expectMessageError(() => parseNodeMessage(codec.decode(codec.encode(frame(data)))), /'data' must be/);
    }
    // Both accepted forms pass.
    expect(parseNodeMessage(frame(["a", "b"])).t).toBe("result");
    expect(parseNodeMessage(frame(new Float32Array(2))).t).toBe("result");
  });

  it("refuses an unknown error code", () => {
    expectMessageError(() => parseNodeMessage({ t: "error", id: "r", code: "kaboom", message: "x" }), /not a known error code/);
    expectMessageError(() => parseNodeMessage({ t: "error", id: "r", code: "toString", message: "x" }), /not a known error code/);
    expectMessageError(() => parseNodeMessage({ t: "error", id: "r", code: 500, message: "x" }), /not a known error code/);
  });
});

describe("parseRouterMessage", () => {
  const codec = createCodec();
  const valid: RouterToNode[] = [
    { t: "welcome", region: "eu-west" },
    { t: "load", key: "m@1", url: "https://edge.example/a?exp=1&sig=2", sha256: "f".repeat(64), size: 1024, signature: model.signature },
    { t: "unload", key: "m@1" },
    { t: "cancel", id: "r1" },
    { t: "infer", id: "r1", key: "m@1", sha256: "f".repeat(64), inputs: tensors(), deadline: 1_700_000_000_000 },
    { t: "infer", id: "r2", key: "m@1", sha256: "f".repeat(64), inputs: tensors().slice(0, 1), outputs: ["y", "z"], deadline: 1_700_000_000_000, requestId: "req_1" },
  ];

  it("accepts every valid frame type, through the codec", () => {
    for (const msg of valid) {
      const got = parseRouterMessage(codec.decode(codec.encode(msg)));
      if (msg.t === "infer") {
        if (got.t !== "infer") throw new Error("expected infer");
        expect({ ...got, inputs: [] }).toEqual({ ...msg, inputs: [] });
        msg.inputs.forEach((t, i) => expectSameTensor(got.inputs[i]!, t));
      } else {
        expect(got).toEqual(msg);
      }
    }
  });

  it("refuses a frame that is not a map, and unknown t", () => {
    for (const v of [null, 0, "welcome", [{ t: "welcome" }], new Float32Array(1)]) {
      expectMessageError(() => parseRouterMessage(v), /frame must be a map/);
    }
    expectMessageError(() => parseRouterMessage({ t: "hello" }), /unknown frame type "hello"/);
    expectMessageError(() => parseRouterMessage({ region: "x" }), /unknown frame type/);
  });

  it("refuses missing fields", () => {
    for (const msg of valid) {
      for (const k of Object.keys(msg)) {
        if (k === "t" || k === "outputs" || k === "requestId") continue; // optional fields
        const broken: Record<string, unknown> = { ...msg };
        delete broken[k];
        expectMessageError(() => parseRouterMessage(broken));
      }
    }
  });

  it("refuses wrong types", () => {
    expectMessageError(() => parseRouterMessage({ t: "welcome", region: 1 }), /'region' must be a string/);
    const load = { t: "load", key: "k", url: "u", sha256: "f", size: 1, signature: model.signature };
    expect(parseRouterMessage(load).t).toBe("load");
    expectMessageError(() => parseRouterMessage({ ...load, sha256: "f".repeat(65) }), /'sha256'/);
    expectMessageError(() => parseRouterMessage({ ...load, size: "1" }), /'size' must be a number/);
    expectMessageError(() => parseRouterMessage({ ...load, signature: null }), /signature must be a map/);
    expectMessageError(() => parseRouterMessage({ ...load, signature: { inputs: [{ name: "x" }], outputs: [] } }), /not an OIP datatype/);
    expectMessageError(() => parseRouterMessage({ t: "cancel", id: 7 }), /'id' must be a string/);
    expectMessageError(() => parseRouterMessage({ t: "unload", key: null }), /'key' must be a string/);
    expectMessageError(() => parseRouterMessage({ t: "infer", id: "r", key: "k", inputs: {} }), /'inputs' must be an array/);
    expectMessageError(() => parseRouterMessage({ t: "infer", id: "r", key: "k", inputs: [], outputs: "y" }), /'outputs' must be an array/);
    expectMessageError(() => parseRouterMessage({ t: "infer", id: "r", key: "k", inputs: [], outputs: ["y", 2] }), /'outputs' must be strings/);
    expectMessageError(
      () => parseRouterMessage({ t: "infer", id: "r", key: "k", inputs: [{ name: "x", datatype: "FP32", shape: [1], data: [0.5] }] }),
      /'data' must be a typed array or an array of strings/,
    );
  });
});

describe("parseRegionInferRequest / parseModelRef / parseRegionInferResponse", () => {
  it("refuses malformed requests", () => {
    const req = request() as unknown as Record<string, unknown>;
    expectMessageError(() => parseRegionInferRequest([]), /request must be a map/);
    expectMessageError(() => parseRegionInferRequest({ ...req, requestId: "r".repeat(129) }), /'requestId'/);
    expectMessageError(() => parseRegionInferRequest({ ...req, deadline: "soon" }), /'deadline' must be a number/);
    expectMessageError(() => parseRegionInferRequest({ ...req, model: null }), /model must be a map/);
    expectMessageError(() => parseRegionInferRequest({ ...req, inputs: [{ ...tensors()[0], data: [1] }] }), /'data' must be/);
  });

  it("refuses malformed model refs", () => {
    expectMessageError(() => parseModelRef({ ...model, signature: [] }), /signature must be a map/);
    expectMessageError(() => parseModelRef({ ...model, version: "3" }), /'version' must be a number/);
    expectMessageError(() => parseModelRef({ ...model, sha256: "a".repeat(65) }), /'sha256'/);
    expectMessageError(
      () => parseModelRef({ ...model, signature: { inputs: [{ name: "x", datatype: "FP8", shape: [1] }], outputs: [] } }),
      /not an OIP datatype/,
    );
    expectMessageError(() => parseModelRef({ ...model, signature: { inputs: [], outputs: "y" } }), /'outputs' must be an array/);
  });

  it("round-trips both kinds of response", () => {
    const codec = createCodec();
    const ok = {
      ok: true as const,
      outputs: [{ name: "y", datatype: "FP32" as const, shape: [1, 2], data: new Float32Array([1, 2]) }],
      node: "node-1",
      timing: { queueMs: 1, loadMs: 0, inferMs: 2.5, regionMs: 4 },
    };
    const got = parseRegionInferResponse(codec.decode(codec.encode(ok)));
    if (!got.ok) throw new Error("expected ok");
    expect(got.node).toBe("node-1");
    expect(got.timing).toEqual(ok.timing);
    expectSameTensor(got.outputs[0]!, ok.outputs[0]!);
    const bad = { ok: false as const, code: "no_capacity" as const, message: "busy" };
    expect(parseRegionInferResponse(codec.decode(codec.encode(bad)))).toEqual(bad);
    expectMessageError(() => parseRegionInferResponse({ ok: false, code: "nope", message: "x" }), /not a known error code/);
    expectMessageError(() => parseRegionInferResponse({ ...ok, timing: { ...ok.timing, regionMs: null } }), /'regionMs'/);
  });
});
