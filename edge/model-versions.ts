// Versions of a model as the control plane makes and removes them: a version recorded from a
// file already at its content address (a single-body upload and a completed multipart upload
// both end in `recordVersion`), a bundle's small file stored for the account, and a version
// deleted only while nothing names it, and a generative version's tokenizer.json attached once
// (checked: it parses, the version is a decoder language model, its ids fit the logits). After a change that may move `latest` the warm replicas
// follow it (`republishWarmPolicy`, in the background). The routes (routes/v1_models.ts) parse
// and authorise; what is checked, stored and in which order is here.

import { and, eq, isNull } from "drizzle-orm";
import { MeshError } from "../protocol/errors.js";
import type { BundleFile } from "../protocol/messages.js";
import { checkExternalData, OnnxParseError, readOnnxSignature, type OnnxModelInfo } from "../formats/onnx-signature.js";
import { artifactKey } from "../protocol/presign.js";
import { sha256Hex } from "../protocol/signing.js";
import { loadTokenizer, TokenizerError, type Tokenizer } from "../formats/tokenizer.js";
import { modelVersions } from "../schema/schema.js";
import { randomId } from "./api-keys.js";
import type { Services } from "./context.js";
import { checkGenerativeFiles } from "./generative-bundle.js";
import { log } from "./log.js";
import { evictModel, requireModel, type ModelInfo, type VersionInfo } from "./model-registry.js";
import { generativeSignature, noteTokenizer, tokenizerKey, type TokenizerInfo } from "./tokenizers.js";
import { ruleVersions } from "./traffic.js";
import { bundleFiles, completeUpload, discardUpload, NO_BUNDLE_FILES, recordBundleFile, type UploadRecord } from "./uploads.js";
import { publishWarmPolicy } from "./warm-policies.js";

/** What changing versions touches: the request's services, D1 for the statements drizzle cannot write, the bucket. */
export interface VersionStore {
  services: Services;
  d1: D1Database;
  bucket: R2Bucket;
}

/** After a change that may move `latest`: the warm replicas follow it (in the background). */
export async function republishWarmPolicy(s: Services, accountId: string, name: string): Promise<void> {
  const fresh = await requireModel(s, accountId, name);
  if (fresh.keepWarm > 0 || fresh.replicas !== null) s.waitUntil(publishWarmPolicy(s.config, fresh));
}

/**
 * Records a new version of `model` whose bytes are already at artifactKey(sha256), and answers
 * as the upload routes do. Both the single-body upload and a completed multipart upload end here.
 */
export async function recordVersion(store: VersionStore, accountId: string, model: ModelInfo, file: { sha256: string; size: number; info: OnnxModelInfo }, files: BundleFile[] = []) {
  const { sha256, size, info } = file;
  const signature = { inputs: info.inputs, outputs: info.outputs };
  // One statement picks the next number and inserts it, so concurrent uploads cannot collide.
  const row = await store.d1
    .prepare(
      `INSERT INTO model_versions (id, model_id, version, sha256, size, runtime, signature, files)
       SELECT ?1, ?2, COALESCE(MAX(version), 0) + 1, ?3, ?4, 'onnx', ?5, ?6 FROM model_versions WHERE model_id = ?2
       RETURNING version, created_at`,
    )
    .bind(randomId("ver_"), model.id, sha256, size, JSON.stringify(signature), files.length > 0 ? JSON.stringify(files) : null)
    .first<{ version: number; created_at: number }>();
  if (!row) throw new MeshError("internal_error", "the version was not recorded");
  await evictModel(store.services, accountId, model.name);
  // `latest` moved: the warm replicas follow it.
  if (model.keepWarm > 0 || model.replicas !== null) await republishWarmPolicy(store.services, accountId, model.name);
  return {
    model: model.name,
    version: row.version,
    sha256,
    size,
    runtime: "onnx",
    irVersion: info.irVersion,
    opsetVersion: info.opsetVersion,
    inputs: info.inputs,
    outputs: info.outputs,
    ...(files.length > 0 ? { files } : {}),
    createdAt: row.created_at,
  };
}

