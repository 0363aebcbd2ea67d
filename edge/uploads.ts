// Resumable multipart uploads of model files too big for one request body (issue 11): the
// bytes go straight into an R2 multipart upload part by part (each part is one Worker request
// of at most MAX_PART_BYTES), and at completion the assembled object is read back as a stream:
// its sha256 and its ONNX signature are computed chunk by chunk, so the Worker never holds a
// model in memory. A refused file leaves nothing behind.
//
// The state of an upload lives in R2 beside its bytes, not in D1: a record object per upload
// and a small object per part (its etag and size in custom metadata), all under
// uploads/{account}/{upload}/. The binding's multipart API has no "list parts", so the part
// objects are what a client lists to resume; the account is in every key, so another
// account's upload id names nothing (404); counting an account's open uploads is one list.
// No migration, and no write to the shared database per part.
//
// Bundles (a graph plus its ONNX external-data files) reuse the same uploads: a data file is an
// upload of kind "file", completed by its sha256 alone (no ONNX reading) into the same content
// address as artifacts, plus a small marker bundle-files/{account}/{sha256} saying this account
// uploaded those bytes and their size. The graph's upload then names its files {name: sha256};
// completion looks the markers up (only the account's own files can be named) and refuses a
// graph whose external references name anything else or read past a file's end.

import { MeshError } from "../protocol/errors.js";
import { checkExternalData, OnnxParseError, OnnxSignatureReader, type OnnxModelInfo } from "../formats/onnx-signature.js";
import { toHex } from "../protocol/signing.js";
import { randomId } from "./key-format.js";

/** A part is one request body: R2 wants every part but the last at least 5 MiB, all the same size. */
export const MIN_PART_BYTES = 5 * 1024 * 1024;
export const MAX_PART_BYTES = 64 * 1024 * 1024;
export const DEFAULT_PART_BYTES = 16 * 1024 * 1024;
/** R2's limit on parts per multipart upload. */
export const MAX_PARTS = 10_000;
/** Defaults of the configurable bounds (MAX_UPLOAD_BYTES, MAX_OPEN_UPLOADS). */
export const DEFAULT_MAX_UPLOAD_BYTES = 50 * 1024 ** 3;
export const DEFAULT_MAX_OPEN_UPLOADS = 8;
/** An upload not completed within this long is gone (R2 itself aborts multipart uploads after 7 days). */
export const UPLOAD_TTL_MS = 24 * 60 * 60 * 1000;
/** How long one complete() holds an upload against a second, concurrent one. */
const COMPLETE_LEASE_MS = 15 * 60 * 1000;
/** Copying the verified object to its content address: ranged reads of (at least) this size, one part each, this many at once. */
const COPY_PART_BYTES = 16 * 1024 * 1024;
const COPY_CONCURRENCY = 4;
/** Files uploaded alongside a single-file version: none. */
export const NO_BUNDLE_FILES: ReadonlySet<string> = new Set();

export const UPLOAD_ID_RE = /^upl_[A-Za-z0-9]{16}$/;

export interface UploadRecord {
  id: string;
  accountId: string;
  modelId: string;
  model: string;
  size: number;
  partSize: number;
  parts: number;
  /** The client's sha256 of the whole file, if it sent one: it finds the upload to resume, and completion checks it. */
  sha256: string | null;
  r2UploadId: string;
  createdAt: number;
  expiresAt: number;
  /** "file": a bundle's data file (completed by sha256 alone); absent or "model": a graph, completed into a version. */
  kind?: "model" | "file";
  /** A graph's bundle files, name to sha256 (each a completed "file" upload of the account). */
  files?: Record<string, string>;
  /** Set once R2 assembled the parts (the multipart upload is gone; the staging object holds the file). */
  assembled: boolean;
  /** A complete() in progress holds the upload until then (ms). */
  completingUntil: number;
}

export interface UploadLimits {
  maxUploadBytes: number;
  maxOpenUploads: number;
}

