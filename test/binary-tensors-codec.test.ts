// formats/binary-tensors.ts and the edge's body reading, as pure functions: Triton's binary
// tensor data extension (the spec's own examples byte for byte, every datatype, the refusals),
// and gzip/deflate request bodies bounded after decompression.
import { deflateSync, gzipSync } from "node:zlib";
import { describe, expect, it } from "vitest";
import {
  BinaryFramingError,
  BinaryInputs,
  binaryOutputChoice,
  decodeInferResponse,
  encodeInferRequest,
  encodeInferResponse,
  packedSizeError,
  packTensor,
  splitBinaryBody,
  tensorBytes,
  unpackTensor,
} from "../formats/binary-tensors.js";
import { createCodec } from "../protocol/codec.js";
import { parseRegionInferRequest, parseRouterMessage, MessageError } from "../protocol/messages.js";
import type { ModelSignature, OipDatatype } from "../formats/datatypes.js";
import { MeshError } from "../protocol/errors.js";
import { parseInferRequest, TensorError, toHalfBits, type TensorData, type WireTensor } from "../formats/tensor.js";
import { acceptsGzip, clientAcceptEncoding, readBody } from "../edge/content-encoding.js";

const enc = new TextEncoder();

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

/** Parses a binary request body as the edge does: split at the header length, then validate. */
function parseBinary(body: Uint8Array, headerLength: number | string, signature: ModelSignature) {
  const { json, binary } = splitBinaryBody(body, String(headerLength));
  return parseInferRequest(JSON.parse(json), signature, new BinaryInputs(binary));
}

function refusal(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(TensorError);
    return (err as Error).message;
  }
  throw new Error("accepted what it should refuse");
}

// The extension's example, as extension_binary_data.md prints it (the JSON exactly as shown).
const SPEC_REQUEST_JSON = `{
  "model_name" : "mymodel",
  "inputs" : [
    {
      "name" : "input0",
      "shape" : [ 2, 2 ],
      "datatype" : "UINT32",
      "parameters" : {
        "binary_data_size" : 16
      }
    },
    {
      "name" : "input1",
      "shape" : [ 3 ],
      "datatype" : "BOOL",
      "parameters" : {
        "binary_data_size" : 3
      }
    }
  ],
  "outputs" : [
    {
      "name" : "output0",
      "parameters" : {
        "binary_data" : true
      }
    }
  ]
}`;
const SPEC_RESPONSE_JSON = `{
  "outputs" : [
    {
      "name" : "output0",
      "shape" : [ 3, 2 ],
      "datatype"  : "FP32",
      "parameters" : {
        "binary_data_size" : 24
      }
    }
  ]
}`;
const SPEC_SIGNATURE: ModelSignature = {
  inputs: [
    { name: "input0", datatype: "UINT32", shape: [2, 2] },
    { name: "input1", datatype: "BOOL", shape: [3] },
  ],
  outputs: [{ name: "output0", datatype: "FP32", shape: [3, 2] }],
};

