// Test harness for one region without the edge and without Redis: a real router process
// (regions/main.ts), real node agent processes (gpu-node/main.ts, onnxruntime-node), real
// WebSockets and real signals. The harness plays the edge's part: it serves model artifacts
// behind signed URLs, builds ModelRefs from the demo model files and sends signed msgpack calls.
//
// Every child runs in its own process group (so a signal reaches the whole tree), is watched
// through MESH_PARENT_PID (it stops itself when the test process is gone), and has its stdout
// and stderr kept as parsed JSON lines so tests can count log events.

import { spawn, type ChildProcess } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { AddressInfo } from "node:net";
import { createCodec, MSGPACK_CONTENT_TYPE } from "../../protocol/codec.js";
import { isErrorCode } from "../../protocol/errors.js";
import { parseRegionInferResponse, type ModelRef, type RegionInferResponse } from "../../protocol/messages.js";
import { readOnnxSignature } from "../../formats/onnx-signature.js";
import type { RegionReport } from "../../protocol/region-report.js";
import { signRequest, signUrl, verifyUrl } from "../../protocol/signing.js";
import type { WireTensor } from "../../formats/tensor.js";
import { unpackAnswer } from "../../formats/binary-tensors.js";
import { freePort } from "../../local/free-port.js";
import { killGroupOnExit, signalGroup } from "../../local/process-group.js";
import { makeDemoMatmul, makeDemoModels, type DemoModelFile } from "../../scripts/make-demo-models.js";

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

/** One line a child printed: parsed when it is a JSON object, raw otherwise. */
export interface LogLine {
  stream: "stdout" | "stderr";
  raw: string;
  json: Record<string, unknown> | null;
}

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface Child {
  name: string;
  kind: "router" | "node";
  child: ChildProcess;
  pid: number;
  lines: LogLine[];
  /** Resolves when the process has exited (never rejects). */
  exit: Promise<ExitInfo>;
  exited: ExitInfo | null;
}

export interface InferOptions {
  /** The call's deadline, relative to now (default 20 s). */
  deadlineMs?: number;
  outputs?: string[];
  requestId?: string;
  /** Client-side bound on the HTTP exchange (default deadline + 10 s), so nothing hangs. */
  timeoutMs?: number;
  /** Extra request headers (e.g. a traceparent), besides the signature's. */
  headers?: Record<string, string>;
}

export interface InferAnswer {
  status: number;
  response: RegionInferResponse<WireTensor>;
}

/** Polls `probe` until it returns something other than undefined, or throws after timeoutMs. */
export async function waitUntil<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined> | T | undefined, everyMs = 50): Promise<T> {
  const until = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() >= until) break;
    await new Promise((r) => setTimeout(r, everyMs));
  }
  throw new Error(`${what}: not after ${timeoutMs} ms${last ? ` (last error: ${String(last)})` : ""}`);
}

/** Rejects after ms with a clear message; for racing calls that must not hang. */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout>;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}


const TSX = ["--import", "tsx"];

export class RegionHarness {
  readonly secret = randomBytes(24).toString("base64url");
  readonly nodeToken = randomBytes(24).toString("base64url");
  readonly region: string;
  /** Marks this harness's children (MESH_HARNESS_ID in their environment). */
  readonly id = randomBytes(6).toString("hex");
  readonly children = new Map<string, Child>();
  /** Artifact requests answered (200) and refused (403), by the artifact server. */
  readonly artifactHits = { served: 0, refused: 0 };
  routerPort = 0;
  private readonly codec = createCodec();
  private readonly files = new Map<string, DemoModelFile>();
  private readonly artifacts = new Map<string, string>(); // sha256 -> path
  private readonly refs = new Map<string, ModelRef>();
  private artifactServer: Server | null = null;
  private artifactOrigin = "";
  private nodeCount = 0;

  private constructor(
    readonly dir: string,
    region: string,
  ) {
    this.region = region;
  }

  /** A harness with the demo models written and the artifact server listening. */
  static async create(region = "test-region"): Promise<RegionHarness> {
    const dir = await mkdtemp(join(tmpdir(), "region-harness-"));
    const h = new RegionHarness(dir, region);
    const models = join(dir, "models");
    for (const f of [...(await makeDemoModels(models)), await makeDemoMatmul(models)]) h.files.set(`${f.name}@${f.version}`, f);
    await h.startArtifactServer();
    return h;
  }