const prefixOf = (accountId: string, id: string) => `uploads/${accountId}/${id}/`;
const recordKey = (u: Pick<UploadRecord, "accountId" | "id">) => `${prefixOf(u.accountId, u.id)}upload.json`;
const partKey = (u: Pick<UploadRecord, "accountId" | "id">, n: number) => `${prefixOf(u.accountId, u.id)}parts/${String(n).padStart(5, "0")}`;
/** Where R2 assembles the file; it is copied to its content address once verified. */
const stagingKey = (u: Pick<UploadRecord, "accountId" | "id">) => `${prefixOf(u.accountId, u.id)}model.onnx`;

/** The length part `n` (1-based) must have. */
export function partLength(u: Pick<UploadRecord, "size" | "partSize" | "parts">, n: number): number {
  return n < u.parts ? u.partSize : u.size - (u.parts - 1) * u.partSize;
}

export function describeUpload(u: UploadRecord) {
  return {
    uploadId: u.id,
    model: u.model,
    kind: u.kind ?? "model",
    ...(u.files ? { files: u.files } : {}),
    size: u.size,
    partSize: u.partSize,
    parts: u.parts,
    sha256: u.sha256,
    createdAt: u.createdAt,
    expiresAt: u.expiresAt,
  };
}

async function readRecord(bucket: R2Bucket, accountId: string, id: string): Promise<{ record: UploadRecord; etag: string } | null> {
  const obj = await bucket.get(recordKey({ accountId, id }));
  if (!obj) return null;
  return { record: (await obj.json()) as UploadRecord, etag: obj.etag };
}

/** Everything an upload left in R2 (record, parts, staging object, the R2 multipart upload). */
export async function discardUpload(bucket: R2Bucket, u: UploadRecord): Promise<void> {
  if (!u.assembled) {
    try {
      await bucket.resumeMultipartUpload(stagingKey(u), u.r2UploadId).abort();
    } catch {
      // Already completed, aborted or expired on R2's side: nothing left to abort.
    }
  }
  const keys: string[] = [stagingKey(u), recordKey(u)];
  let cursor: string | undefined;
  do {
    const page = await bucket.list({ prefix: `${prefixOf(u.accountId, u.id)}parts/`, cursor });
    keys.push(...page.objects.map((o) => o.key));
    cursor = page.truncated ? page.cursor : undefined;
  } while (cursor);
  for (let i = 0; i < keys.length; i += 1000) await bucket.delete(keys.slice(i, i + 1000));
}

/**
 * The account's uploads, oldest first; expired ones are discarded on the way (they count
 * against nothing once gone). `model` narrows to one model.
 */
export async function listUploads(bucket: R2Bucket, accountId: string, modelId?: string): Promise<UploadRecord[]> {
  const ids: string[] = [];
  let cursor: string | undefined;
  do {
    const page = await bucket.list({ prefix: `uploads/${accountId}/`, delimiter: "/", cursor });
    for (const p of page.delimitedPrefixes) ids.push(p.split("/")[2]!);
    cursor = page.truncated ? page.cursor : undefined;
  } while (cursor);
  const out: UploadRecord[] = [];
  const now = Date.now();
  for (const id of ids) {
    const found = await readRecord(bucket, accountId, id);
    if (!found) continue;
    if (found.record.expiresAt <= now) await discardUpload(bucket, found.record);
    else if (modelId === undefined || found.record.modelId === modelId) out.push(found.record);
  }
  return out.sort((a, b) => a.createdAt - b.createdAt);
}