describe("the spec's examples, byte for byte", () => {
  const input0 = new Uint8Array([1, 0, 0, 0, 2, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0x80]);
  const input1 = new Uint8Array([1, 0, 1]);
  const request = concat(enc.encode(SPEC_REQUEST_JSON), input0, input1);

  it("reads the example request: 19 bytes of binary data after the JSON, input0 then input1", () => {
    expect(request.byteLength - enc.encode(SPEC_REQUEST_JSON).byteLength).toBe(19);
    const parsed = parseBinary(request, enc.encode(SPEC_REQUEST_JSON).byteLength, SPEC_SIGNATURE);
    expect(parsed.inputs.map((t) => [t.name, t.datatype, t.shape])).toEqual([
      ["input0", "UINT32", [2, 2]],
      ["input1", "BOOL", [3]],
    ]);
    expect(Array.from(parsed.inputs[0]!.data as Uint32Array)).toEqual([1, 2, 0xffffffff, 0x80000000]);
    expect(Array.from(parsed.inputs[1]!.data as Uint8Array)).toEqual([1, 0, 1]);
    expect(parsed.outputs).toEqual(["output0"]);
    expect(binaryOutputChoice(JSON.parse(SPEC_REQUEST_JSON))("output0")).toBe(true);
  });

  it("re-encodes the example request to the same 19 data bytes", () => {
    const { body, headerLength } = encodeInferRequest({ model_name: "mymodel" }, [
      { name: "input0", datatype: "UINT32", shape: [2, 2], data: new Uint32Array([1, 2, 0xffffffff, 0x80000000]), binary: true },
      { name: "input1", datatype: "BOOL", shape: [3], data: new Uint8Array([1, 0, 1]), binary: true },
    ]);
    expect(Buffer.from(body.subarray(headerLength))).toEqual(Buffer.from(concat(input0, input1)));
    expect(JSON.parse(new TextDecoder().decode(body.subarray(0, headerLength))).inputs).toEqual(JSON.parse(SPEC_REQUEST_JSON).inputs);
  });

  it("answers the example's [3,2] FP32 output as 24 bytes after the JSON header the spec shows", () => {
    const values = new Float32Array([0.5, -1, 2.25, 1e-7, -0, 3.4e38]);
    const out = encodeInferResponse({}, [{ name: "output0", datatype: "FP32", shape: [3, 2], data: values }], binaryOutputChoice(JSON.parse(SPEC_REQUEST_JSON)));
    expect(out.headerLength).toBeDefined();
    const body = out.body as Uint8Array;
    expect(body.byteLength).toBe(out.headerLength! + 24);
    expect(JSON.parse(new TextDecoder().decode(body.subarray(0, out.headerLength)))).toEqual(JSON.parse(SPEC_RESPONSE_JSON));
    expect(Buffer.from(body.subarray(out.headerLength!))).toEqual(Buffer.from(values.buffer));
  });

  it("decodes the spec's response text (its spacing) followed by 24 bytes", () => {
    const values = new Float32Array([1, 2, 3, 4, 5, 6]);
    const header = enc.encode(SPEC_RESPONSE_JSON);
    const { outputs } = decodeInferResponse(concat(header, new Uint8Array(values.buffer)), String(header.byteLength));
    expect(outputs[0]!.shape).toEqual([3, 2]);
    expect(outputs[0]!.data).toEqual(values);
  });
});

/** One binary input of each datatype: its typed data, and the bytes the extension says it is. */
const CASES: { datatype: OipDatatype; data: TensorData; bytes: number[] }[] = [
  { datatype: "BOOL", data: new Uint8Array([1, 0, 1]), bytes: [1, 0, 1] },
  { datatype: "UINT8", data: new Uint8Array([0, 7, 255]), bytes: [0, 7, 255] },
  { datatype: "INT8", data: new Int8Array([-128, 0, 127]), bytes: [0x80, 0, 0x7f] },
  { datatype: "UINT16", data: new Uint16Array([1, 0x1234, 0xffff]), bytes: [1, 0, 0x34, 0x12, 0xff, 0xff] },
  { datatype: "INT16", data: new Int16Array([-1, 2, -32768]), bytes: [0xff, 0xff, 2, 0, 0, 0x80] },
  { datatype: "UINT32", data: new Uint32Array([1, 0xdeadbeef, 0]), bytes: [1, 0, 0, 0, 0xef, 0xbe, 0xad, 0xde, 0, 0, 0, 0] },
  { datatype: "INT32", data: new Int32Array([-2, 0, 5]), bytes: [0xfe, 0xff, 0xff, 0xff, 0, 0, 0, 0, 5, 0, 0, 0] },
  {
    datatype: "UINT64",
    data: new BigUint64Array([2n ** 64n - 1n, 1n, 0n]),
    bytes: [...Array(8).fill(0xff), 1, 0, 0, 0, 0, 0, 0, 0, ...Array(8).fill(0)],
  },
  {
    datatype: "INT64",
    data: new BigInt64Array([-(2n ** 63n), -1n, 2n ** 53n + 1n]),
    bytes: [0, 0, 0, 0, 0, 0, 0, 0x80, ...Array(8).fill(0xff), 1, 0, 0, 0, 0, 0, 0x20, 0],
  },
  { datatype: "FP16", data: new Uint16Array([toHalfBits(1.5), 0x7e01, 0x8000]), bytes: [0x00, 0x3e, 0x01, 0x7e, 0x00, 0x80] },
  { datatype: "BF16", data: new Uint16Array([0x3fc0, 0xff81, 0x0001]), bytes: [0xc0, 0x3f, 0x81, 0xff, 0x01, 0x00] },
  { datatype: "FP32", data: new Float32Array([1, -0, Infinity]), bytes: [0, 0, 0x80, 0x3f, 0, 0, 0, 0x80, 0, 0, 0x80, 0x7f] },
  {
    datatype: "FP64",
    data: new Float64Array([1, NaN, -2]),
    bytes: [0, 0, 0, 0, 0, 0, 0xf0, 0x3f, 0, 0, 0, 0, 0, 0, 0xf8, 0x7f, 0, 0, 0, 0, 0, 0, 0, 0xc0],
  },
  { datatype: "BYTES", data: ["a", "", "héllo"], bytes: [1, 0, 0, 0, 0x61, 0, 0, 0, 0, 6, 0, 0, 0, 0x68, 0xc3, 0xa9, 0x6c, 0x6c, 0x6f] },
];

