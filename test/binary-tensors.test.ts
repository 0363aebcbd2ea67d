// Triton's binary tensor data extension and compressed bodies, end to end through the real
// parts: the edge in workerd, a region router, node agents running onnxruntime-node. Calls go
// over node:http (not fetch) so the test sees the bytes on the wire, gzip included.

import { mkdtemp, rm } from "node:fs/promises";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { deflateSync, gunzipSync, gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startMesh, type MeshHandle } from "../local/mesh.js";
import { decodeInferResponse, encodeInferRequest, INFERENCE_HEADER } from "../formats/binary-tensors.js";
import type { OipDatatype } from "../formats/datatypes.js";
import { encodeTensorData, toJsonTensor, type JsonTensor, type WireTensor } from "../formats/tensor.js";
import { DEMO_MLP_V1, DEMO_TYPES_CASES, referenceMlp } from "../scripts/make-demo-models.js";
import { DEMO_TYPES_VALUES, expectClose, expectError, type Answer } from "./helpers/mesh-client.js";

let mesh: MeshHandle;
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "binary-tensors-"));
  mesh = await startMesh({ stateDir: dir, progress: (l) => process.env.MESH_TEST_VERBOSE && console.log(l) });
});

afterAll(async () => {
  await mesh?.stop();
  await rm(dir, { recursive: true, force: true });
});

interface Raw {
  status: number;
  headers: http.IncomingHttpHeaders;
  bytes: Buffer;
}

