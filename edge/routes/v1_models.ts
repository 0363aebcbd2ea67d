// Models and versions of the caller's account: create a model, upload a version as raw ONNX
// bytes (the graph's inputs and outputs are read from the file; anything that is not ONNX is
// refused), list and show them, set the warm policy, and delete a version (refused while an
// alias or a traffic rule names it). Versions are immutable and their numbers never reused.
// Files too big for one body come in parts (multipart uploads, edge/uploads.ts) and end as a
// version through the same insert. A bundle (graph plus ONNX external-data files) is uploaded
// the same way: each data file as an upload of kind "file", then the graph naming them.
// Why this shape: it reuses the multipart code whole (parts, resume, streaming verification and
// the copy to a content address) and adds only a kind and a name-to-sha256 map; a data file is
// content-addressed like an artifact, so the node fetches it through the same signed URLs.
// Small files (a bundle's tokenizer.json, its configs) may instead go up in one body
// (`POST .../files`), and a single-body version names its bundle files in `x-mesh-files`.
// A bundle's Hugging Face files (edge/generative-bundle.ts) are checked before the version is
// recorded: a version with a tokenizer.json generates text without an uploaded tokenizer.
// What is checked and stored, in which order, is edge/model-versions.ts; this file parses,
// authorises and answers.

import { artifactKey } from "../../protocol/presign.js";
import { desc, eq, sql } from "drizzle-orm";
import { z } from "zod";
import { MeshError } from "../../protocol/errors.js";
import { BUNDLE_FILE_NAME_RE, MAX_BUNDLE_FILES } from "../../protocol/messages.js";
import { models } from "../../schema/schema.js";
import { randomId } from "../api-keys.js";
import { services, type AppContext } from "../context.js";
import { checkGenerativeFiles, GENERATIVE_FILES } from "../generative-bundle.js";
import { MAX_TOKENIZER_BYTES } from "../tokenizers.js";
import { limitBody, requireKey } from "../middleware.js";
import { evictModel, MODEL_NAME_RE, requireModel, type ModelInfo } from "../model-registry.js";
import { completeModelUpload, deleteVersion, storeBundleFile, uploadVersion, type VersionStore } from "../model-versions.js";
import { TensorSpecSchema } from "../infer-request.js";
import { meshRoute, type MeshApp } from "../openapi.js";
import { bundleFiles, createUpload, describeUpload, discardUpload, listParts, listUploads, MAX_PART_BYTES, MIN_PART_BYTES, partLength, putPart, requireUpload } from "../uploads.js";
import { setWarmPolicy } from "../warm-policies.js";
import { log } from "../log.js";

export const MAX_MODEL_BYTES = 100 * 1024 * 1024;
const MAX_REPLICAS = 16;

function describe(model: ModelInfo) {
  return {
    id: model.id,
    name: model.name,
    createdAt: model.createdAt,
    keepWarm: model.keepWarm,
    replicas: model.replicas,
    regions: model.regions,
    latestVersion: model.aliases.latest ?? model.versions[0]?.version ?? null,
    aliases: model.aliases,
    traffic: model.traffic,
    versions: model.versions.map((v) => ({
      version: v.version,
      sha256: v.sha256,
      size: v.size,
      runtime: v.runtime,
      inputs: v.signature.inputs,
      outputs: v.signature.outputs,
      ...(v.files ? { files: v.files } : {}),
      createdAt: v.createdAt,
    })),
  };
}

const ModelNameSchema = z
  .string()
  .regex(MODEL_NAME_RE, "must be 1-64 characters of letters, digits, '.', '_' or '-', starting with a letter or digit");

const CreateModelSchema = z.object({ name: ModelNameSchema }).strict();

/** A bundle's files as a graph upload names them: plain file names to the sha256 of a file this account uploaded. */
const BundleFilesSchema = z
  .record(
    z.string().regex(BUNDLE_FILE_NAME_RE, "bundle file names are plain file names (letters, digits, '.', '_', '-')").refine((n) => n !== "model.onnx", "'model.onnx' is the graph's own name"),
    z.string().regex(/^[0-9a-f]{64}$/, "must be the file's sha256 as 64 lowercase hex digits"),
  )
  .refine((f) => Object.keys(f).length <= MAX_BUNDLE_FILES, `at most ${MAX_BUNDLE_FILES} files`);