describe("every datatype as raw bytes", () => {
  for (const c of CASES) {
    it(`${c.datatype}: the bytes in, the same typed data out (raw bits), and back to the same bytes`, () => {
      const sig: ModelSignature = { inputs: [{ name: "x", datatype: c.datatype, shape: [-1] }], outputs: [] };
      for (const pad of [0, 1, 3]) {
        // pad shifts the data to unaligned offsets: the reader must copy, not view, then.
        const header = enc.encode(JSON.stringify({ inputs: [{ name: "x", datatype: c.datatype, shape: [3], parameters: { binary_data_size: c.bytes.length } }] }) + " ".repeat(pad));
        const parsed = parseBinary(concat(header, new Uint8Array(c.bytes)), header.byteLength, sig);
        expect(parsed.inputs[0]!.data, `pad ${pad}`).toEqual(c.data);
      }
      expect(Array.from(tensorBytes({ datatype: c.datatype, data: c.data }))).toEqual(c.bytes);
    });
  }

  it("mixes JSON and binary inputs: only the binary ones take bytes, in the JSON's order", () => {
    const sig: ModelSignature = {
      inputs: [
        { name: "a", datatype: "FP32", shape: [2] },
        { name: "b", datatype: "INT32", shape: [2] },
        { name: "c", datatype: "BYTES", shape: [1] },
      ],
      outputs: [],
    };
    const { body, headerLength } = encodeInferRequest({}, [
      { name: "c", datatype: "BYTES", shape: [1], data: ["zz"], binary: true },
      { name: "a", datatype: "FP32", shape: [2], data: [1.5, 2] },
      { name: "b", datatype: "INT32", shape: [2], data: new Int32Array([7, -7]), binary: true },
    ]);
    const parsed = parseBinary(body, headerLength, sig);
    expect(parsed.inputs.map((t) => [t.name, Array.from(t.data as ArrayLike<unknown>)])).toEqual([
      ["c", ["zz"]],
      ["a", [1.5, 2]],
      ["b", [7, -7]],
    ]);
  });

  it("takes an empty tensor as zero bytes", () => {
    const sig: ModelSignature = { inputs: [{ name: "x", datatype: "FP32", shape: [-1, 4] }], outputs: [] };
    const { body, headerLength } = encodeInferRequest({}, [{ name: "x", datatype: "FP32", shape: [0, 4], data: new Float32Array(0), binary: true }]);
    expect(parseBinary(body, headerLength, sig).inputs[0]!.data).toEqual(new Float32Array(0));
  });
});