/**
 * A version from one body: the graph's signature read (anything that is not ONNX is refused),
 * its external data confined to the files it names (each uploaded by this account), the bundle's
 * Hugging Face files checked, then the bytes stored by content and the version recorded.
 */
export async function uploadVersion(store: VersionStore, accountId: string, model: ModelInfo, bytes: Uint8Array, named: Record<string, string> | null) {
  if (bytes.length === 0) throw new MeshError("invalid_model_file", "the body is empty: send the .onnx file's bytes");
  // Named files must have been uploaded by this account (POST .../files or a 'file' upload).
  const files = named ? await bundleFiles(store.bucket, accountId, named) : [];
  let info;
  try {
    info = readOnnxSignature(bytes);
    // A tenant's file must not read other files on the node (another version's, another
    // account's): a version may read only the files it names, each within its size.
    checkExternalData(info, files.length > 0 ? new Map(files.map((f) => [f.name, f.size])) : NO_BUNDLE_FILES);
  } catch (err) {
    if (err instanceof OnnxParseError) throw new MeshError("invalid_model_file", err.message);
    throw err;
  }
  await checkGenerativeFiles(store.bucket, files, artifactKey);
  const sha256 = await storeArtifact(store.bucket, bytes);
  return recordVersion(store, accountId, model, { sha256, size: bytes.length, info }, files);
}

/**
 * Content-addressed: stored before any row points at it, so nothing ever names missing bytes;
 * a failed insert after it leaves at most an unreferenced object.
 */
async function storeArtifact(bucket: R2Bucket, bytes: Uint8Array): Promise<string> {
  const sha256 = await sha256Hex(bytes);
  await bucket.put(artifactKey(sha256), bytes, { sha256, httpMetadata: { contentType: "application/octet-stream" } });
  return sha256;
}

/** A bundle's small file in one body: at its content address and noted as the account's (as a completed upload of kind 'file'). */
export async function storeBundleFile(bucket: R2Bucket, accountId: string, bytes: Uint8Array): Promise<{ kind: "file"; sha256: string; size: number }> {
  if (bytes.length === 0) throw new MeshError("bad_request", "the body is empty: send the file's bytes");
  const sha256 = await storeArtifact(bucket, bytes);
  await recordBundleFile(bucket, accountId, { sha256, size: bytes.length });
  return { kind: "file", sha256, size: bytes.length };
}

/**
 * Completes a multipart upload: a bundle's data file (kind "file") at its content address and
 * noted as the account's, or a graph into a new version (read back as a stream, the same checks
 * as a single body). The upload's own objects go afterwards, in the background.
 */
export async function completeModelUpload(store: VersionStore, accountId: string, model: ModelInfo, found: { record: UploadRecord; etag: string }, requestId: string) {
  const { bucket } = store;
  // The bytes are at their content address once completed; the upload's own objects go.
  const discard = () =>
    store.services.waitUntil(
      discardUpload(bucket, { ...found.record, assembled: true }).catch((err) =>
        log("warn", requestId, "a completed upload's parts were not all removed", { upload: found.record.id, error: String(err) }),
      ),
    );
  if (found.record.kind === "file") {
    const data = await completeUpload(bucket, found, artifactKey);
    await recordBundleFile(bucket, accountId, data);
    discard();
    return { kind: "file" as const, sha256: data.sha256, size: data.size };
  }
  const files = found.record.files ? await bundleFiles(bucket, accountId, found.record.files) : [];
  await checkGenerativeFiles(bucket, files, artifactKey);
  const file = await completeUpload(bucket, found, artifactKey, new Map(files.map((f) => [f.name, f.size])));
  if (!file.info) throw new MeshError("internal_error", "the graph was not read");
  const version = await recordVersion(store, accountId, model, { ...file, info: file.info }, files);
  discard();
  return version;
}

/**
 * Deletes a version: one statement that only deletes when no alias and no traffic rule names
 * it, so a concurrent alias switch or rule change cannot slip between check and delete. Refused
 * with what holds it (version_in_use) or version_not_found.
 */