  get routerUrl(): string {
    return `http://127.0.0.1:${this.routerPort}`;
  }

  get nodeSocketUrl(): string {
    return `ws://127.0.0.1:${this.routerPort}/v1/nodes`;
  }

  // ------------------------------------------------------------------ artifacts and models

  private async startArtifactServer(): Promise<void> {
    const server = createServer((req, res) => {
      void (async () => {
        const url = new URL(req.url ?? "/", this.artifactOrigin);
        const sha = /^\/artifacts\/([0-9a-f]{64})$/.exec(url.pathname)?.[1];
        const path = sha ? this.artifacts.get(sha) : undefined;
        const check = await verifyUrl(this.secret, url);
        if (req.method !== "GET" || !check.ok || !path) {
          this.artifactHits.refused++;
          res.writeHead(check.ok ? 404 : 403, { "content-type": "text/plain" }).end(check.ok ? "not found" : check.reason);
          return;
        }
        const bytes = (await readFile(path)).length;
        this.artifactHits.served++;
        res.writeHead(200, { "content-type": "application/octet-stream", "content-length": String(bytes) });
        createReadStream(path).pipe(res);
      })().catch((err) => res.writeHead(500).end(String(err)));
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    this.artifactServer = server;
    this.artifactOrigin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  }

  /** A signed URL for an artifact on this harness's server (what the edge hands to nodes). */
  artifactUrl(sha256: string, expires = Date.now() + 3_600_000): Promise<string> {
    return signUrl(this.secret, new URL(`/artifacts/${sha256}`, this.artifactOrigin), this.region, expires);
  }

  /** The ModelRef of a demo model (demo-mlp 1/2, demo-types 1, demo-matmul 1), key `name@version`. */
  async model(name: string, version: number | string = 1, signature?: ModelRef["signature"]): Promise<ModelRef> {
    const k = `${name}@${version}`;
    const cached = this.refs.get(k);
    if (cached) return cached;
    const file = this.files.get(k);
    if (!file) throw new Error(`no demo model ${k}`);
    const bytes = await readFile(file.path);
    const sha256 = createHash("sha256").update(bytes).digest("hex");
    // A given signature stands in for reading one: hostile files the edge's reader would refuse.
    const info = signature ?? readOnnxSignature(bytes);
    this.artifacts.set(sha256, file.path);
    const ref: ModelRef = {
      key: k,
      account: "acct-test",
      name,
      version: Number(version),
      sha256,
      size: bytes.length,
      artifactUrl: await this.artifactUrl(sha256),
      signature: { inputs: info.inputs, outputs: info.outputs },
    };
    this.refs.set(k, ref);
    return ref;
  }

  /**
   * Serves a test's own model file as `name@version` (no edge upload checks: what a node does
   * with a hostile file). `signature` is needed where the ONNX reader would refuse the file.
   */
  async addModel(name: string, version: number, bytes: Uint8Array, signature?: ModelRef["signature"]): Promise<ModelRef> {
    const path = join(this.dir, "models", `${name}.v${version}.onnx`);
    await writeFile(path, bytes);
    this.files.set(`${name}@${version}`, { name, version: String(version), path });
    return this.model(name, version, signature);
  }

  /**
   * Serves a bundle directory as `name@version`: `graph` is its ONNX file, `files` the others
   * (tokenizer.json, config.json ...), each under a signed URL, as the edge sends a bundle.
   */
  async addBundle(name: string, version: number, dir: string, graph: string, files: string[]): Promise<ModelRef> {
    const k = `${name}@${version}`;
    const cached = this.refs.get(k);
    if (cached) return cached;
    const serve = async (path: string) => {
      const bytes = await readFile(path);
      const sha256 = createHash("sha256").update(bytes).digest("hex");
      this.artifacts.set(sha256, path);
      return { bytes, sha256 };
    };
    const g = await serve(join(dir, graph));
    const info = readOnnxSignature(g.bytes);
    const ref: ModelRef = {
      key: k,
      account: "acct-test",
      name,
      version,
      sha256: g.sha256,
      size: g.bytes.length,
      artifactUrl: await this.artifactUrl(g.sha256),
      signature: { inputs: info.inputs, outputs: info.outputs },
      files: await Promise.all(
        files.map(async (f) => {
          const { bytes, sha256 } = await serve(join(dir, f));
          return { name: f, sha256, size: bytes.length, url: await this.artifactUrl(sha256) };
        }),
      ),
    };
    this.refs.set(k, ref);
    return ref;
  }

  // ------------------------------------------------------------------ processes

  private spawnChild(name: string, kind: Child["kind"], script: string, env: Record<string, string>): Child {
    if (this.children.get(name)?.exited === null) throw new Error(`${name} is already running`);
    const child = spawn(process.execPath, [...TSX, join(ROOT, script)], {
      cwd: ROOT,
      env: { ...process.env, MESH_PARENT_PID: String(process.pid), MESH_HARNESS_ID: this.id, ...env },
      stdio: ["ignore", "pipe", "pipe"],
      detached: true, // own process group: signals reach the whole tree
    });
    if (child.pid === undefined) throw new Error(`could not start ${name}`);
    killGroupOnExit(child); // killed on the way out, whatever happens
    const c: Child = {
      name,
      kind,
      child,
      pid: child.pid,
      lines: [],
      exited: null,
      // 'close', not 'exit': by then stdout and stderr are read to the end, so every line the
      // child printed is in `lines`.
      exit: new Promise<ExitInfo>((res) => {
        child.once("close", (code, signal) => {
          c.exited = { code, signal };
          res(c.exited);
        });
      }),
    };
    const collect = (stream: LogLine["stream"]) => {
      let rest = "";
      child[stream]!.setEncoding("utf8");
      child[stream]!.on("data", (chunk: string) => {
        const parts = (rest + chunk).split("\n");
        rest = parts.pop() ?? "";
        for (const raw of parts) if (raw.trim()) c.lines.push(parseLine(stream, raw));
      });
      child[stream]!.on("end", () => {
        if (rest.trim()) c.lines.push(parseLine(stream, rest));
      });
    };
    collect("stdout");
    collect("stderr");
    this.children.set(name, c);
    return c;
  }

  /**
   * Starts the router (name "router") and waits for /healthz. `port` reuses a port (restart);
   * otherwise a free one is picked, retried once if another process takes it first.
   */
  async startRouter(env: Record<string, string> = {}, opts: { port?: number; timeoutMs?: number } = {}): Promise<Child> {
    for (let attempt = 0; ; attempt++) {
      const port = opts.port ?? (await freePort());
      const c = this.spawnChild("router", "router", "regions/main.ts", {
        MESH_REGION: this.region,
        PORT: String(port),
        MESH_SECRET: this.secret,
        NODE_TOKEN: this.nodeToken,
        REDIS_URL: "",
        REDIS_TOKEN: "",
        DRAIN_TIMEOUT_MS: "5000",
        ...env,
      });
      this.routerPort = port;
      try {
        await waitUntil(`router on :${port}`, opts.timeoutMs ?? 30_000, async () => {
          if (c.exited) throw new FatalChildExit(c);
          const res = await fetch(`${this.routerUrl}/healthz`, { signal: AbortSignal.timeout(2_000) });
          return res.ok ? true : undefined;
        });
        return c;
      } catch (err) {
        const inUse = c.lines.some((l) => /EADDRINUSE/.test(l.raw));
        if (opts.port === undefined && inUse && attempt === 0) {
          await c.exit;
          continue;
        }
        throw err instanceof FatalChildExit ? new Error(`router exited early (${JSON.stringify(c.exited)}):\n${tail(c)}`) : err;
      }
    }
  }

  /**
   * Starts a node agent (child name = its NODE_ID) and, unless `waitConnected` is false, waits
   * until the router's signed status lists it.
   */
  async startNode(
    id: string,
    env: Record<string, string> = {},
    opts: { waitConnected?: boolean; timeoutMs?: number } = {},
  ): Promise<Child> {
    const c = this.spawnChild(id, "node", "gpu-node/main.ts", {
      NODE_ID: id,
      ROUTER_URL: this.nodeSocketUrl,
      NODE_TOKEN: this.nodeToken,
      MODEL_CACHE_DIR: join(this.dir, "cache", `${id}-${++this.nodeCount}`),
      MESH_EXECUTION_PROVIDER: "cpu",
      DRAIN_TIMEOUT_MS: "10000",
      ...env,
    });
    if (opts.waitConnected !== false) await this.waitForNode(id, opts.timeoutMs ?? 30_000);
    return c;
  }

  /** Waits until the router lists node `id` (and the node process is still up). */
  async waitForNode(id: string, timeoutMs = 30_000): Promise<void> {
    const c = this.children.get(id);
    try {
      await waitUntil(`node ${id} connected`, timeoutMs, async () => {
        if (c?.exited) throw new FatalChildExit(c);
        return (await this.status()).nodes.some((n) => n.id === id) ? true : undefined;
      });
    } catch (err) {
      if (err instanceof FatalChildExit || c?.exited) throw new Error(`node ${id} exited (${JSON.stringify(c?.exited)}):\n${c ? tail(c) : ""}`);
      throw err;
    }
  }

  /** The router's region report, through a signed GET /v1/status. */
  async status(): Promise<RegionReport> {
    const headers = await signRequest(this.secret, "GET", "/v1/status");
    const res = await fetch(`${this.routerUrl}/v1/status`, { headers, signal: AbortSignal.timeout(5_000) });
    if (!res.ok) throw new Error(`GET /v1/status -> ${res.status}: ${await res.text()}`);
    return (await res.json()) as RegionReport;
  }

  child(name: string): Child {
    const c = this.children.get(name);
    if (!c) throw new Error(`no child named ${name}`);
    return c;
  }

  /** Sends a signal to a child's process group (no-op when it has exited). */
  kill(name: string, signal: NodeJS.Signals = "SIGTERM"): void {
    const c = this.child(name);
    if (c.exited) return;
    signalGroup(c.child, signal);
  }

  /** The child's exit, bounded: throws if it is still running after timeoutMs. */
  waitExit(name: string, timeoutMs = 15_000): Promise<ExitInfo> {
    const c = this.child(name);
    return within(c.exit, timeoutMs, `exit of ${name}`);
  }

  /** Stops every child: nodes first, then the router; SIGTERM, then SIGKILL after graceMs. */
  async stopAll(graceMs = 3_000): Promise<void> {
    const stop = async (c: Child) => {
      if (c.exited) return;
      this.kill(c.name, "SIGTERM");
      const timer = setTimeout(() => this.kill(c.name, "SIGKILL"), graceMs);
      await c.exit;
      clearTimeout(timer);
      // Anything left in the group (there should be nothing) goes too.
      signalGroup(c.child, "SIGKILL");
    };
    const all = [...this.children.values()];
    await Promise.all(all.filter((c) => c.kind === "node").map(stop));
    await Promise.all(all.filter((c) => c.kind === "router").map(stop));
  }

  /** stopAll, then the artifact server and the temporary directory. */
  async close(): Promise<void> {
    await this.stopAll();
    await new Promise<void>((r) => {
      if (!this.artifactServer) return r();
      this.artifactServer.close(() => r());
      this.artifactServer.closeAllConnections(); // keep-alive sockets would hold close() open
    });
    await rm(this.dir, { recursive: true, force: true });
  }

  // ------------------------------------------------------------------ logs

  /** Parsed log lines of a child whose `msg` is `msg` (and whose fields match `where`). */
  events(name: string, msg: string, where: Record<string, unknown> = {}): Record<string, unknown>[] {
    const c = this.children.get(name);
    if (!c) return [];
    return c.lines
      .map((l) => l.json)
      .filter((j): j is Record<string, unknown> => j !== null && j.msg === msg && Object.entries(where).every(([k, v]) => j[k] === v));
  }

  count(name: string, msg: string, where: Record<string, unknown> = {}): number {
    return this.events(name, msg, where).length;
  }

  /** The last lines a child printed, for failure messages. */
  tail(name: string, n = 30): string {
    const c = this.children.get(name);
    return c ? tail(c, n) : `(no child ${name})`;
  }

  /**
   * The number of `msg` lines once there are at least `atLeast` (or when timeoutMs has passed):
   * a child's log line can reach us after the network answer that followed it.
   */
  async waitForCount(name: string, msg: string, atLeast: number, where: Record<string, unknown> = {}, timeoutMs = 10_000): Promise<number> {
    try {
      return await waitUntil(`${name} logging '${msg}' ${atLeast}x`, timeoutMs, () => {
        const n = this.count(name, msg, where);
        return n >= atLeast ? n : undefined;
      }, 20);
    } catch {
      return this.count(name, msg, where);
    }
  }

  waitForLog(name: string, msg: string, where: Record<string, unknown> = {}, timeoutMs = 15_000): Promise<Record<string, unknown>> {
    return waitUntil(`${name} logging '${msg}'`, timeoutMs, () => this.events(name, msg, where)[0]);
  }

  // ------------------------------------------------------------------ calls

  /** POSTs a signed msgpack RegionInferRequest to the router and decodes the msgpack answer. */
  async infer(ref: ModelRef, inputs: WireTensor[], opts: InferOptions = {}): Promise<InferAnswer> {
    const deadlineMs = opts.deadlineMs ?? 20_000;
    const requestId = opts.requestId ?? `req_${randomBytes(6).toString("hex")}`;
    const body = this.codec.encode({
      requestId,
      model: ref,
      inputs,
      ...(opts.outputs ? { outputs: opts.outputs } : {}),
      deadline: Date.now() + deadlineMs,
    });
    const headers = {
      ...(await signRequest(this.secret, "POST", "/v1/infer", body)),
      "content-type": MSGPACK_CONTENT_TYPE,
      "x-request-id": requestId,
      ...opts.headers,
    };
    const res = await fetch(`${this.routerUrl}/v1/infer`, {
      method: "POST",
      headers,
      body,
      signal: AbortSignal.timeout(opts.timeoutMs ?? deadlineMs + 10_000),
    });
    const bytes = new Uint8Array(await res.arrayBuffer());
    if ((res.headers.get("content-type") ?? "").startsWith(MSGPACK_CONTENT_TYPE)) {
      return { status: res.status, response: unpackAnswer(parseRegionInferResponse(this.codec.decode(bytes))) };
    }
    // Refusals before the body is read (401, 413) come in the JSON error envelope.
    const text = new TextDecoder().decode(bytes);
    let parsed: { code?: unknown; error?: unknown } = {};
    try {
      parsed = JSON.parse(text) as typeof parsed;
    } catch {
      /* not JSON */
    }
    return {
      status: res.status,
      response: { ok: false, code: isErrorCode(parsed.code) ? parsed.code : "internal_error", message: String(parsed.error ?? text) },
    };
  }
}

class FatalChildExit extends Error {
  constructor(readonly c: Child) {
    super(`${c.name} exited`);
  }
}

function parseLine(stream: LogLine["stream"], raw: string): LogLine {
  let json: Record<string, unknown> | null = null;
  if (raw.startsWith("{")) {
    try {
      const v: unknown = JSON.parse(raw);
      if (v && typeof v === "object" && !Array.isArray(v)) json = v as Record<string, unknown>;
    } catch {
      /* not JSON */
    }
  }
  return { stream, raw, json };
}

function tail(c: Child, n = 30): string {
  return c.lines
    .slice(-n)
    .map((l) => l.raw)
    .join("\n");
}

// ------------------------------------------------------------------ tensors

/** A FP32 tensor from rows (row-major). */
export function fp32(name: string, rows: number[][]): WireTensor {
  const cols = rows[0]?.length ?? 0;
  return { name, datatype: "FP32", shape: [rows.length, cols], data: Float32Array.from(rows.flat()) };
}

/** A tensor's data as rows of numbers (2-D tensors). */
export function rowsOf(t: WireTensor): number[][] {
  const [r, c] = t.shape as [number, number];
  const flat = Array.from(t.data as ArrayLike<number>, Number);
  return Array.from({ length: r }, (_, i) => flat.slice(i * c, (i + 1) * c));
}

/** Largest absolute difference between two equally shaped matrices (Infinity if shapes differ). */
export function maxDiff(actual: number[][], expected: number[][]): number {
  if (actual.length !== expected.length) return Infinity;
  let m = 0;
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i]!;
    const e = expected[i]!;
    if (a.length !== e.length) return Infinity;
    for (let j = 0; j < a.length; j++) m = Math.max(m, Math.abs(a[j]! - e[j]!));
  }
  return m;
}

/** pids of live processes started by harness `id` (read from /proc; Linux only, else []). */
export async function harnessPids(id: string): Promise<number[]> {
  const { readdir } = await import("node:fs/promises");
  let entries: string[];
  try {
    entries = await readdir("/proc");
  } catch {
    return [];
  }
  const pids: number[] = [];
  for (const e of entries) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const env = await readFile(`/proc/${e}/environ`, "latin1");
      if (env.split("\0").includes(`MESH_HARNESS_ID=${id}`)) pids.push(Number(e));
    } catch {
      /* gone or not ours to read */
    }
  }
  return pids;
}