describe("packed tensors past the edge (edge -> region -> node and back)", () => {
  const model = {
    key: "m@1", account: "acct", name: "m", version: 1, sha256: "a".repeat(64), size: 1, artifactUrl: "https://x/y",
    signature: { inputs: [], outputs: [] },
  };

  for (const c of CASES) {
    it(`${c.datatype}: packs to the extension's bytes and unpacks to the same typed data`, () => {
      const packed = packTensor({ name: "x", datatype: c.datatype, shape: [3], data: c.data });
      expect(Array.from(packed.bytes)).toEqual(c.bytes);
      expect(packedSizeError(packed)).toBeNull();
      expect(unpackTensor(packed).data).toEqual(c.data);
    });
  }

  it("a router hands the node the very bytes the edge packed, forwarded unread", () => {
    const edge = createCodec();
    const router = createCodec();
    const a = new Float32Array(64 * 1024).map((_, i) => Math.fround(Math.sin(i)));
    const body = edge.encode({ requestId: "r", model, inputs: [packTensor({ name: "a", datatype: "FP32", shape: [64, 1024], data: a })], deadline: 1 });
    const req = parseRegionInferRequest(router.decode(body));
    const t = req.inputs[0]!;
    if (!("bytes" in t)) throw new Error("expected a packed tensor");
    // The router holds the bytes as they came (no typed array, no per-element work).
    expect(Buffer.from(t.bytes).equals(Buffer.from(a.buffer))).toBe(true);
    const frame = router.encode({ t: "infer", id: "1", key: "m@1", sha256: "a".repeat(64), inputs: req.inputs, deadline: 1 });
    const msg = parseRouterMessage(createCodec().decode(frame));
    if (msg.t !== "infer") throw new Error("expected infer");
    const got = unpackTensor(msg.inputs[0] as Parameters<typeof unpackTensor>[0]);
    expect(got.data).toBeInstanceOf(Float32Array);
    expect(Buffer.from((got.data as Float32Array).buffer, (got.data as Float32Array).byteOffset, a.byteLength).equals(Buffer.from(a.buffer))).toBe(true);
  });

  it("a router refuses packed bytes that do not fit the shape and datatype, without reading values", () => {
    const bad = (t: object) => () => parseRegionInferRequest({ requestId: "r", model, inputs: [t], deadline: 1 });
    expect(bad({ name: "a", datatype: "FP32", shape: [2, 2], bytes: new Uint8Array(12) })).toThrow(MessageError);
    expect(bad({ name: "a", datatype: "FP32", shape: [2, 2], bytes: new Uint8Array(12) })).toThrow(/needs 16 bytes, it has 12/);
    expect(bad({ name: "a", datatype: "FP32", shape: [-1], bytes: new Uint8Array(4) })).toThrow(/non-negative/);
    expect(bad({ name: "a", datatype: "FP32", shape: [1], bytes: [1, 2, 3, 4] })).toThrow(/'bytes' must be binary/);
    // BYTES: the length prefixes must give exactly the shape's elements.
    expect(bad({ name: "s", datatype: "BYTES", shape: [2], bytes: new Uint8Array([1, 0, 0, 0, 0x61]) })).toThrow(/end inside element 1 of 2/);
    expect(bad({ name: "s", datatype: "BYTES", shape: [1], bytes: new Uint8Array([9, 0, 0, 0, 0x61]) })).toThrow(/runs past/);
    expect(bad({ name: "s", datatype: "BYTES", shape: [1], bytes: new Uint8Array([1, 0, 0, 0, 0x61, 0]) })).toThrow(/take 5 bytes, it has 6/);
  });
});