const WarmPolicySchema = z
  .object({
    keepWarm: z.number().int().min(0).max(MAX_REPLICAS).optional().describe("Replicas held warm per region whatever the traffic."),
    replicas: z.number().int().min(0).max(MAX_REPLICAS).nullable().optional().describe("Exactly this many per region; null hands it back to traffic."),
    regions: z.array(z.string()).min(1).nullable().optional().describe("Data residency: the only regions that may serve the model; null: any."),
  })
  .strict()
  .refine((b) => Object.keys(b).length > 0, "send 'keepWarm', 'replicas' and/or 'regions'");

const VersionSchema = z.object({
  version: z.number().int(),
  sha256: z.string(),
  size: z.number().int(),
  runtime: z.string(),
  inputs: z.array(TensorSpecSchema),
  outputs: z.array(TensorSpecSchema),
  files: z.array(z.object({ name: z.string(), sha256: z.string(), size: z.number() })).optional().describe("A bundle's files (ONNX data, tokenizer and configs)."),
  createdAt: z.number(),
});
export const ModelSchema = z.object({
  id: z.string(),
  name: z.string(),
  createdAt: z.number(),
  keepWarm: z.number(),
  replicas: z.number().nullable(),
  regions: z.array(z.string()).nullable(),
  latestVersion: z.number().nullable().describe("What `latest` resolves to (an alias named `latest` pins it)."),
  aliases: z.record(z.string(), z.number()),
  traffic: z.unknown().nullable().describe("The traffic rule (see PUT /v1/models/{m}/traffic), or null."),
  versions: z.array(VersionSchema).describe("Live versions, newest first."),
});

/** A single-body version's bundle files, from its `x-mesh-files` header (a JSON object); none when absent. */
function headerFiles(c: AppContext): Record<string, string> | null {
  const raw = c.req.header("x-mesh-files");
  if (raw === undefined || raw.trim() === "") return null;
  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch {
    throw new MeshError("bad_request", "'x-mesh-files' must be a JSON object of file names to sha256");
  }
  const parsed = BundleFilesSchema.safeParse(json);
  if (!parsed.success) throw new MeshError("bad_request", `'x-mesh-files': ${parsed.error.issues[0]?.message ?? "invalid"}`);
  return parsed.data;
}

/** At most this many bytes in one body of `POST .../files` (a tokenizer.json at its largest). */
export const MAX_SMALL_FILE_BYTES = MAX_TOKENIZER_BYTES;

/** A raw-bytes body: Content-Type application/octet-stream (or one of `also`), else 415. */
function requireOctetStream(c: AppContext, also: string[] = []): void {
  const type = (c.req.header("content-type") ?? "").split(";")[0]!.trim().toLowerCase();
  if (type !== "application/octet-stream" && !also.includes(type)) {
    const others = also.map((t) => ` (or ${t})`).join("");
    throw new MeshError("unsupported_media_type", `send the file's bytes as the raw body with 'Content-Type: application/octet-stream'${others}`);
  }
}

const VersionCreatedSchema = z.object({
  model: z.string(),
  version: z.number(),
  sha256: z.string(),
  size: z.number(),
  runtime: z.string(),
  irVersion: z.number(),
  opsetVersion: z.number().nullable().describe("The default (ai.onnx) domain's opset; null when the graph imports none."),
  inputs: z.array(TensorSpecSchema),
  outputs: z.array(TensorSpecSchema),
  files: z.array(z.object({ name: z.string(), sha256: z.string(), size: z.number() })).optional().describe("A bundle's data files."),
  createdAt: z.number(),
});
const Sha256Schema = z.string().regex(/^[0-9a-f]{64}$/, "must be the file's sha256 as 64 lowercase hex digits");
const CreateUploadSchema = z
  .object({
    size: z.number().int().min(1).describe("The file's length in bytes."),
    partSize: z.number().int().min(MIN_PART_BYTES).max(MAX_PART_BYTES).optional().describe("Bytes per part (every part but the last); default 16 MiB, or more when the file needs over 10,000 parts."),
    sha256: Sha256Schema.optional().describe("The whole file's sha256: completion refuses a file that does not match it, and it lets a client find its upload again to resume."),
    kind: z.enum(["model", "file"]).optional().describe("'file': a bundle's data file (ONNX external data), completed by its sha256 alone; default 'model': a graph, completed into a version."),
    files: BundleFilesSchema.optional()
      .describe("A bundle's data files, as the graph's external-data `location`s name them, to the sha256 of a data file this account uploaded."),
  })
  .strict();