export async function createUpload(
  bucket: R2Bucket,
  limits: UploadLimits,
  owner: { accountId: string; modelId: string; model: string },
  req: { size: number; partSize?: number | undefined; sha256?: string | undefined; kind?: "model" | "file" | undefined; files?: Record<string, string> | undefined },
): Promise<UploadRecord> {
  if (req.kind === "file" && req.files) throw new MeshError("bad_request", "a data file ('kind': 'file') names no 'files'; the graph's upload does");
  if (req.size > limits.maxUploadBytes) throw new MeshError("payload_too_large", `the file is ${req.size} bytes; uploads take at most ${limits.maxUploadBytes}`);
  const partSize = req.partSize ?? Math.max(DEFAULT_PART_BYTES, Math.ceil(req.size / MAX_PARTS / (1024 * 1024)) * 1024 * 1024);
  if (partSize < MIN_PART_BYTES || partSize > MAX_PART_BYTES) throw new MeshError("bad_request", `'partSize' must be ${MIN_PART_BYTES} to ${MAX_PART_BYTES} bytes`);
  const parts = Math.max(1, Math.ceil(req.size / partSize));
  if (parts > MAX_PARTS) throw new MeshError("bad_request", `${parts} parts of ${partSize} bytes; at most ${MAX_PARTS} parts: choose a larger 'partSize'`);
  const open = await listUploads(bucket, owner.accountId);
  if (open.length >= limits.maxOpenUploads) {
    throw new MeshError("conflict", `the account has ${open.length} uploads open (at most ${limits.maxOpenUploads}): complete or abort one (DELETE /v1/models/{m}/uploads/{id})`);
  }
  const id = randomId("upl_");
  const base = { id, accountId: owner.accountId };
  const multipart = await bucket.createMultipartUpload(stagingKey(base), { httpMetadata: { contentType: "application/octet-stream" } });
  const now = Date.now();
  const record: UploadRecord = {
    ...base,
    modelId: owner.modelId,
    model: owner.model,
    size: req.size,
    partSize,
    parts,
    sha256: req.sha256 ?? null,
    ...(req.kind === "file" ? { kind: "file" as const } : {}),
    ...(req.files && Object.keys(req.files).length > 0 ? { files: req.files } : {}),
    r2UploadId: multipart.uploadId,
    createdAt: now,
    expiresAt: now + UPLOAD_TTL_MS,
    assembled: false,
    completingUntil: 0,
  };
  await bucket.put(recordKey(record), JSON.stringify(record));
  return record;
}

/** The caller's upload of this model, or 404 (another account's, another model's, expired, or none). */
export async function requireUpload(bucket: R2Bucket, accountId: string, modelId: string, id: string): Promise<{ record: UploadRecord; etag: string }> {
  const found = UPLOAD_ID_RE.test(id) ? await readRecord(bucket, accountId, id) : null;
  if (!found || found.record.modelId !== modelId) throw new MeshError("not_found", `no upload '${id}' for this model`);
  if (found.record.expiresAt <= Date.now()) {
    await discardUpload(bucket, found.record);
    throw new MeshError("not_found", `upload '${id}' expired`);
  }
  return found;
}

export interface UploadedPart {
  partNumber: number;
  size: number;
  etag: string;
}

export async function listParts(bucket: R2Bucket, u: UploadRecord): Promise<UploadedPart[]> {
  const out: UploadedPart[] = [];
  let cursor: string | undefined;
  do {
    // `include` is R2's (and Miniflare's) list option for metadata; workers-types omits it.
    const page = await bucket.list({ prefix: `${prefixOf(u.accountId, u.id)}parts/`, cursor, include: ["customMetadata"] } as R2ListOptions);
    for (const o of page.objects) {
      const m = o.customMetadata ?? {};
      out.push({ partNumber: Number(o.key.slice(o.key.lastIndexOf("/") + 1)), size: Number(m.size), etag: m.etag ?? "" });
    }
    cursor = page.truncated ? page.cursor : undefined;
  } while (cursor);
  return out.sort((a, b) => a.partNumber - b.partNumber);
}

/**
 * Stores part `n`. `body` is the request's stream when its length is known (Content-Length),
 * else its bytes; either way exactly partLength(n) bytes. Sending a part again replaces it.
 */
export async function putPart(bucket: R2Bucket, u: UploadRecord, n: number, body: ReadableStream | ArrayBuffer): Promise<UploadedPart> {
  if (u.assembled || u.completingUntil > Date.now()) throw new MeshError("conflict", `upload '${u.id}' is being completed; it takes no more parts`);
  const part = await bucket.resumeMultipartUpload(stagingKey(u), u.r2UploadId).uploadPart(n, body);
  const size = partLength(u, n);
  await bucket.put(partKey(u, n), "", { customMetadata: { etag: part.etag, size: String(size) } });
  return { partNumber: n, size, etag: part.etag };
}