describe("refusals, each with a message that says what to fix", () => {
  const sig: ModelSignature = { inputs: [{ name: "x", datatype: "FP32", shape: [-1, 4] }], outputs: [{ name: "y", datatype: "FP32", shape: [-1] }] };
  const head = (size: unknown, extra: Record<string, unknown> = {}) =>
    enc.encode(JSON.stringify({ inputs: [{ name: "x", datatype: "FP32", shape: [1, 4], parameters: { binary_data_size: size }, ...extra }] }));
  const sixteen = new Uint8Array(16);

  it("binary_data_size that does not match shape × datatype", () => {
    const h = head(12);
    expect(refusal(() => parseBinary(concat(h, sixteen.subarray(0, 12)), h.byteLength, sig))).toMatch(/binary_data_size is 12, the shape needs 4 elements × 4 bytes = 16/);
  });

  it("binary_data_size past the end of the body", () => {
    const h = head(16);
    expect(refusal(() => parseBinary(concat(h, sixteen.subarray(0, 8)), h.byteLength, sig))).toMatch(/binary_data_size is 16, but only 8 bytes/);
  });

  it("bytes left over after the last binary input", () => {
    const h = head(16);
    expect(refusal(() => parseBinary(concat(h, sixteen, new Uint8Array(3)), h.byteLength, sig))).toMatch(/3 bytes of binary data follow the last binary input/);
  });

  it("a size that is not a non-negative integer, and data beside a size", () => {
    for (const bad of [-1, 1.5, "16", null]) {
      const h = head(bad);
      expect(refusal(() => parseBinary(concat(h, sixteen), h.byteLength, sig))).toMatch(/binary_data_size must be a non-negative integer/);
    }
    const h = head(16, { data: [1, 2, 3, 4] });
    expect(refusal(() => parseBinary(concat(h, sixteen), h.byteLength, sig))).toMatch(/either 'data' or parameters.binary_data_size/);
  });

  it("binary_data_size in a request with no binary part", () => {
    expect(refusal(() => parseInferRequest(JSON.parse(new TextDecoder().decode(head(16))), sig))).toMatch(/no binary part/);
  });

  it("BOOL bytes other than 0 and 1", () => {
    const s: ModelSignature = { inputs: [{ name: "b", datatype: "BOOL", shape: [2] }], outputs: [] };
    const h = enc.encode(JSON.stringify({ inputs: [{ name: "b", datatype: "BOOL", shape: [2], parameters: { binary_data_size: 2 } }] }));
    expect(refusal(() => parseBinary(concat(h, new Uint8Array([1, 2])), h.byteLength, s))).toMatch(/element 1 is byte 2/);
  });

  describe("BYTES element lengths", () => {
    const s: ModelSignature = { inputs: [{ name: "s", datatype: "BYTES", shape: [-1] }], outputs: [] };
    const bytesBody = (count: number, data: number[]) => {
      const h = enc.encode(JSON.stringify({ inputs: [{ name: "s", datatype: "BYTES", shape: [count], parameters: { binary_data_size: data.length } }] }));
      return () => parseBinary(concat(h, new Uint8Array(data)), h.byteLength, s);
    };
    it("a length that overruns binary_data_size", () => {
      expect(refusal(bytesBody(1, [9, 0, 0, 0, 0x61]))).toMatch(/element 0 says 9 bytes, but only 1/);
      expect(refusal(bytesBody(1, [0xff, 0xff, 0xff, 0xff, 0x61]))).toMatch(/element 0 says 4294967295 bytes/);
    });
    it("a size that ends inside a length prefix", () => {
      expect(refusal(bytesBody(2, [1, 0, 0, 0, 0x61, 1, 0]))).toMatch(/ends inside the length of element 1 of 2/);
    });
    it("fewer elements than the shape, or bytes left inside the tensor", () => {
      expect(refusal(bytesBody(1, [1, 0, 0, 0, 0x61, 1, 0, 0, 0, 0x62]))).toMatch(/1 elements take 5 bytes, binary_data_size says 10/);
    });
    it("an element that is not UTF-8", () => {
      expect(refusal(bytesBody(1, [2, 0, 0, 0, 0xc3, 0x28]))).toMatch(/not valid UTF-8/);
    });
  });

  it("Inference-Header-Content-Length that is not a number or is past the body", () => {
    const body = enc.encode("{}");
    expect(() => splitBinaryBody(body, "abc")).toThrow(BinaryFramingError);
    expect(() => splitBinaryBody(body, "-1")).toThrow(/non-negative integer/);
    expect(() => splitBinaryBody(body, "3")).toThrow(/is 3, but the body has only 2 bytes/);
    expect(splitBinaryBody(body, "2").binary.byteLength).toBe(0);
  });

  it("binary_data flags that are not booleans", () => {
    expect(refusal(() => binaryOutputChoice({ parameters: { binary_data_output: "yes" } }))).toMatch(/binary_data_output must be true or false/);
    expect(refusal(() => binaryOutputChoice({ outputs: [{ name: "y", parameters: { binary_data: 1 } }] }))).toMatch(/outputs\[0\].parameters.binary_data/);
  });
});

