// npm run upload -- <model.onnx> --model <name> [--file name=path ...] [--edge URL] [--key K] [--part-size MiB] [--create]
//
// Uploads a model file of any size as a new version through the edge's multipart upload routes
// (POST /v1/models/{m}/uploads, PUT .../parts/{n}, POST .../complete), with a progress bar on
// stderr. A part whose request fails is sent again (a part sent twice is replaced), and a
// re-run with the same file finds its open upload by size and sha256 and sends only the parts
// the edge lacks. Prints the new version (the edge's answer, plus uploadId and partsSent) as
// JSON on stdout. --edge and --key default to the local mesh's .mesh/local.json.
//
// A bundle (a graph whose weights are ONNX external data): each `--file name=path` is uploaded
// first the same way as a data file (kind "file"), then the graph naming them {name: sha256};
// `name` is what the graph's external-data `location` says (e.g. model.onnx.data).

import { createHash } from "node:crypto";
import { createReadStream, existsSync } from "node:fs";
import { open, readFile, stat } from "node:fs/promises";
import { basename } from "node:path";
import { localJsonPath } from "../local/mesh.js";

interface Options {
  file: string;
  model: string;
  edge: string;
  key: string;
  partSize: number | undefined;
  create: boolean;
  /** A bundle's data files: the name the graph uses, and the local path. */
  files: { name: string; path: string }[];
}

interface Upload {
  uploadId: string;
  size: number;
  partSize: number;
  parts: number;
  sha256: string | null;
  kind?: "model" | "file";
}

/** How often one part is tried before the command gives up (a re-run still resumes). */
const PART_ATTEMPTS = 8;
/** Parts in flight at once. */
const CONCURRENCY = 3;

class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

function usage(why: string): never {
  process.stderr.write(`${why}\nusage: npm run upload -- <model.onnx> --model <name> [--file name=path ...] [--edge URL] [--key K] [--part-size MiB] [--create]\n`);
  process.exit(2);
}

async function parseArgs(argv: string[]): Promise<Options> {
  let file: string | undefined;
  const flags: Record<string, string | true> = {};
  const files: Options["files"] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--create") flags.create = true;
    else if (a === "--file") {
      const v = argv[++i] ?? "";
      const eq = v.indexOf("=");
      if (eq < 1 || eq === v.length - 1) usage("--file takes name=path (name as the graph's external-data location names it)");
      files.push({ name: v.slice(0, eq), path: v.slice(eq + 1) });
    }
    else if (a.startsWith("--")) {
      const v = argv[++i];
      if (v === undefined) usage(`${a} needs a value`);
      flags[a.slice(2)] = v;
    } else if (file === undefined) file = a;
    else usage(`unexpected argument '${a}'`);
  }
  if (file === undefined) usage("name the .onnx file to upload");
  if (typeof flags.model !== "string") usage("--model <name> is required");
  let local: { edge?: string; apiKey?: string } = {};
  const localPath = localJsonPath();
  if ((flags.edge === undefined || flags.key === undefined) && existsSync(localPath)) local = JSON.parse(await readFile(localPath, "utf8"));
  const edge = typeof flags.edge === "string" ? flags.edge : local.edge;
  const key = typeof flags.key === "string" ? flags.key : local.apiKey;
  if (!edge || !key) usage(`--edge and --key are required (no local mesh at ${localPath})`);
  const mib = typeof flags["part-size"] === "string" ? Number(flags["part-size"]) : undefined;
  if (mib !== undefined && !(mib > 0)) usage("--part-size is in MiB, e.g. 16");
  return { file, model: flags.model, edge: edge.replace(/\/+$/, ""), key, partSize: mib === undefined ? undefined : Math.round(mib * 1024 * 1024), create: flags.create === true, files };
}