/** What completion hands to the version insert: the verified file at its content address. */
export interface VerifiedFile {
  sha256: string;
  size: number;
  /** The graph's signature; null for a bundle's data file (not ONNX, never parsed). */
  info: OnnxModelInfo | null;
}

const bundleFileKey = (accountId: string, sha256: string) => `bundle-files/${accountId}/${sha256}`;

/** Notes that `accountId` uploaded a data file with these bytes: only such files can join its bundles. */
export async function recordBundleFile(bucket: R2Bucket, accountId: string, file: { sha256: string; size: number }): Promise<void> {
  await bucket.put(bundleFileKey(accountId, file.sha256), "", { customMetadata: { size: String(file.size) } });
}

/** A graph upload's files with their sizes; a sha256 the account never uploaded as a data file is refused. */
export async function bundleFiles(bucket: R2Bucket, accountId: string, files: Record<string, string>): Promise<{ name: string; sha256: string; size: number }[]> {
  const out: { name: string; sha256: string; size: number }[] = [];
  for (const [name, sha256] of Object.entries(files)) {
    const head = await bucket.head(bundleFileKey(accountId, sha256));
    const size = Number(head?.customMetadata?.size);
    if (!head || !Number.isSafeInteger(size)) throw new MeshError("bad_request", `bundle file '${name}': no data file with sha256 ${sha256} was uploaded by this account (upload it first with 'kind': 'file')`);
    out.push({ name, sha256, size });
  }
  return out;
}

/**
 * Completes an upload: R2 assembles the parts, the file is read back once as a stream (sha256
 * and ONNX signature together), refused files are deleted with everything else of the upload,
 * and an accepted one is copied to `destKey(sha256)` (unless those bytes are there already;
 * when the client announced the sha256, the copy runs while the file is verified).
 * The upload's own objects are removed by discardUpload once the version is recorded.
 */
export async function completeUpload(
  bucket: R2Bucket,
  found: { record: UploadRecord; etag: string },
  destKey: (sha256: string) => string,
  ownFiles: ReadonlyMap<string, number> = new Map(),
): Promise<VerifiedFile> {
  const dataFile = found.record.kind === "file";
  let u = found.record;
  const now = Date.now();
  if (u.completingUntil > now) throw new MeshError("conflict", `upload '${u.id}' is already being completed`);
  // Claim it: a conditional write, so two concurrent completes cannot both proceed.
  u = { ...u, completingUntil: now + COMPLETE_LEASE_MS };
  const claimed = await bucket.put(recordKey(u), JSON.stringify(u), { onlyIf: { etagMatches: found.etag } });
  if (!claimed) throw new MeshError("conflict", `upload '${u.id}' is already being completed`);
  try {
    if (!u.assembled) {
      const parts = await listParts(bucket, u);
      const have = new Set(parts.map((p) => p.partNumber));
      const missing: number[] = [];
      for (let n = 1; n <= u.parts && missing.length < 20; n++) if (!have.has(n)) missing.push(n);
      if (missing.length > 0) throw new MeshError("bad_request", `upload '${u.id}' lacks part(s) ${missing.join(", ")} of ${u.parts}`);
      await bucket.resumeMultipartUpload(stagingKey(u), u.r2UploadId).complete(parts.map((p) => ({ partNumber: p.partNumber, etag: p.etag })));
      u = { ...u, assembled: true };
      await bucket.put(recordKey(u), JSON.stringify(u));
    }
    // With a sha256 announced, the copy to that content address runs beside the verification,
    // into a multipart upload completed only once the file proved to be those bytes: a file
    // that lies about its hash never touches the object at the address it named.
    const announced = u.sha256 !== null && !(await bucket.head(destKey(u.sha256))) ? await startCopy(bucket, stagingKey(u), destKey(u.sha256), u.size) : null;
    let verified: VerifiedFile;
    try {
      verified = await verifyObject(bucket, stagingKey(u), u.size, !dataFile);
      if (u.sha256 !== null && u.sha256 !== verified.sha256) {
        throw new OnnxParseError(`the assembled file's sha256 is ${verified.sha256}, not the ${u.sha256} announced when the upload was created (a part was damaged or sent for another file)`);
      }
      // A tenant's file must not read other files on the node: a single-file version brings
      // none, a bundle only its own files, each read within its size.
      if (verified.info) checkExternalData(verified.info, ownFiles.size > 0 ? ownFiles : NO_BUNDLE_FILES);
    } catch (err) {
      await announced?.abort();
      if (!(err instanceof OnnxParseError)) throw err;
      await discardUpload(bucket, u);
      throw new MeshError("invalid_model_file", err.message);
    }
    if (announced) await announced.complete();
    else if (!(await bucket.head(destKey(verified.sha256)))) await (await startCopy(bucket, stagingKey(u), destKey(verified.sha256), u.size)).complete();
    return verified;
  } catch (err) {
    // Not refused for its content: the upload stays, and complete may be called again.
    if (!(err instanceof MeshError && err.code === "invalid_model_file")) {
      await bucket.put(recordKey(u), JSON.stringify({ ...u, completingUntil: 0 })).catch(() => undefined);
    }
    throw err;
  }
}