describe("which outputs come back binary", () => {
  const outputs: WireTensor[] = [
    { name: "p", datatype: "FP32", shape: [2], data: new Float32Array([1, 2]) },
    { name: "q", datatype: "BYTES", shape: [1], data: ["ok"] },
  ];
  it("binary_data_output for all, overridden per output by binary_data", () => {
    const choice = binaryOutputChoice({ parameters: { binary_data_output: true }, outputs: [{ name: "q", parameters: { binary_data: false } }] });
    expect([choice("p"), choice("q")]).toEqual([true, false]);
    const out = encodeInferResponse({ model_name: "m" }, outputs, choice);
    const { json, outputs: back } = decodeInferResponse(out.body as Uint8Array, String(out.headerLength));
    expect(json.model_name).toBe("m");
    expect(back).toEqual([outputs[0], { name: "q", datatype: "BYTES", shape: [1], data: ["ok"] }]);
  });
  it("JSON text (no header length) when no output is binary", () => {
    const out = encodeInferResponse({ model_name: "m" }, outputs, binaryOutputChoice({}));
    expect(out.headerLength).toBeUndefined();
    expect(JSON.parse(out.body as string).outputs[0]).toEqual({ name: "p", datatype: "FP32", shape: [2], data: [1, 2] });
  });
  it("BYTES outputs as length-prefixed UTF-8", () => {
    const out = encodeInferResponse({}, outputs, (n) => n === "q");
    const body = out.body as Uint8Array;
    expect(Array.from(body.subarray(out.headerLength))).toEqual([2, 0, 0, 0, 0x6f, 0x6b]);
  });
});

describe("compressed request bodies", () => {
  const json = enc.encode(JSON.stringify({ inputs: [{ name: "x", datatype: "FP32", shape: [1, 4], data: [1, 2, 3, 4] }] }));
  const req = (body: Uint8Array, encoding?: string) =>
    new Request("http://edge/v2/models/m/infer", { method: "POST", body: Buffer.from(body), headers: encoding ? { "content-encoding": encoding } : {} });
  const code = async (p: Promise<unknown>) => {
    try {
      await p;
    } catch (err) {
      expect(err).toBeInstanceOf(MeshError);
      return (err as MeshError).code;
    }
    return "accepted";
  };

  it("undoes gzip and deflate, and passes identity through", async () => {
    expect(await readBody(req(gzipSync(json), "gzip"), 1024)).toEqual(json);
    expect(await readBody(req(deflateSync(json), "deflate"), 1024)).toEqual(json);
    expect(await readBody(req(json, "identity"), 1024)).toEqual(json);
    expect(await readBody(req(json), 1024)).toEqual(json);
  });

  it("stops a small body that expands past the limit (413), refuses a corrupt stream (400) and other codings (415)", async () => {
    const bomb = gzipSync(new Uint8Array(64 * 1024 * 1024));
    expect(bomb.byteLength).toBeLessThan(100_000);
    expect(await code(readBody(req(bomb, "gzip"), 8 * 1024 * 1024))).toBe("payload_too_large");
    expect(await code(readBody(req(gzipSync(json).subarray(0, 20), "gzip"), 1024))).toBe("bad_request");
    expect(await code(readBody(req(json, "gzip"), 1024))).toBe("bad_request");
    expect(await code(readBody(req(json, "br"), 1024))).toBe("unsupported_media_type");
    expect(await code(readBody(req(json, "gzip, gzip"), 1024))).toBe("unsupported_media_type");
  });

  it("reads Accept-Encoding as HTTP does", () => {
    expect(acceptsGzip("gzip, deflate, br")).toBe(true);
    expect(acceptsGzip("br;q=1.0, gzip;q=0.5")).toBe(true);
    expect(acceptsGzip("gzip;q=0")).toBe(false);
    expect(acceptsGzip("*")).toBe(true);
    expect(acceptsGzip("*;q=0.1, gzip;q=0")).toBe(false);
    expect(acceptsGzip("identity")).toBe(false);
    expect(acceptsGzip(undefined)).toBe(false);
  });

  it("reads the caller's Accept-Encoding from request.cf in the runtime (which rewrites the header)", () => {
    const inRuntime = (cf: object) => Object.assign(new Request("http://edge/", { headers: { "accept-encoding": "br, gzip" } }), { cf });
    expect(clientAcceptEncoding(inRuntime({ clientAcceptEncoding: "identity" }))).toBe("identity");
    expect(clientAcceptEncoding(inRuntime({}))).toBeUndefined();
    expect(clientAcceptEncoding(new Request("http://edge/", { headers: { "accept-encoding": "gzip" } }))).toBe("gzip");
  });
});
