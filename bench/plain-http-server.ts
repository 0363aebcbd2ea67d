// The "plain-http" baseline for bench/mesh-overhead.ts: one Node process serving one ONNX
// model over the Open Inference Protocol's JSON API, with no auth, routing, queueing or
// hops, i.e. what someone would write by hand around onnxruntime-node. It validates and
// converts tensors with the same code the mesh uses (formats/tensor.ts, gpu-node's
// ort-tensors.ts), and runs the session in-process on its event loop, as a hand-written server
// would: the mesh runs it in a session child process (isolation, deadlines, memory bounds), and
// that cost is part of what this baseline shows. It speaks the binary tensor data extension
// with the mesh's codec (formats/binary-tensors.ts), so binary calls have a baseline too.
//
// Run: node --import tsx bench/plain-http-server.ts <model.onnx> [model-name] [port]
// Prints `LISTENING <port>` on stdout once ready. Exits on SIGTERM/SIGINT, or when the process
// named by MESH_PARENT_PID (the bench, bench/harness.ts sets it) is gone, so it never outlives it.

import { readFile } from "node:fs/promises";
import http from "node:http";
import { basename } from "node:path";
import * as ort from "onnxruntime-node";
import { fromOrt, toOrt } from "../gpu-node/ort-tensors.js";
import { readOnnxSignature } from "../formats/onnx-signature.js";
import { exitWhenParentDies } from "../runtime/parent-watch.js";
import { BinaryFramingError, BinaryInputs, binaryOutputChoice, encodeInferResponse, INFERENCE_HEADER, splitBinaryBody } from "../formats/binary-tensors.js";
import { parseInferRequest, TensorError } from "../formats/tensor.js";

const modelPath = process.argv[2];
if (!modelPath) {
  process.stderr.write("usage: node --import tsx bench/plain-http-server.ts <model.onnx> [model-name] [port]\n");
  process.exit(2);
}
const modelName = process.argv[3] ?? basename(modelPath).replace(/(\.v\d+)?\.onnx$/, "");
const port = Number(process.argv[4] ?? 0);
const MAX_BODY = 8 * 1024 * 1024;

const bytes = await readFile(modelPath);
const signature = readOnnxSignature(bytes);
const session = await ort.InferenceSession.create(modelPath, { executionProviders: ["cpu"], graphOptimizationLevel: "all" });

const inferPath = `/v2/models/${modelName}/infer`;

function send(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

async function readBody(req: http.IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY) throw new TensorError("request body too large");
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  const url = req.url ?? "/";
  if (req.method === "GET" && (url === "/v2/health/ready" || url === "/v2/health/live")) {
    return send(res, 200, { ready: true });
  }
  if (req.method !== "POST" || url !== inferPath) {
    return send(res, 404, { error: `no route ${req.method} ${url}` });
  }
  const started = performance.now();
  let parsed;
  let asBinary;
  try {
    const body = await readBody(req);
    const headerLength = req.headers[INFERENCE_HEADER];
    const { json, binary } = typeof headerLength === "string" ? splitBinaryBody(body, headerLength) : { json: body.toString("utf8"), binary: undefined };
    const head: unknown = JSON.parse(json);
    parsed = parseInferRequest(head, signature, binary ? new BinaryInputs(binary) : undefined);
    asBinary = binaryOutputChoice(head);
  } catch (err) {
    if (err instanceof TensorError || err instanceof SyntaxError || err instanceof BinaryFramingError) return send(res, 400, { error: err.message });
    throw err;
  }
  const fetches = parsed.outputs ?? [...session.outputNames];
  const result = await session.run(Object.fromEntries(parsed.inputs.map((t) => [t.name, toOrt(t)])), fetches);
  const outputs = fetches.map((name) => fromOrt(name, result[name]));
  res.setHeader("server-timing", `infer;dur=${(performance.now() - started).toFixed(3)}`);
  const answer = encodeInferResponse({ model_name: modelName, model_version: "1", ...(parsed.id !== undefined ? { id: parsed.id } : {}) }, outputs, asBinary);
  const payload = typeof answer.body === "string" ? Buffer.from(answer.body) : answer.body;
  res.writeHead(200, {
    "content-length": payload.byteLength,
    ...(answer.headerLength === undefined
      ? { "content-type": "application/json" }
      : { "content-type": "application/octet-stream", [INFERENCE_HEADER]: String(answer.headerLength) }),
  });
  res.end(payload);
}

const server = http.createServer((req, res) => {
  handle(req, res).catch((err: unknown) => {
    if (!res.headersSent) send(res, 500, { error: err instanceof Error ? err.message : String(err) });
    else res.destroy();
  });
});
server.keepAliveTimeout = 60_000;
server.headersTimeout = 65_000;

let closing = false;
function shutdown(code = 0): void {
  if (closing) return;
  closing = true;
  server.closeAllConnections();
  server.close(() => {
    void session.release().finally(() => process.exit(code));
  });
  // Never hang on the way out.
  setTimeout(() => process.exit(code), 2_000).unref();
}
process.on("SIGTERM", () => shutdown(0));
process.on("SIGINT", () => shutdown(0));
exitWhenParentDies(() => shutdown(0));

server.listen(port, "127.0.0.1", () => {
  const addr = server.address();
  const actual = typeof addr === "object" && addr ? addr.port : port;
  process.stdout.write(`LISTENING ${actual}\n`);
});