/** One POST over node:http: the answer's bytes exactly as sent (no transparent gunzip). */
function post(path: string, body: Uint8Array | string, headers: Record<string, string> = {}): Promise<Raw> {
  const payload = typeof body === "string" ? Buffer.from(body) : Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  return new Promise((resolve, reject) => {
    const req = http.request(
      new URL(path, mesh.edge),
      { method: "POST", headers: { authorization: `Bearer ${mesh.apiKey}`, "content-length": String(payload.byteLength), ...headers } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => resolve({ status: res.statusCode!, headers: res.headers, bytes: Buffer.concat(chunks) }));
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end(payload);
  });
}

/** A JSON answer as the envelope checks want it. */
function answer(r: Raw): Answer {
  const h = new Headers();
  for (const [k, v] of Object.entries(r.headers)) if (typeof v === "string") h.set(k, v);
  let body: unknown = r.bytes.toString("utf8");
  try {
    body = JSON.parse(body as string);
  } catch {
    /* the assertion will say */
  }
  return { status: r.status, headers: h, body };
}

type Input = { name: string; datatype: OipDatatype; shape: number[]; data: WireTensor["data"] | unknown[]; binary?: boolean };

/** Sends inputs, each binary or JSON as it says; `head` adds fields (outputs, parameters). */
function inferBinary(model: string, inputs: Input[], head: Record<string, unknown> = {}, headers: Record<string, string> = {}) {
  const { body, headerLength } = encodeInferRequest(head, inputs);
  return post(`/v2/models/${model}/infer`, body, { "content-type": "application/octet-stream", [INFERENCE_HEADER]: String(headerLength), ...headers });
}

function inferJson(model: string, body: unknown, headers: Record<string, string> = {}) {
  return post(`/v2/models/${model}/infer`, JSON.stringify(body), { "content-type": "application/json", ...headers });
}

function decoded(r: Raw) {
  expect(r.status, r.bytes.toString("utf8").slice(0, 300)).toBe(200);
  const h = r.headers[INFERENCE_HEADER];
  return decodeInferResponse(r.bytes, typeof h === "string" ? h : null);
}

// The demo-types model: one input and one output per datatype (identity, double, not).
const VALUES = DEMO_TYPES_VALUES;
const typesInputs = (binary: (datatype: OipDatatype) => boolean): Input[] =>
  DEMO_TYPES_CASES.map((c) => ({
    name: c.input,
    datatype: c.datatype,
    shape: [3],
    data: binary(c.datatype) ? encodeTensorData(c.input, c.datatype, VALUES[c.datatype]!) : VALUES[c.datatype]!,
    binary: binary(c.datatype),
  }));

describe("binary tensor data through every layer", () => {
  it("GET /v2 names binary_tensor_data among its extensions", async () => {
    const res = await fetch(`${mesh.edge}/v2`);
    expect(((await res.json()) as { extensions: string[] }).extensions).toContain("binary_tensor_data");
  });

  it("takes every datatype in binary and answers binary, with the JSON path's answers bit for bit", async () => {
    const binaryIn = await inferBinary("demo-types", typesInputs(() => true), { parameters: { binary_data_output: true } });
    expect(binaryIn.headers["content-type"]).toBe("application/octet-stream");
    const jsonIn = await inferJson("demo-types", { inputs: typesInputs(() => false), parameters: { binary_data_output: true } });
    // Same inputs, one sent as bytes and one as JSON numbers: the same answer, byte for byte.
    expect(jsonIn.status).toBe(200);
    expect(binaryIn.bytes.equals(jsonIn.bytes)).toBe(true);
    const { outputs } = decoded(binaryIn);
    // And the binary answer says what the JSON answer says.
    const plain = answer(await inferJson("demo-types", { inputs: typesInputs(() => false) }));
    expect(plain.headers.get("content-type")).toMatch(/^application\/json/);
    expect(plain.headers.get(INFERENCE_HEADER)).toBeNull();
    expect(outputs.map((o) => toJsonTensor(o as WireTensor))).toEqual(plain.body.outputs);
    for (const c of DEMO_TYPES_CASES) {
      const o = outputs.find((t) => t.name === c.output)!;
      expect(o.datatype, c.output).toBe(c.datatype);
      expect(ArrayBuffer.isView(o.data) || Array.isArray(o.data), c.output).toBe(true);
    }
  });

  it("mixes JSON and binary inputs, and JSON and binary outputs in one call", async () => {
    const binaryTypes = new Set<OipDatatype>(["FP16", "INT64", "BYTES", "BOOL", "UINT8", "FP64"]);
    const r = await inferBinary("demo-types", typesInputs((d) => binaryTypes.has(d)), {
      outputs: DEMO_TYPES_CASES.map((c) => ({ name: c.output, parameters: { binary_data: binaryTypes.has(c.datatype) } })),
    });
    const { outputs } = decoded(r);
    const plain = answer(await inferJson("demo-types", { inputs: typesInputs(() => false) }));
    for (const c of DEMO_TYPES_CASES) {
      const o = outputs.find((t) => t.name === c.output)!;
      const want = (plain.body.outputs as JsonTensor[]).find((t) => t.name === c.output)!;
      if (binaryTypes.has(c.datatype)) {
        if (c.datatype !== "BYTES") expect(ArrayBuffer.isView(o.data), c.output).toBe(true);
        expect(toJsonTensor(o as WireTensor), c.output).toEqual(want);
      } else {
        expect(o, c.output).toEqual(want);
      }
    }
  });

  it("carries 64-bit integers and FP16 bit patterns that JSON numbers cannot", async () => {
    const u64 = new BigUint64Array([2n ** 64n - 1n, 2n ** 53n + 1n, 0n]);
    const f16 = new Uint16Array([0x7c00, 0x8000, 0x3c01]); // +inf, -0, 1.0009765625
    const inputs = typesInputs(() => true).map((t) => (t.name === "u64" ? { ...t, data: u64 } : t.name === "f16" ? { ...t, data: f16 } : t));
    const { outputs } = decoded(await inferBinary("demo-types", inputs, { parameters: { binary_data_output: true } }));
    expect(outputs.find((o) => o.name === "u64_out")!.data).toEqual(u64);
    // Doubling: +inf stays +inf, -0 stays -0, 1.0009765625 -> 2.001953125 (an exponent bump).
    expect(Array.from(outputs.find((o) => o.name === "f16_out")!.data as Uint16Array)).toEqual([0x7c00, 0x8000, 0x4001]);
  });

  it("answers the demo MLP's FP32 math from a binary input", async () => {
    const rows = [
      [1, 2, 3, 4],
      [-1, 0.5, 0, 2],
    ];
    const r = await inferBinary("demo-mlp", [{ name: "x", datatype: "FP32", shape: [2, 4], data: Float32Array.from(rows.flat()), binary: true }], {
      id: "bin-1",
      outputs: [{ name: "probs", parameters: { binary_data: true } }],
    });
    const { json, outputs } = decoded(r);
    expect(json.id).toBe("bin-1");
    expect(r.headers["x-mesh-version"]).toBe("1");
    expect(outputs.map((o) => o.name)).toEqual(["probs"]);
    expect(outputs[0]!.data).toBeInstanceOf(Float32Array);
    expectClose(Array.from(outputs[0]!.data as Float32Array), referenceMlp(DEMO_MLP_V1, rows).probs.flat());
  });
});

describe("binary requests refused with a clear 400", () => {
  const x = (size: number, extra: Partial<Input> = {}): Input => ({ name: "x", datatype: "FP32", shape: [1, 4], data: new Float32Array(size / 4), binary: true, ...extra });
  const send = (body: Uint8Array, headerLength: string) =>
    post("/v2/models/demo-mlp/infer", body, { "content-type": "application/octet-stream", [INFERENCE_HEADER]: headerLength });

  it("a binary_data_size that does not match the shape", async () => {
    const { body, headerLength } = encodeInferRequest({}, [x(12)]);
    const a = answer(await send(body, String(headerLength)));
    expectError(a, 400, "invalid_tensor");
    expect(a.body.error).toMatch(/binary_data_size is 12, the shape needs 4 elements/);
  });

  it("a header length past the body, or not a number", async () => {
    const { body } = encodeInferRequest({}, [x(16)]);
    expectError(answer(await send(body, String(body.byteLength + 1))), 400, "bad_request");
    expectError(answer(await send(body, "twelve")), 400, "bad_request");
  });

  it("bytes left over after the last binary input", async () => {
    const { body, headerLength } = encodeInferRequest({}, [x(16)]);
    const longer = new Uint8Array(body.byteLength + 4);
    longer.set(body);
    const a = answer(await send(longer, String(headerLength)));
    expectError(a, 400, "invalid_tensor");
    expect(a.body.error).toMatch(/4 bytes of binary data follow/);
  });

  it("BYTES element lengths that overrun the tensor", async () => {
    const inputs = typesInputs(() => false);
    const header = new TextEncoder().encode(
      JSON.stringify({ inputs: inputs.map((t) => (t.name === "s" ? { name: "s", datatype: "BYTES", shape: [3], parameters: { binary_data_size: 9 } } : t)) }),
    );
    const body = new Uint8Array(header.byteLength + 9);
    body.set(header);
    body.set([1, 0, 0, 0, 0x61, 200, 0, 0, 0], header.byteLength);
    const a = answer(await post("/v2/models/demo-types/infer", body, { [INFERENCE_HEADER]: String(header.byteLength) }));
    expectError(a, 400, "invalid_tensor");
    expect(a.body.error).toMatch(/element 1 says 200 bytes/);
  });

  it("a JSON header that is not JSON", async () => {
    expectError(answer(await send(new TextEncoder().encode("{nope"), "5")), 400, "invalid_json");
  });
});

describe("compressed bodies", () => {
  const rows = Array.from({ length: 64 }, (_, i) => [i, -i / 2, 1, i % 3]);
  const body = JSON.stringify({ inputs: [{ name: "x", datatype: "FP32", shape: [64, 4], data: rows }] });

  it("takes a gzip request and a deflate one, answering what the plain request gets", async () => {
    const plain = await inferJson("demo-mlp", JSON.parse(body));
    expect(plain.status).toBe(200);
    const gz = await post("/v2/models/demo-mlp/infer", gzipSync(body), { "content-type": "application/json", "content-encoding": "gzip" });
    const df = await post("/v2/models/demo-mlp/infer", deflateSync(body), { "content-type": "application/json", "content-encoding": "deflate" });
    expect(gz.bytes.equals(plain.bytes), gz.bytes.toString().slice(0, 200)).toBe(true);
    expect(df.bytes.equals(plain.bytes), df.bytes.toString().slice(0, 200)).toBe(true);
  });

  it("takes a gzip body in binary form", async () => {
    const { body: bin, headerLength } = encodeInferRequest({}, [{ name: "x", datatype: "FP32", shape: [64, 4], data: Float32Array.from(rows.flat()), binary: true }]);
    const r = await post("/v2/models/demo-mlp/infer", gzipSync(bin), { "content-encoding": "gzip", [INFERENCE_HEADER]: String(headerLength) });
    const plain = answer(await inferJson("demo-mlp", JSON.parse(body)));
    expect(answer(r).body.outputs).toEqual(plain.body.outputs);
  });

  it("gzips a large answer for a caller that accepts it, and says it varies", async () => {
    const plain = await inferJson("demo-mlp", JSON.parse(body));
    expect(plain.headers["content-encoding"]).toBeUndefined();
    expect(plain.headers.vary).toMatch(/accept-encoding/i);
    const gz = await inferJson("demo-mlp", JSON.parse(body), { "accept-encoding": "gzip" });
    expect(gz.status).toBe(200);
    expect(gz.headers["content-encoding"]).toBe("gzip");
    expect(gz.headers.vary).toMatch(/accept-encoding/i);
    expect(gz.bytes.byteLength).toBeLessThan(plain.bytes.byteLength);
    expect(gunzipSync(gz.bytes).equals(plain.bytes)).toBe(true);
  });

  it("gzips a binary answer too (the runtime's own compression leaves octet-stream alone)", async () => {
    const { body: bin, headerLength } = encodeInferRequest({ parameters: { binary_data_output: true } }, [
      { name: "x", datatype: "FP32", shape: [64, 4], data: Float32Array.from(rows.flat()), binary: true },
    ]);
    const headers = { [INFERENCE_HEADER]: String(headerLength) };
    const plain = await post("/v2/models/demo-mlp/infer", bin, headers);
    const gz = await post("/v2/models/demo-mlp/infer", bin, { ...headers, "accept-encoding": "gzip" });
    expect(gz.headers["content-type"]).toBe("application/octet-stream");
    expect(gz.headers["content-encoding"]).toBe("gzip");
    expect(gunzipSync(gz.bytes).equals(plain.bytes)).toBe(true);
  });

  it("refuses a small body that expands past the limit (413) and a corrupt stream (400)", async () => {
    const bomb = gzipSync(Buffer.alloc(64 * 1024 * 1024, 0x20));
    expect(bomb.byteLength).toBeLessThan(200_000);
    expectError(answer(await post("/v2/models/demo-mlp/infer", bomb, { "content-encoding": "gzip" })), 413, "payload_too_large");
    expectError(answer(await post("/v2/models/demo-mlp/infer", gzipSync(body).subarray(0, 40), { "content-encoding": "gzip" })), 400, "bad_request");
    expectError(answer(await post("/v2/models/demo-mlp/infer", body, { "content-encoding": "br" })), 415, "unsupported_media_type");
  });
});

describe("shadows of a binary call", () => {
  it("parse the same binary body for the shadow version and compare its outputs", async () => {
    const { readFile } = await import("node:fs/promises");
    const key = { authorization: `Bearer ${mesh.apiKey}` };
    const up = await fetch(`${mesh.edge}/v1/models/demo-mlp/versions`, {
      method: "POST",
      headers: { ...key, "content-type": "application/octet-stream" },
      body: await readFile(join(dir, "models", "demo-mlp.v2.onnx")),
    });
    expect(up.status, await up.clone().text()).toBe(201);
    const put = await fetch(`${mesh.edge}/v1/models/demo-mlp/traffic`, {
      method: "PUT",
      headers: { ...key, "content-type": "application/json" },
      body: JSON.stringify({ split: [{ version: 1, weight: 100 }], shadow: [{ version: 2, percent: 100 }] }),
    });
    expect(put.status, await put.clone().text()).toBe(200);
    const t0 = Date.now();
    const rows = [[1, 2, 3, 4]];
    for (let i = 0; i < 3; i++) {
      const r = await inferBinary("demo-mlp", [{ name: "x", datatype: "FP32", shape: [1, 4], data: Float32Array.from(rows.flat()), binary: true }], {
        parameters: { binary_data_output: true },
      });
      expect(r.headers["x-mesh-version"]).toBe("1");
      expectClose(Array.from(decoded(r).outputs.find((o) => o.name === "logits")!.data as Float32Array), referenceMlp(DEMO_MLP_V1, rows).logits.flat());
    }
    // Usage rows appear after the edge's batch flush: poll until the shadows are counted.
    let shadow: { calls: number; errors: number; mismatches: number } | undefined;
    for (const until = Date.now() + 15_000; Date.now() < until; await new Promise((r) => setTimeout(r, 200))) {
      const u = (await (await fetch(`${mesh.edge}/v1/usage?model=demo-mlp&from=${t0}`, { headers: key })).json()) as { models: { model: string; version: number; shadow: typeof shadow }[] };
      shadow = u.models.find((m) => m.model === "demo-mlp" && m.version === 2)?.shadow;
      if ((shadow?.calls ?? 0) >= 3) break;
    }
    // v2's weights differ from v1's: every shadow ran (no errors) and was compared (mismatched).
    expect(shadow).toMatchObject({ calls: 3, errors: 0, mismatches: 3 });
  });
});