export async function deleteVersion(store: VersionStore, accountId: string, model: ModelInfo, version: number): Promise<void> {
  const s = store.services;
  const deleted = await store.d1
    .prepare(
      `UPDATE model_versions SET deleted_at = ?3
       WHERE model_id = ?1 AND version = ?2 AND deleted_at IS NULL
         AND NOT EXISTS (SELECT 1 FROM aliases WHERE model_id = ?1 AND version = ?2)
         AND NOT EXISTS (
           SELECT 1 FROM traffic_rules t WHERE t.model_id = ?1 AND (
             EXISTS (SELECT 1 FROM json_each(t.rule, '$.split') j WHERE json_extract(j.value, '$.version') = ?2)
             OR EXISTS (SELECT 1 FROM json_each(t.rule, '$.shadow') j WHERE json_extract(j.value, '$.version') = ?2)))
       RETURNING version`,
    )
    .bind(model.id, version, Date.now())
    .first<{ version: number }>();
  if (!deleted) {
    const live = await s.db
      .select({ version: modelVersions.version })
      .from(modelVersions)
      .where(and(eq(modelVersions.modelId, model.id), eq(modelVersions.version, version), isNull(modelVersions.deletedAt)))
      .get();
    if (!live) throw new MeshError("version_not_found", `model '${model.name}' has no version '${version}'`);
    // Name what holds it, from the freshest view.
    await evictModel(s, accountId, model.name);
    const fresh = await requireModel(s, accountId, model.name);
    const holders = [
      ...Object.entries(fresh.aliases)
        .filter(([, v]) => v === version)
        .map(([a]) => `alias '${a}'`),
      ...(ruleVersions(fresh.traffic).includes(version) ? ["the traffic rule"] : []),
    ];
    throw new MeshError("version_in_use", `version ${version} of '${model.name}' is named by ${holders.join(" and ") || "an alias or the traffic rule"}; move those first`);
  }
  await evictModel(s, accountId, model.name);
  await republishWarmPolicy(s, accountId, model.name);
}

/**
 * Checks `bytes` as `version`'s tokenizer.json, stores it under its sha256 and records it on the
 * version: once (the same file again is a no-op, another one a 409: versions are immutable).
 */
export async function attachTokenizer(
  store: VersionStore,
  model: ModelInfo,
  version: VersionInfo,
  bytes: Uint8Array,
): Promise<TokenizerInfo & { vocabSize: number }> {
  const { problem, vocab } = generativeSignature(version.signature);
  if (problem) throw new MeshError("bad_request", `version ${version.version} of '${model.name}' is not a generative model: ${problem}`);
  if (bytes.length === 0) throw new MeshError("bad_request", "the body is empty: send the tokenizer.json file");
  let tokenizer: Tokenizer;
  try {
    tokenizer = loadTokenizer(new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(bytes));
  } catch (err) {
    if (err instanceof TokenizerError) throw new MeshError("bad_request", err.message);
    if (err instanceof TypeError) throw new MeshError("bad_request", "invalid tokenizer.json: not UTF-8 text");
    throw err;
  }
  if (vocab !== null && tokenizer.vocabSize > vocab) {
    throw new MeshError("bad_request", `the tokenizer has ids up to ${tokenizer.vocabSize - 1}, but the model's logits cover ${vocab} tokens`);
  }
  const sha256 = await sha256Hex(bytes);
  // Content-addressed, stored before the row points at it.
  await store.bucket.put(tokenizerKey(sha256), bytes, { sha256, httpMetadata: { contentType: "application/json" } });
  const row = await store.d1
    .prepare(
      `UPDATE model_versions SET tokenizer_sha256 = ?1, tokenizer_size = ?2
       WHERE model_id = ?3 AND version = ?4 AND (tokenizer_sha256 IS NULL OR tokenizer_sha256 = ?1)
       RETURNING version`,
    )
    .bind(sha256, bytes.length, model.id, version.version)
    .first<{ version: number }>();
  if (!row) {
    throw new MeshError(
      "conflict",
      `version ${version.version} of '${model.name}' already has a different tokenizer; versions are immutable: upload a new version for a new tokenizer`,
    );
  }
  noteTokenizer(model.id, version.version, { sha256, size: bytes.length });
  return { sha256, size: bytes.length, vocabSize: tokenizer.vocabSize };
}