/** One pass over the stored object: sha256 (crypto.DigestStream) and, for a graph, the ONNX signature. */
export async function verifyObject(bucket: R2Bucket, key: string, size: number, onnx = true): Promise<VerifiedFile> {
  const obj = await bucket.get(key);
  if (!obj) throw new MeshError("internal_error", "the assembled upload is missing");
  if (obj.size !== size) throw new OnnxParseError(`the assembled file has ${obj.size} bytes, not the ${size} announced`);
  const digest = new crypto.DigestStream("SHA-256");
  const hash = digest.getWriter();
  const sig = onnx ? new OnnxSignatureReader(size) : null;
  const reader = obj.body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      sig?.push(value); // throws at the first sign of a bad file: the rest is never read
      await hash.write(value);
    }
  } catch (err) {
    await reader.cancel().catch(() => undefined);
    await hash.abort().catch(() => undefined);
    throw err;
  }
  const info = sig ? sig.end() : null;
  await hash.close();
  return { sha256: toHex(await digest.digest), size, info };
}

/**
 * Starts copying an object within the bucket (the binding has no copy): ranged reads streamed
 * into the parts of a multipart upload at `to`, a few at once, never held in memory. Nothing
 * appears at `to` until complete(); abort() drops what was copied.
 */
async function startCopy(bucket: R2Bucket, from: string, to: string, size: number): Promise<{ complete(): Promise<void>; abort(): Promise<void> }> {
  const partSize = Math.max(COPY_PART_BYTES, Math.ceil(size / MAX_PARTS / MIN_PART_BYTES) * MIN_PART_BYTES);
  const count = Math.ceil(size / partSize);
  const upload = await bucket.createMultipartUpload(to, { httpMetadata: { contentType: "application/octet-stream" } });
  const parts: R2UploadedPart[] = [];
  let next = 1;
  let stopped = false;
  const copyParts = async () => {
    while (!stopped && next <= count) {
      const n = next++;
      const offset = (n - 1) * partSize;
      const length = Math.min(partSize, size - offset);
      const obj = await bucket.get(from, { range: { offset, length } });
      if (!obj) throw new MeshError("internal_error", "the assembled upload is missing");
      // uploadPart needs a stream of known length; a ranged body is one, made explicit here.
      const sized = new FixedLengthStream(length);
      const [part] = await Promise.all([upload.uploadPart(n, sized.readable), obj.body.pipeTo(sized.writable)]);
      parts.push(part);
    }
  };
  const copying = Promise.all(Array.from({ length: Math.min(COPY_CONCURRENCY, count) }, copyParts));
  copying.catch(() => undefined); // observed by complete() or abort()
  const abort = async () => {
    stopped = true; // parts in flight finish; no new one starts
    await copying.catch(() => undefined);
    await upload.abort().catch(() => undefined);
  };
  return {
    abort,
    async complete() {
      try {
        await copying;
        await upload.complete(parts.sort((a, b) => a.partNumber - b.partNumber));
      } catch (err) {
        await abort();
        throw err;
      }
    },
  };
}