const UploadSchema = z.object({
  uploadId: z.string(),
  model: z.string(),
  kind: z.enum(["model", "file"]),
  files: z.record(z.string(), z.string()).optional(),
  size: z.number(),
  partSize: z.number(),
  parts: z.number().describe("How many parts: ceil(size / partSize)."),
  sha256: z.string().nullable(),
  createdAt: z.number(),
  expiresAt: z.number().describe("Past this (ms since the epoch) the upload and its parts are gone."),
});
const PartSchema = z.object({ partNumber: z.number(), size: z.number(), etag: z.string() });

/** What model-versions.ts changes versions with, from this request. */
function versionStore(c: AppContext): VersionStore {
  return { services: services(c), d1: c.env.DB, bucket: c.env.ARTIFACTS };
}

/** The upload the path names, of the model it names, of the caller's account (404 for any other). */
async function uploadAndModel(c: AppContext) {
  const accountId = c.get("key").accountId;
  const model = await requireModel(services(c), accountId, c.req.param("m")!);
  return { model, upload: await requireUpload(c.env.ARTIFACTS, accountId, model.id, c.req.param("id")!) };
}

async function uploadOf(c: AppContext) {
  return (await uploadAndModel(c)).upload;
}

/** A part number in the path: refused (400) by the route's validator unless 1-5 digits; its range is the upload's. */
const PartNumberSchema = z.string().regex(/^[0-9]{1,5}$/, "parts are numbered from 1").describe("The part number, 1 to `parts`.");
/** A version to delete is named by its number (an alias could move under the delete). */
const VersionNumberSchema = z.string().regex(/^[0-9]{1,10}$/, "name the version to delete by its number").describe("The version number.");

