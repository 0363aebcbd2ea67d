// End to end through the real parts: the edge in workerd (through Miniflare, local D1 and R2), two
// region routers, node agents running onnxruntime-node, redis-server behind the Upstash REST
// stand-in. One mesh is booted for the file, exactly as `npm start` boots it.

import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { signRequest } from "../protocol/signing.js";
import { startMesh, type MeshHandle } from "../local/mesh.js";
import { DEMO_MLP_V1, DEMO_MLP_V2, DEMO_TYPES_CASES, referenceMlp } from "../scripts/make-demo-models.js";
import { call, DEMO_TYPES_VALUES, expectClose, expectError, mlpBody, rawPost, type Answer } from "./helpers/mesh-client.js";

let mesh: MeshHandle;
let dir: string;
const X = [
  [1, 2, 3, 4],
  [-1, 0.5, 0, 2],
  [0, 0, 0, 0],
];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "mesh-e2e-"));
  mesh = await startMesh({ stateDir: dir, progress: (l) => process.env.MESH_TEST_VERBOSE && console.log(l) });
});

afterAll(async () => {
  await mesh?.stop();
  await rm(dir, { recursive: true, force: true });
});

const infer = (model: string, body: unknown, key = mesh.apiKey, version?: string) =>
  call(`${mesh.edge}/v2/models/${model}${version ? `/versions/${version}` : ""}/infer`, { key, json: body });

async function callsServed(): Promise<number> {
  let n = 0;
  for (const r of Object.keys(mesh.regions)) {
    const s = await mesh.regionStatus(r);
    n += s.served + s.failed;
  }
  return n;
}

describe("inference through every layer", () => {
  it("answers the demo MLP with the model's known math, the id echoed and the breakdown in headers", async () => {
    const a = await infer("demo-mlp", mlpBody(X, { id: "call-1" }));
    expect(a.status, JSON.stringify(a.body)).toBe(200);
    const want = referenceMlp(DEMO_MLP_V1, X);
    expect(a.body.model_name).toBe("demo-mlp");
    expect(a.body.model_version).toBe("1");
    expect(a.body.id).toBe("call-1");
    const [logits, probs] = a.body.outputs;
    expect(logits.name).toBe("logits");
    expect(logits.datatype).toBe("FP32");
    expect(logits.shape).toEqual([3, 3]);
    expectClose(logits.data, want.logits.flat());
    expectClose(probs.data, want.probs.flat());
    expect(Object.keys(mesh.regions)).toContain(a.headers.get("x-mesh-region"));
    expect(a.headers.get("x-mesh-node")).toMatch(/-node-/);
    expect(a.headers.get("x-mesh-version")).toBe("1");
    const timing = a.headers.get("server-timing") ?? "";
    for (const part of ["edge", "region", "queue", "load", "infer"]) expect(timing).toMatch(new RegExp(`${part};dur=`));
  });

  it("sends the second call to the node that already holds the model (no load time)", async () => {
    await infer("demo-mlp", mlpBody([[1, 1, 1, 1]]));
    const a = await infer("demo-mlp", mlpBody([[1, 1, 1, 1]]));
    expect(a.status).toBe(200);
    expect(a.headers.get("server-timing")).toMatch(/load;dur=0\.00/);
  });

  it("honours a requested subset of outputs", async () => {
    const a = await infer("demo-mlp", mlpBody([X[0]!], { outputs: [{ name: "probs" }] }));
    expect(a.status).toBe(200);
    expect(a.body.outputs.map((o: { name: string }) => o.name)).toEqual(["probs"]);
    expectClose(a.body.outputs[0].data, referenceMlp(DEMO_MLP_V1, [X[0]!]).probs.flat());
  });

  it("accepts every OIP datatype the model's inputs use, and returns the same datatypes", async () => {
    const values = DEMO_TYPES_VALUES;
    const body = {
      inputs: DEMO_TYPES_CASES.map((c) => ({ name: c.input, datatype: c.datatype, shape: [3], data: values[c.datatype] })),
    };
    const a = await infer("demo-types", body);
    expect(a.status, JSON.stringify(a.body)).toBe(200);
    const out = new Map<string, { datatype: string; data: unknown[] }>(a.body.outputs.map((o: any) => [o.name, o]));
    for (const c of DEMO_TYPES_CASES) {
      const o = out.get(c.output)!;
      expect(o.datatype, c.output).toBe(c.datatype);
      const input = values[c.datatype]!;
      const expected =
        c.op === "identity" ? input : c.op === "not" ? input.map((b) => !b) : input.map((v) => (v as number) * 2);
      expect(o.data, c.output).toEqual(expected);
    }
  });
});