async function api<T>(o: Options, method: string, path: string, body?: unknown): Promise<T> {
  const send = () =>
    fetch(`${o.edge}${path}`, {
      method,
      headers: { authorization: `Bearer ${o.key}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  let res: Response;
  try {
    res = await send();
  } catch (err) {
    // A kept-alive connection closed as the request went out on it (seen on the call right after
    // a completion of tens of seconds): sent again once, except a completion, whose repeat could
    // find its upload already turned into a version (a re-run of the command says so plainly).
    if (path.endsWith("/complete")) throw err;
    await sleep(250);
    res = await send();
  }
  return (await answer(res)) as T;
}

/** The body as JSON, or the error envelope as an ApiError. */
async function answer(res: Response): Promise<unknown> {
  const text = await res.text();
  let json: Record<string, unknown> = {};
  try {
    json = JSON.parse(text);
  } catch {
    // Not JSON (a proxy's error page): the status says enough.
  }
  if (!res.ok) throw new ApiError(res.status, String(json.code ?? "http_error"), String(json.error ?? `HTTP ${res.status}`));
  return json;
}

async function sha256File(path: string, size: number, bar: Progress): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path, { highWaterMark: 4 * 1024 * 1024 })) {
    hash.update(chunk as Buffer);
    bar.add((chunk as Buffer).length);
  }
  bar.done();
  if (bar.bytes !== size) throw new Error(`${path} changed while it was read`);
  return hash.digest("hex");
}

/** A one-line progress bar on stderr (percent, MB, MB/s); a line per 10% when stderr is not a terminal. */
class Progress {
  bytes = 0;
  private readonly started = performance.now();
  private lastDraw = 0;
  private lastTenth = -1;
  constructor(
    private readonly label: string,
    private readonly total: number,
    already = 0,
  ) {
    this.bytes = already;
  }
  add(n: number): void {
    this.bytes += n;
    this.draw(false);
  }
  done(): void {
    this.draw(true);
    if (process.stderr.isTTY) process.stderr.write("\n");
  }
  private draw(force: boolean): void {
    const now = performance.now();
    const pct = this.total === 0 ? 100 : (100 * this.bytes) / this.total;
    const mbps = this.bytes / 1e6 / Math.max((now - this.started) / 1000, 1e-3);
    const line = `${this.label} ${pct.toFixed(1).padStart(5)}%  ${(this.bytes / 1e6).toFixed(1)}/${(this.total / 1e6).toFixed(1)} MB  ${mbps.toFixed(1)} MB/s`;
    if (process.stderr.isTTY) {
      if (!force && now - this.lastDraw < 100) return;
      this.lastDraw = now;
      const width = 30;
      const filled = Math.round((width * pct) / 100);
      process.stderr.write(`\r[${"#".repeat(filled)}${"-".repeat(width - filled)}] ${line}\x1b[K`);
    } else {
      const tenth = Math.floor(pct / 10);
      if (!force && tenth === this.lastTenth) return;
      this.lastTenth = tenth;
      process.stderr.write(`${line}\n`);
    }
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Whether a failed part is worth sending again: the network, a 5xx, or being throttled. */
function retryable(err: unknown): boolean {
  if (!(err instanceof ApiError)) return true;
  return err.status >= 500 || err.status === 408 || err.status === 429;
}

async function putPart(o: Options, u: Upload, n: number, bytes: Uint8Array<ArrayBuffer>): Promise<void> {
  const res = await fetch(`${o.edge}/v1/models/${encodeURIComponent(o.model)}/uploads/${u.uploadId}/parts/${n}`, {
    method: "PUT",
    headers: { authorization: `Bearer ${o.key}`, "content-type": "application/octet-stream" },
    body: bytes,
  });
  await answer(res);
}

/** Uploads one file (resuming an open upload of the same bytes) and completes it; the edge's answer. */
async function sendFile(o: Options, path: string, kind: "model" | "file", files?: Record<string, string>): Promise<Record<string, unknown>> {
  const size = (await stat(path)).size;
  const m = encodeURIComponent(o.model);
  const sha256 = await sha256File(path, size, new Progress(`hashing ${basename(path)}`, size));
  // An open upload of the same bytes: resume it.
  const open_ = (await api<{ uploads: Upload[] }>(o, "GET", `/v1/models/${m}/uploads`)).uploads;
  let u = open_.find((x) => x.size === size && x.sha256 === sha256 && (x.kind ?? "model") === kind && (o.partSize === undefined || x.partSize === o.partSize));
  if (!u) {
    u = await api<Upload>(o, "POST", `/v1/models/${m}/uploads`, {
      size,
      sha256,
      ...(o.partSize ? { partSize: o.partSize } : {}),
      ...(kind === "file" ? { kind } : {}),
      ...(files ? { files } : {}),
    });
  }
  const upload = u;
  const received = (await api<{ received: Array<{ partNumber: number; size: number }> }>(o, "GET", `/v1/models/${m}/uploads/${upload.uploadId}`)).received;
  const have = new Set(received.map((p) => p.partNumber));
  const todo: number[] = [];
  for (let n = 1; n <= upload.parts; n++) if (!have.has(n)) todo.push(n);
  const already = received.reduce((s, p) => s + p.size, 0);
  if (have.size > 0) process.stderr.write(`resuming upload ${upload.uploadId}: ${have.size} of ${upload.parts} parts already at the edge\n`);

  const bar = new Progress(`uploading ${basename(path)}`, size, already);
  const fh = await open(path, "r");
  try {
    let next = 0;
    const worker = async () => {
      while (next < todo.length) {
        const n = todo[next++]!;
        const offset = (n - 1) * upload.partSize;
        const length = Math.min(upload.partSize, size - offset);
        const bytes = new Uint8Array(length);
        await fh.read(bytes, 0, length, offset);
        for (let attempt = 1; ; attempt++) {
          try {
            await putPart(o, upload, n, bytes);
            break;
          } catch (err) {
            if (!retryable(err) || attempt >= PART_ATTEMPTS) throw err;
            process.stderr.write(`\npart ${n} failed (${(err as Error).message}); sending it again (${attempt}/${PART_ATTEMPTS - 1})\n`);
            await sleep(Math.min(250 * 2 ** attempt, 8000));
          }
        }
        bar.add(length);
      }
    };
    await Promise.all(Array.from({ length: Math.min(CONCURRENCY, todo.length) }, worker));
  } finally {
    await fh.close();
  }
  bar.done();
  process.stderr.write("completing (the edge reads the file back to check it)...\n");
  const done = await api<Record<string, unknown>>(o, "POST", `/v1/models/${m}/uploads/${upload.uploadId}/complete`);
  return { ...done, uploadId: upload.uploadId, partsSent: todo.length };
}

async function main(): Promise<void> {
  const o = await parseArgs(process.argv.slice(2));
  if (o.create) {
    try {
      await api(o, "POST", "/v1/models", { name: o.model });
    } catch (err) {
      if (!(err instanceof ApiError && err.code === "conflict")) throw err;
    }
  }
  // A bundle's data files first: the graph's upload names them by sha256.
  const files: Record<string, string> = {};
  for (const f of o.files) files[f.name] = String((await sendFile(o, f.path, "file")).sha256);
  const version = await sendFile(o, o.file, "model", o.files.length > 0 ? files : undefined);
  process.stdout.write(JSON.stringify(version, null, 2) + "\n");
}

main().catch((err: unknown) => {
  if (err instanceof ApiError) process.stderr.write(`upload failed: ${err.status} ${err.code}: ${err.message}\n`);
  else process.stderr.write(`upload failed: ${(err as Error).message}\n(run the same command again to resume)\n`);
  process.exit(1);
});