export function registerV1Models(app: MeshApp): void {
  const manage = requireKey("manage");
  const M = { m: "Model name." };
  const U = { ...M, id: "The upload id (upl_...), from POST /v1/models/{m}/uploads." };
  // What every route here shares: its tag, who may call, and (for all but the list) its model.
  const modelsRoute = { tag: "Models", auth: "manage", middleware: [manage] } as const;
  const modelRoute = { ...modelsRoute, params: M, errors: ["model_not_found"] } as const;
  const uploadRoute = { ...modelsRoute, params: U, errors: ["model_not_found", "not_found"] } as const;

  app.openapi(
    meshRoute({
      method: "post",
      path: "/v1/models",
      tag: "Models",
      auth: "manage",
      summary: "Create a model (no versions yet)",
      body: { schema: CreateModelSchema, maxBytes: 16 * 1024, example: { name: "my-model" } },
      responses: { 201: { description: "Created.", schema: z.object({ id: z.string(), name: z.string() }) } },
      errors: ["conflict"],
      middleware: [manage, limitBody(16 * 1024)],
    }),
    async (c) => {
      const body = c.req.valid("json");
      const accountId = c.get("key").accountId;
      const id = randomId("mdl_");
      const inserted = await c
        .get("db")
        .insert(models)
        .values({ id, accountId, name: body.name })
        .onConflictDoNothing()
        .returning({ id: models.id })
        .get();
      if (!inserted) throw new MeshError("conflict", `model '${body.name}' already exists`);
      await evictModel(services(c), accountId, body.name);
      return c.json({ id, name: body.name }, 201);
    },
  );

  app.openapi(
    meshRoute({
      ...modelsRoute,
      method: "get",
      path: "/v1/models",
      summary: "List the account's models",
      responses: {
        200: {
          description: "Newest first.",
          schema: z.object({ models: z.array(z.object({ id: z.string(), name: z.string(), createdAt: z.number(), latestVersion: z.number().nullable() })) }),
        },
      },
    }),
    async (c) => {
      const db = c.get("db");
      const rows = await db
        .select({
          id: models.id,
          name: models.name,
          createdAt: models.createdAt,
          // Written out with table names: drizzle renders a column of a one-table select
          // unqualified, so `${models.id}` inside this subquery bound to model_versions.id and
          // the list said null for every model. Same answer as describe(): the `latest` alias
          // when one pins it, else the newest version not deleted.
          latestVersion: sql<number | null>`coalesce(
            (select a.version from aliases a where a.model_id = models.id and a.name = 'latest'),
            (select max(v.version) from model_versions v where v.model_id = models.id and v.deleted_at is null))`,
        })
        .from(models)
        .where(eq(models.accountId, c.get("key").accountId))
        .orderBy(desc(models.createdAt));
      return c.json({ models: rows });
    },
  );

  app.openapi(
    meshRoute({ ...modelRoute, method: "get", path: "/v1/models/{m}", summary: "A model: versions, aliases, traffic rule, warm policy", responses: { 200: { description: "The model.", schema: ModelSchema } } }),
    async (c) => c.json(describe(await requireModel(services(c), c.get("key").accountId, c.req.param("m")))),
  );

  // Warm policy: {"keepWarm": n} is a floor of replicas per region; {"replicas": n} pins the
  // count (null hands it back to traffic). Stored in D1, then published to the routers.
  // Data residency: {"regions": [...]} restricts the model to those regions (null: any).
  app.openapi(
    meshRoute({
      method: "put",
      path: "/v1/models/{m}",
      tag: "Models",
      auth: "manage",
      summary: "Set the warm policy and data residency",
      params: M,
      body: { schema: WarmPolicySchema, maxBytes: 16 * 1024, example: { keepWarm: 1 } },
      responses: { 200: { description: "The model, and whether the routers were told.", schema: ModelSchema.extend({ policyPublished: z.boolean() }) } },
      errors: ["model_not_found"],
      middleware: [manage, limitBody(16 * 1024)],
    }),
    async (c) => {
      const s = services(c);
      const model = await requireModel(s, c.get("key").accountId, c.req.param("m"));
      const { model: fresh, published } = await setWarmPolicy(s, model, c.req.valid("json"));
      if (!published) log("warn", c.get("requestId"), "warm policy stored but not published", { model: model.name });
      return c.json({ ...describe(fresh), policyPublished: published });
    },
  );

  app.openapi(
    meshRoute({
      ...modelRoute,
      method: "post",
      path: "/v1/models/{m}/versions",
      summary: "Upload a new immutable version (the raw .onnx file)",
      description:
        "The next number (1, 2, 3 ...); `latest` follows it unless an alias `latest` pins another. " +
        "A bundle names its files in `x-mesh-files` (each uploaded first with `POST .../files` or an upload of kind `file`); with a `tokenizer.json` among them the version generates text (see /openai/v1). " +
        `Hugging Face files are checked by name: ${Object.keys(GENERATIVE_FILES).join(", ")} (JSON of their format, bounded).`,
      headers: { "x-mesh-files": 'A bundle\'s files: a JSON object of file names to sha256, e.g. {"tokenizer.json":"<sha256>"}.' },
      body: { contentType: "application/octet-stream", maxBytes: MAX_MODEL_BYTES, description: "The ONNX file's bytes." },
      responses: { 201: { description: "The version and the signature read from the file.", schema: VersionCreatedSchema } },
      errors: ["model_not_found", "invalid_model_file", "unsupported_media_type"],
      middleware: [manage, limitBody(MAX_MODEL_BYTES)],
    }),
    async (c) => {
      const accountId = c.get("key").accountId;
      const found = await requireModel(services(c), accountId, c.req.param("m"));
      requireOctetStream(c);
      const named = headerFiles(c);
      // Read whole before any refusal that needs storage: an answer sent while the caller is still
      // sending its body resets the connection under it.
      const bytes = new Uint8Array(await c.req.arrayBuffer());
      return c.json(await uploadVersion(versionStore(c), accountId, found, bytes, named), 201);
    },
  );

  // A small bundle file in one body (a tokenizer.json, a config): stored at its content address
  // and noted as the account's, as a completed upload of kind 'file' is. Checked for its shape
  // when a version names it (the name decides what it must be).
  app.openapi(
    meshRoute({
      ...modelRoute,
      method: "post",
      path: "/v1/models/{m}/files",
      summary: "Upload a small bundle file in one body (tokenizer.json, configs)",
      description: "Stored by its sha256 for this account; a version names it in `x-mesh-files` (or an upload's `files`). Larger files: an upload of kind `file`.",
      body: { contentType: "application/octet-stream", maxBytes: MAX_SMALL_FILE_BYTES, description: "The file's bytes (application/json is accepted too)." },
      responses: { 201: { description: "The file's content address.", schema: z.object({ kind: z.literal("file"), sha256: z.string(), size: z.number() }) } },
      errors: ["model_not_found", "payload_too_large", "unsupported_media_type"],
      middleware: [manage, limitBody(MAX_SMALL_FILE_BYTES)],
    }),
    async (c) => {
      const accountId = c.get("key").accountId;
      await requireModel(services(c), accountId, c.req.param("m"));
      requireOctetStream(c, ["application/json"]);
      const bytes = new Uint8Array(await c.req.arrayBuffer());
      return c.json(await storeBundleFile(c.env.ARTIFACTS, accountId, bytes), 201);
    },
  );

  // Multipart uploads (edge/uploads.ts): create, send parts (again after a failure: a part sent
  // twice is replaced), look at what arrived, complete into a version, or abort.
  app.openapi(
    meshRoute({
      ...modelRoute,
      method: "post",
      path: "/v1/models/{m}/uploads",
      summary: "Start a multipart upload (files of any size)",
      description:
        "For files too big for one body (`POST .../versions` takes at most 100 MB): send the size, then the file in parts (`PUT .../uploads/{id}/parts/{n}`), then `POST .../complete`. Every part but the last is `partSize` bytes (5-64 MiB). An upload expires 24 h after it starts; an account has at most `MAX_OPEN_UPLOADS` open (409 above), a file at most `MAX_UPLOAD_BYTES` (413). `npm run upload` does all of it, with resume.",
      body: { schema: CreateUploadSchema, maxBytes: 16 * 1024, example: { size: 734003200, sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08" } },
      responses: { 201: { description: "The upload: how many parts of what size to send.", schema: UploadSchema } },
      errors: ["model_not_found", "payload_too_large", "conflict"],
      middleware: [manage, limitBody(16 * 1024)],
    }),
    async (c) => {
      const accountId = c.get("key").accountId;
      const model = await requireModel(services(c), accountId, c.req.param("m"));
      const body = c.req.valid("json");
      // Named files must exist now (the graph's completion looks them up again), the Hugging Face
      // ones of the right shape (refused now rather than after the graph's parts went up).
      if (body.files) await checkGenerativeFiles(c.env.ARTIFACTS, await bundleFiles(c.env.ARTIFACTS, accountId, body.files), artifactKey);
      const record = await createUpload(c.env.ARTIFACTS, c.get("config").uploads, { accountId, modelId: model.id, model: model.name }, body);
      return c.json(describeUpload(record), 201);
    },
  );


  app.openapi(
    meshRoute({
      ...modelRoute,
      method: "get",
      path: "/v1/models/{m}/uploads",
      summary: "The model's open uploads",
      description: "Oldest first; a client resuming finds its upload here by `size` and `sha256`.",
      responses: { 200: { description: "Open uploads.", schema: z.object({ uploads: z.array(UploadSchema) }) } },
    }),
    async (c) => {
      const accountId = c.get("key").accountId;
      const found = await requireModel(services(c), accountId, c.req.param("m"));
      const uploads = await listUploads(c.env.ARTIFACTS, accountId, found.id);
      return c.json({ uploads: uploads.map(describeUpload) });
    },
  );

  app.openapi(
    meshRoute({
      ...uploadRoute,
      method: "get",
      path: "/v1/models/{m}/uploads/{id}",
      summary: "An upload and the parts it has received (to resume)",
      responses: { 200: { description: "The upload; `received` lists the parts stored so far.", schema: UploadSchema.extend({ received: z.array(PartSchema) }) } },
    }),
    async (c) => {
      const { record } = await uploadOf(c);
      return c.json({ ...describeUpload(record), received: await listParts(c.env.ARTIFACTS, record) });
    },
  );

  app.openapi(
    meshRoute({
      ...uploadRoute,
      method: "put",
      path: "/v1/models/{m}/uploads/{id}/parts/{n}",
      summary: "Send one part of an upload",
      description: "Part `n` (1-based) is bytes `(n-1)*partSize` onward of the file, exactly `partSize` long except the last. Sending a part again replaces it (retry a part whose request failed).",
      params: { ...U, n: PartNumberSchema },
      body: { contentType: "application/octet-stream", maxBytes: MAX_PART_BYTES, description: "The part's bytes." },
      responses: { 200: { description: "Stored.", schema: PartSchema } },
      errors: ["model_not_found", "not_found", "bad_request", "payload_too_large", "conflict"],
      middleware: [manage, limitBody(MAX_PART_BYTES)],
    }),
    async (c) => {
      requireOctetStream(c);
      // No length announced (chunked): R2 needs one, so the part is read first; limitBody stops
      // it at MAX_PART_BYTES (413) before anything else is looked at.
      const declared = c.req.header("content-length");
      const buffered = declared === undefined || !c.req.raw.body ? await c.req.arrayBuffer() : null;
      const { record } = await uploadOf(c);
      const n = Number(c.req.param("n"));
      if (n < 1 || n > record.parts) throw new MeshError("bad_request", `parts are numbered 1 to ${record.parts}`);
      const want = partLength(record, n);
      const got = buffered ? buffered.byteLength : Number(declared);
      if (got !== want) throw new MeshError("bad_request", `part ${n} must be ${want} bytes, not ${got}`);
      // With a Content-Length the body streams straight into R2: the part is never held in memory.
      return c.json(await putPart(c.env.ARTIFACTS, record, n, buffered ?? c.req.raw.body!));
    },
  );

  app.openapi(
    meshRoute({
      ...uploadRoute,
      method: "post",
      path: "/v1/models/{m}/uploads/{id}/complete",
      summary: "Complete an upload into a new version",
      description:
        "Assembles the parts, reads the file back as a stream (sha256 and signature; the same checks as `POST .../versions`) and records the version. A refused file (400 `invalid_model_file`) leaves nothing behind; any other failure leaves the upload to complete again.",
      responses: { 201: { description: "The version, as `POST /v1/models/{m}/versions` answers.", schema: VersionCreatedSchema } },
      errors: ["model_not_found", "not_found", "bad_request", "invalid_model_file", "conflict"],
    }),
    async (c) => {
      const { model, upload } = await uploadAndModel(c);
      return c.json(await completeModelUpload(versionStore(c), model.accountId, model, upload, c.get("requestId")), 201);
    },
  );

  app.openapi(
    meshRoute({
      ...uploadRoute,
      method: "delete",
      path: "/v1/models/{m}/uploads/{id}",
      summary: "Abort an upload",
      description: "Its parts and everything else it stored are removed.",
      responses: { 200: { description: "Aborted.", schema: z.object({ uploadId: z.string(), aborted: z.literal(true) }) } },
      errors: ["model_not_found", "not_found", "conflict"],
    }),
    async (c) => {
      const { record } = await uploadOf(c);
      if (record.completingUntil > Date.now()) throw new MeshError("conflict", `upload '${record.id}' is being completed`);
      await discardUpload(c.env.ARTIFACTS, record);
      return c.json({ uploadId: record.id, aborted: true });
    },
  );

  app.openapi(
    meshRoute({
      ...modelRoute,
      method: "delete",
      path: "/v1/models/{m}/versions/{v}",
      summary: "Delete a version",
      description: "Refused with 409 `version_in_use` while an alias or the traffic rule names it. The number is never reused.",
      params: { ...M, v: VersionNumberSchema },
      responses: { 200: { description: "Deleted.", schema: z.object({ model: z.string(), version: z.number(), deleted: z.literal(true) }) } },
      errors: ["model_not_found", "version_not_found", "version_in_use"],
    }),
    async (c) => {
      const accountId = c.get("key").accountId;
      const found = await requireModel(services(c), accountId, c.req.param("m"));
      const version = Number(c.req.param("v"));
      await deleteVersion(versionStore(c), accountId, found, version);
      return c.json({ model: found.name, version, deleted: true });
    },
  );
}