describe("control plane", () => {
  it("deploys a new version through /v1 and serves it, while the old one stays callable", async () => {
    const bytes = await readFile(join(dir, "models", "demo-mlp.v2.onnx"));
    const up = await call(`${mesh.edge}/v1/models/demo-mlp/versions`, {
      key: mesh.apiKey,
      body: bytes,
      headers: { "content-type": "application/octet-stream" },
    });
    expect(up.status, JSON.stringify(up.body)).toBe(201);
    expect(up.body.version).toBe(2);
    expect(up.body.inputs).toEqual([{ name: "x", datatype: "FP32", shape: [-1, 4] }]);
    expect(up.body.sha256).toMatch(/^[0-9a-f]{64}$/);

    const v2 = await infer("demo-mlp", mlpBody(X), mesh.apiKey, "2");
    expect(v2.status, JSON.stringify(v2.body)).toBe(200);
    expect(v2.headers.get("x-mesh-version")).toBe("2");
    expectClose(v2.body.outputs[0].data, referenceMlp(DEMO_MLP_V2, X).logits.flat());

    // `latest` follows the newest version; version 1 is still there.
    const latest = await infer("demo-mlp", mlpBody(X));
    expect(latest.headers.get("x-mesh-version")).toBe("2");
    const v1 = await infer("demo-mlp", mlpBody(X), mesh.apiKey, "1");
    expectClose(v1.body.outputs[0].data, referenceMlp(DEMO_MLP_V1, X).logits.flat());

    const meta = await call(`${mesh.edge}/v2/models/demo-mlp`, { key: mesh.apiKey });
    expect(meta.body.versions).toEqual(["2", "1"]);
    expect(meta.body.platform).toBe("onnxruntime_onnx");
  });

  it("refuses a file that is not an ONNX model with 400 and a clear message", async () => {
    for (const body of [Buffer.from("this is not a model"), Buffer.from(JSON.stringify({ a: 1 })), Buffer.alloc(0)]) {
      const a = await call(`${mesh.edge}/v1/models/demo-mlp/versions`, {
        key: mesh.apiKey,
        body,
        headers: { "content-type": "application/octet-stream" },
      });
      expectError(a, 400, "invalid_model_file");
      expect(a.body.error).toMatch(/ONNX|empty/);
    }
    const wrongType = await call(`${mesh.edge}/v1/models/demo-mlp/versions`, { key: mesh.apiKey, json: { a: 1 } });
    expectError(wrongType, 415, "unsupported_media_type");
    const models = await call(`${mesh.edge}/v1/models/demo-mlp`, { key: mesh.apiKey });
    expect(models.body.versions.map((v: { version: number }) => v.version)).toEqual([2, 1]);
  });

  it("creates, lists and names models; a second model with the same name is a conflict", async () => {
    const created = await call(`${mesh.edge}/v1/models`, { key: mesh.apiKey, json: { name: "fresh-model" } });
    expect(created.status).toBe(201);
    expectError(await call(`${mesh.edge}/v1/models`, { key: mesh.apiKey, json: { name: "fresh-model" } }), 409, "conflict");
    expectError(await call(`${mesh.edge}/v1/models`, { key: mesh.apiKey, json: { name: "../bad name" } }), 400, "bad_request");
    const list = await call(`${mesh.edge}/v1/models`, { key: mesh.apiKey });
    expect(list.body.models.map((m: { name: string }) => m.name).sort()).toEqual(["demo-chat", "demo-mlp", "demo-types", "fresh-model", "tiny-gpt"]);
    // The list says what `latest` is, as the model's own page does: the newest version, or the
    // version an alias named `latest` pins; null for a model without versions.
    const latestIn = (l: typeof list) => Object.fromEntries(l.body.models.map((m: { name: string; latestVersion: number | null }) => [m.name, m.latestVersion]));
    expect(latestIn(list)).toMatchObject({ "demo-mlp": 2, "demo-types": 1, "fresh-model": null });
    expect((await call(`${mesh.edge}/v1/models/demo-mlp/aliases/latest`, { key: mesh.apiKey, method: "PUT", json: { version: 1 } })).status).toBe(200);
    expect(latestIn(await call(`${mesh.edge}/v1/models`, { key: mesh.apiKey }))["demo-mlp"]).toBe(1);
    expect((await call(`${mesh.edge}/v1/models/demo-mlp`, { key: mesh.apiKey })).body.latestVersion).toBe(1);
    expect((await call(`${mesh.edge}/v1/models/demo-mlp/aliases/latest`, { key: mesh.apiKey, method: "DELETE" })).status).toBe(200);
    // A model without versions answers clearly instead of hanging or crashing.
    expectError(await infer("fresh-model", mlpBody(X)), 404, "version_not_found");
  });
});

describe("warm policy", () => {
  it("a keep-warm floor makes every region hold the model warm before any call", async () => {
    const put = await call(`${mesh.edge}/v1/models/demo-types`, { key: mesh.apiKey, method: "PUT", json: { keepWarm: 1 } });
    expect(put.status, JSON.stringify(put.body)).toBe(200);
    expect(put.body.keepWarm).toBe(1);
    expect(put.body.policyPublished).toBe(true);
    const key = `${put.body.id}@1`;
    const until = Date.now() + 20_000;
    let warmIn: string[] = [];
    while (Date.now() < until) {
      warmIn = [];
      for (const r of Object.keys(mesh.regions)) {
        const s = await mesh.regionStatus(r);
        if (s.models.some((m) => m.key === key && m.replicas >= 1)) warmIn.push(r);
      }
      if (warmIn.length === Object.keys(mesh.regions).length) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(warmIn.sort()).toEqual(Object.keys(mesh.regions).sort());
    expectError(
      await call(`${mesh.edge}/v1/models/demo-types`, { key: mesh.apiKey, method: "PUT", json: { keepWarm: -1 } }),
      400,
      "bad_request",
    );
    const off = await call(`${mesh.edge}/v1/models/demo-types`, { key: mesh.apiKey, method: "PUT", json: { keepWarm: 0 } });
    expect(off.body.keepWarm).toBe(0);
  });
});

describe("authentication and ownership", () => {
  it("answers 401 for a missing key and a wrong key", async () => {
    expectError(await call(`${mesh.edge}/v2/models/demo-mlp/infer`, { json: mlpBody(X) }), 401, "unauthorized");
    expectError(await infer("demo-mlp", mlpBody(X), "mesh_" + "x".repeat(32)), 401, "unauthorized");
    expectError(await infer("demo-mlp", mlpBody(X), "not-even-a-mesh-key"), 401, "unauthorized");
    expectError(await call(`${mesh.edge}/v1/models`, { key: "garbage" }), 401, "unauthorized");
  });

  it("refuses a revoked key", async () => {
    const created = await call(`${mesh.edge}/v1/keys`, { key: mesh.apiKey, json: { name: "short-lived", scopes: ["infer"] } });
    expect(created.status).toBe(201);
    const key = created.body.key as string;
    expect((await infer("demo-mlp", mlpBody(X), key)).status).toBe(200);
    const listed = await call(`${mesh.edge}/v1/keys`, { key: mesh.apiKey });
    const row = listed.body.keys.find((k: { id: string }) => k.id === created.body.id);
    expect(row.start).toBe(key.slice(0, row.start.length));
    expect(JSON.stringify(listed.body)).not.toContain(key); // plaintext is shown once only
    const del = await call(`${mesh.edge}/v1/keys/${created.body.id}`, { key: mesh.apiKey, method: "DELETE" });
    expect(del.status).toBe(200);
    expectError(await infer("demo-mlp", mlpBody(X), key), 401, "unauthorized");
    expectError(await call(`${mesh.edge}/v1/keys/${created.body.id}`, { key: mesh.apiKey, method: "DELETE" }), 404, "not_found");
  });

  it("a key without the manage scope cannot use the control plane", async () => {
    const created = await call(`${mesh.edge}/v1/keys`, { key: mesh.apiKey, json: { scopes: ["infer"] } });
    expectError(await call(`${mesh.edge}/v1/models`, { key: created.body.key }), 403, "forbidden");
  });

  it("answers another account's model exactly as a model that does not exist (404)", async () => {
    const other = await call(`${mesh.edge}/v1/accounts`, { key: mesh.adminToken, json: { name: "other" } });
    expect(other.status).toBe(201);
    const otherKey = other.body.apiKey.key as string;
    const foreign = await infer("demo-mlp", mlpBody(X), otherKey);
    const missing = await infer("no-such-model", mlpBody(X), otherKey);
    expectError(foreign, 404, "model_not_found");
    expectError(missing, 404, "model_not_found");
    expect(foreign.body.error.replace("demo-mlp", "M")).toBe(missing.body.error.replace("no-such-model", "M"));
    expectError(await call(`${mesh.edge}/v2/models/demo-mlp`, { key: otherKey }), 404, "model_not_found");
    expectError(await call(`${mesh.edge}/v1/models/demo-mlp`, { key: otherKey }), 404, "model_not_found");
    // The operator's route refuses API keys, and API keys cannot create accounts.
    expectError(await call(`${mesh.edge}/v1/accounts`, { key: mesh.apiKey, json: {} }), 401, "unauthorized");
  });
});

describe("malformed calls are refused at the edge and never reach a node", () => {
  const cases: [string, unknown, string][] = [
    ["wrong datatype", { inputs: [{ name: "x", datatype: "INT32", shape: [1, 4], data: [1, 2, 3, 4] }] }, "datatype"],
    ["shape that does not match the data", { inputs: [{ name: "x", datatype: "FP32", shape: [2, 4], data: [1, 2, 3, 4] }] }, "elements"],
    ["fixed dimension mismatch", { inputs: [{ name: "x", datatype: "FP32", shape: [1, 5], data: [1, 2, 3, 4, 5] }] }, "dimension 1"],
    ["missing inputs", { inputs: [] }, "inputs"],
    ["no inputs field", { id: "x" }, "inputs"],
    ["unknown input", { inputs: [{ name: "y", datatype: "FP32", shape: [1, 4], data: [1, 2, 3, 4] }] }, "unknown input 'y'"],
    ["non-numeric data", { inputs: [{ name: "x", datatype: "FP32", shape: [1, 4], data: [1, "2", 3, 4] }] }, "not a number"],
    ["unknown output", { ...mlpBody([[1, 2, 3, 4]]), outputs: [{ name: "nope" }] }, "unknown output"],
  ];

  it.each(cases)("%s -> 400 with a clear message", async (_name, body, fragment) => {
    const before = await callsServed();
    const a = await infer("demo-mlp", body);
    expectError(a, 400, "invalid_tensor");
    expect(a.body.error).toContain(fragment);
    expect(await callsServed()).toBe(before);
  });

  it("invalid JSON -> 400 invalid_json", async () => {
    const a = await call(`${mesh.edge}/v2/models/demo-mlp/infer`, {
      key: mesh.apiKey,
      body: "{not json",
      headers: { "content-type": "application/json" },
    });
    expectError(a, 400, "invalid_json");
  });

  it("an oversize body -> 413, without reading it into a node", async () => {
    const before = await callsServed();
    const big = "[" + "1,".repeat(5_000_000) + "1]";
    const a = await rawPost(
      `${mesh.edge}/v2/models/demo-mlp/infer`,
      { authorization: `Bearer ${mesh.apiKey}`, "content-type": "application/json" },
      Buffer.from(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"data":${big}}]}`),
      { announceOnly: true },
    );
    expectError(a, 413, "payload_too_large");
    expect(await callsServed()).toBe(before);
  });

  it("unknown routes answer the same envelope", async () => {
    expectError(await call(`${mesh.edge}/nope`), 404, "not_found");
  });
});

describe("internal endpoints refuse callers without credentials", () => {
  const region = () => Object.values(mesh.regions)[0]!;

  it("the router refuses unsigned, badly signed and expired calls", async () => {
    const body = new Uint8Array([0x80]);
    const unsigned = await call(`${region()}/v1/infer`, { body, headers: { "content-type": "application/x-msgpack" } });
    expectError(unsigned, 401, "unauthorized");
    const wrong = await signRequest("another-secret-of-enough-length", "POST", "/v1/infer", body);
    expectError(await call(`${region()}/v1/infer`, { body, headers: wrong }), 401, "unauthorized");
    const old = await signRequest(mesh.regionSecrets[Object.keys(mesh.regions)[0]!]!, "POST", "/v1/infer", body, Date.now() - 10 * 60_000);
    expectError(await call(`${region()}/v1/infer`, { body, headers: old }), 401, "unauthorized");
    expectError(await call(`${region()}/v1/status`), 401, "unauthorized");
  });

  it("the node socket refuses a connection without a valid token", async () => {
    const url = region().replace(/^http/, "ws") + "/v1/nodes";
    for (const headers of [{}, { authorization: "Bearer wrong-token-wrong-token" }]) {
      const status = await new Promise<number>((resolve, reject) => {
        const ws = new WebSocket(url, { headers });
        ws.on("unexpected-response", (_req, res) => {
          resolve(res.statusCode ?? 0);
          ws.terminate();
        });
        ws.on("open", () => reject(new Error("socket opened without credentials")));
        ws.on("error", () => undefined);
      });
      expect(status).toBe(401);
    }
  });

  it("a node that sends garbage is closed and the router keeps serving others", async () => {
    const url = region().replace(/^http/, "ws") + "/v1/nodes";
    for (const frame of [Buffer.from([0xc1, 0xff, 0x00]), Buffer.from([0x81, 0xa1, 0x74, 0xa3, 0x62, 0x61, 0x64]), "text"]) {
      const code = await new Promise<number>((resolve) => {
        const ws = new WebSocket(url, { headers: { authorization: `Bearer ${mesh.nodeToken}` } });
        ws.on("open", () => ws.send(frame));
        ws.on("close", (c) => resolve(c));
        ws.on("error", () => undefined);
      });
      expect(code).toBe(1002);
    }
    expect((await infer("demo-mlp", mlpBody(X))).status).toBe(200);
  });

  it("artifact downloads need a URL the edge signed", async () => {
    const models = await call(`${mesh.edge}/v1/models/demo-mlp`, { key: mesh.apiKey });
    const sha = models.body.versions[0].sha256;
    expectError(await call(`${mesh.edge}/internal/artifacts/${sha}`), 401, "unauthorized");
    expectError(await call(`${mesh.edge}/internal/artifacts/${sha}?exp=99999999999999&sig=00`), 401, "unauthorized");
  });
});

describe("Open Inference Protocol server endpoints", () => {
  it("health, server metadata and model readiness", async () => {
    expect((await call(`${mesh.edge}/v2/health/live`)).body).toEqual({ live: true });
    expect((await call(`${mesh.edge}/v2/health/ready`)).body).toEqual({ ready: true });
    const meta: Answer = await call(`${mesh.edge}/v2`);
    expect(meta.body.name).toBe("inference-mesh");
    const ready = await call(`${mesh.edge}/v2/models/demo-mlp/versions/1/ready`, { key: mesh.apiKey });
    expect(ready.body).toEqual({ name: "demo-mlp", ready: true });
  });
});
