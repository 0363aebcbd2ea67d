// Local stand-in for Upstash's Redis REST API, in front of a real redis-server.
//
// Production code talks to Upstash through the unmodified @upstash/redis client (Node and
// Cloudflare Worker builds alike). Pointing that client at this server instead lets the same
// code run locally and in tests with no Upstash account and no network, against real Redis
// semantics. Only the HTTP framing is emulated; every command is executed by Redis itself.
//
// Protocol, as the client (v1.39) uses it:
// - Auth: "Authorization: Bearer <token>" (or the "_token" query parameter); otherwise
//   401 {"error":"Unauthorized"}.
// - POST /            body ["SET","k","v","EX",5]   -> {"result":...} or 400 {"error":"ERR ..."}
// - POST /pipeline    body [[...],[...]]            -> 200 [{"result":...}|{"error":...}, ...]
//   (the client auto-pipelines by default, so this is the hot path, not POST /)
// - POST /multi-exec  same body, run in MULTI/EXEC  -> 200 [...] like /pipeline, or
//   400 {"error":"EXECABORT ..."} when Redis refused to queue a command
// - GET|HEAD|POST|PUT /cmd/arg1/arg2 (segments URL-decoded); for POST/PUT a non-empty body
//   is appended as one more (binary-safe) argument, then query parameters as NAME [VALUE].
// - POST /subscribe/ch..., /psubscribe/pat...: Server-Sent Events, one
//   "data: message,<channel>,<payload>" line per event (what the client's Subscriber parses).
// - "Upstash-Encoding: base64": every string in the result, at any depth, is base64 of its
//   bytes, except a top-level simple-string "OK". The client base64-decodes every string
//   except a top-level "OK" (and sends this header by default), so a status reply such as
//   "PONG" must be encoded too, and so must "OK" inside an array. Integers stay numbers,
//   nil is null, errors are never encoded.
// - "upstash-sync-token" (read-your-writes across Upstash replicas) is accepted and ignored:
//   there is one Redis here, so every read already sees every acknowledged write.
// - "Upstash-Response-Format" other than json (e.g. resp2) is refused with 400.
//
// Commands that would change the state of a shared Redis connection (SELECT, MULTI as a bare
// command, SUBSCRIBE outside SSE, HELLO, CLIENT REPLY, ...) are refused; blocking commands
// (BLPOP, XREAD BLOCK, ...) run on a connection of their own so they cannot stall others.
//
// Redis is spoken through ioredis 6 (RESP2, raw Buffer replies). Picked over node-redis 6 and
// the hand-written client it replaced by measuring the stand-in's own access pattern (batches
// of 4 commands, 64 in flight): ioredis sending each command on one connection ran 1.16x the
// old client, and the whole stand-in under @upstash/redis 1.54x; node-redis's pipeline was
// faster still but rejects the whole batch on the first failing command, while /pipeline must
// answer every command, and its per-command path ran 0.56x.
import { createHash, timingSafeEqual } from "node:crypto";
import http from "node:http";
import { Command, Redis, ReplyError, type Pipeline } from "ioredis";

/** A decoded reply: bulk and status strings arrive as Buffers, errors nested in arrays as Errors. */
type Reply = Buffer | number | null | Error | Reply[];
type Arg = string | Buffer;

export interface UpstashRestServerOptions {
  redisHost?: string;
  redisPort: number;
  /** The bearer token clients must present (UPSTASH_REDIS_REST_TOKEN). */
  token: string;
  /** Interface to listen on (default 127.0.0.1). */
  host?: string;
  /** Port to listen on (default: any free port; read it back from the result). */
  port?: number;
  /** Largest accepted request body in bytes (default 10 MiB); larger ones get 413. */
  maxBodyBytes?: number;
}

export interface UpstashRestServer {
  /** Base URL to hand to the client as `url` (UPSTASH_REDIS_REST_URL). */
  url: string;
  port: number;
  close(): Promise<void>;
}

const DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024;
/** After answering 413 we keep draining (so the client can read the answer) up to this much. */
const MAX_DISCARD_BYTES = 64 * 1024 * 1024;

/** Would leave a shared connection in a state other requests do not expect. */
const REFUSED_COMMANDS = new Set([
  "AUTH",
  "DISCARD",
  "EXEC",
  "HELLO",
  "MONITOR",
  "MULTI",
  "PSUBSCRIBE",
  "PSYNC",
  "PUNSUBSCRIBE",
  "QUIT",
  "REPLCONF",
  "RESET",
  "SELECT",
  "SSUBSCRIBE",
  "SUBSCRIBE",
  "SUNSUBSCRIBE",
  "SYNC",
  "UNSUBSCRIBE",
  "UNWATCH",
  "WATCH",
]);
const REFUSED_CLIENT_SUBCOMMANDS = new Set(["REPLY", "TRACKING", "CACHING"]);

/** May hold their connection for as long as their timeout says. */
const BLOCKING_COMMANDS = new Set([
  "BLMOVE",
  "BLMPOP",
  "BLPOP",
  "BRPOP",
  "BRPOPLPUSH",
  "BZMPOP",
  "BZPOPMAX",
  "BZPOPMIN",
  "WAIT",
  "WAITAOF",
]);

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

const TOO_LARGE = Symbol("too-large");

export async function startUpstashRestServer(opts: UpstashRestServerOptions): Promise<UpstashRestServer> {
  if (opts.token === "") throw new Error("startUpstashRestServer: token must not be empty");
  const redisHost = opts.redisHost ?? "127.0.0.1";
  const host = opts.host ?? "127.0.0.1";
  const maxBodyBytes = opts.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  const tokenDigest = sha256(opts.token);

  const redis = connectRedis(redisHost, opts.redisPort);
  // Fail at startup, with the address in the message, rather than on the first request.
  try {
    await redis.connect();
    const pong = String(await redis.ping());
    if (pong !== "PONG") throw new Error(`PING answered ${pong}`);
  } catch (err) {
    redis.disconnect();
    const reason = err instanceof Error ? err.message : String(err);
    throw new Error(`startUpstashRestServer: redis at ${redisHost}:${opts.redisPort} is not usable: ${reason}`);
  }

  const ctx: Context = { redis, maxBodyBytes, tokenDigest };
  const server = http.createServer((req, res) => {
    handle(ctx, req, res).catch((err: unknown) => {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      if (err instanceof HttpError) {
        sendJson(res, err.status, { error: err.message });
      } else {
        const reason = err instanceof Error ? err.message : String(err);
        sendJson(res, 500, { error: `ERR local redis unavailable: ${reason}` });
      }
    });
  });

  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(opts.port ?? 0, host, () => {
        server.off("error", reject);
        resolve();
      });
    });
  } catch (err) {
    redis.disconnect();
    throw err;
  }

  const address = server.address();
  if (address === null || typeof address === "string") throw new Error("unexpected server address");
  const port = address.port;
  // A wildcard bind is reachable on loopback; a client cannot connect to 0.0.0.0 everywhere.
  const urlHost = host === "0.0.0.0" ? "127.0.0.1" : host === "::" ? "::1" : host;
  const url = `http://${urlHost.includes(":") ? `[${urlHost}]` : urlHost}:${port}`;

  let closing: Promise<void> | null = null;
  return {
    url,
    port,
    close(): Promise<void> {
      closing ??= (async () => {
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          // Keep-alive sockets and open SSE streams would otherwise hold close() open.
          server.closeAllConnections();
        });
        await redis.quit().catch(() => redis.disconnect());
      })();
      return closing;
    },
  };
}

/**
 * The shared connection. A request's commands are written back to back on it, so replies come
 * back in order; a lost connection fails the requests in flight (500) rather than replaying
 * them, since a replayed INCR would count twice.
 */
function connectRedis(host: string, port: number): Redis {
  const redis = new Redis({ host, port, protocol: 2, lazyConnect: true, maxRetriesPerRequest: 0, enableReadyCheck: false });
  // Failures reach callers through their rejected commands; without a listener ioredis would
  // also print each one. Connections duplicated from this one inherit it.
  redis.on("error", () => undefined);
  return redis;
}

interface Context {
  redis: Redis;
  maxBodyBytes: number;
  tokenDigest: Buffer;
}

async function handle(ctx: Context, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  // Split by hand: new URL() would read a path such as "//get/k" as a host name.
  const rawUrl = req.url ?? "/";
  const queryStart = rawUrl.indexOf("?");
  const pathname = queryStart < 0 ? rawUrl : rawUrl.slice(0, queryStart);
  const query = new URLSearchParams(queryStart < 0 ? "" : rawUrl.slice(queryStart + 1));

  if (!isAuthorized(ctx, req, query)) {
    sendJson(res, 401, { error: "Unauthorized" });
    return;
  }

  const method = req.method ?? "GET";
  const hasBody = method === "POST" || method === "PUT";
  if (!hasBody && method !== "GET" && method !== "HEAD") {
    throw new HttpError(405, "Method not allowed");
  }

  const format = headerValue(req, "upstash-response-format");
  if (format !== undefined && format.toLowerCase() !== "json") {
    throw new HttpError(400, `ERR response format '${format}' is not supported by the local Upstash stand-in`);
  }
  const base64 = headerValue(req, "upstash-encoding")?.toLowerCase() === "base64";

  let body: Buffer = Buffer.alloc(0);
  if (hasBody) {
    const read = await readBody(req, ctx.maxBodyBytes);
    if (read === TOO_LARGE) {
      throw new HttpError(413, `ERR request body exceeds ${ctx.maxBodyBytes} bytes`);
    }
    body = read;
  }

  const segments = pathname.split("/").slice(1);
  if (segments[segments.length - 1] === "") segments.pop(); // trailing slash

  // Blocking commands hold an exclusive connection; give it back if the caller hangs up.
  const abort = new AbortController();
  res.on("close", () => {
    if (!res.writableFinished) abort.abort();
  });

  const route = segments[0]?.toLowerCase();
  if (segments.length === 0) {
    if (body.length === 0) throw new HttpError(400, "ERR empty command");
    const args = toArgs(parseJson(body));
    await runSingle(ctx, args, base64, abort.signal, res);
  } else if (segments.length === 1 && (route === "pipeline" || route === "multi-exec")) {
    if (!hasBody) throw new HttpError(405, `${route} requires POST`);
    const commands = toCommandList(parseJson(body));
    if (route === "pipeline") await runPipeline(ctx, commands, base64, abort.signal, res);
    else await runTransaction(ctx, commands, base64, res);
  } else if (route === "subscribe" || route === "psubscribe") {
    // The client joins channel names into the path without encoding them, so a name that
    // is not valid percent-encoding is taken literally rather than refused.
    const channels = segments.slice(1).map((segment) => {
      try {
        return decodeURIComponent(segment);
      } catch {
        return segment;
      }
    });
    await runSubscription(ctx, route, channels, res);
  } else {
    const args: Arg[] = segments.map(decodeSegment);
    if (body.length > 0) args.push(body);
    for (const [name, value] of query) {
      if (name === "_token") continue;
      args.push(name);
      if (value !== "") args.push(value);
    }
    await runSingle(ctx, args, base64, abort.signal, res);
  }
}

async function runSingle(
  ctx: Context,
  args: Arg[],
  base64: boolean,
  signal: AbortSignal,
  res: http.ServerResponse,
): Promise<void> {
  const refused = refusal(args);
  if (refused !== null) throw new HttpError(400, refused);
  const [reply] = isBlocking(args) ? await onOwnConnection(ctx, [args], signal) : await send(ctx.redis, [args]);
  if (reply instanceof Error) {
    sendJson(res, 400, { error: reply.message });
  } else {
    sendJson(res, 200, { result: encodeResult(reply ?? null, base64, true) });
  }
}

async function runPipeline(
  ctx: Context,
  commands: Arg[][],
  base64: boolean,
  signal: AbortSignal,
  res: http.ServerResponse,
): Promise<void> {
  // A refused command fails alone, like any other per-command error in a pipeline.
  const refusals = commands.map(refusal);
  const runnable = commands.filter((_, i) => refusals[i] === null);
  const replies = runnable.some(isBlocking)
    ? await onOwnConnection(ctx, runnable, signal)
    : await send(ctx.redis, runnable);
  let next = 0;
  const entries = refusals.map((refused) => {
    if (refused !== null) return { error: refused };
    return toEntry(replies[next++] ?? null, base64);
  });
  sendJson(res, 200, entries);
}

async function runTransaction(
  ctx: Context,
  commands: Arg[][],
  base64: boolean,
  res: http.ServerResponse,
): Promise<void> {
  for (const args of commands) {
    const refused = refusal(args);
    if (refused !== null) throw new HttpError(400, refused);
  }
  // ioredis writes MULTI ... EXEC in one go on the shared connection, so no other request's
  // command can land inside the window. Blocking commands never block inside MULTI.
  // The typings stop at the chainable command methods; a transaction is a Pipeline.
  const multi = ctx.redis.multi() as unknown as Pipeline & ReturnType<Redis["multi"]>;
  for (const args of commands) multi.sendCommand(rawCommand(args));
  let results: [Error | null, unknown][] | null;
  try {
    results = await multi.exec();
  } catch (err) {
    if (!isReplyError(err)) throw err;
    // Redis says only "EXECABORT Transaction discarded because of previous errors."; the
    // queueing error that caused it is what the caller needs to see.
    const cause = (err as Error & { previousErrors?: Error[] }).previousErrors?.[0];
    const message = cause ? `${err.message.replace(/\.$/, "")}: ${cause.message}` : err.message;
    throw new HttpError(400, message);
  }
  if (results === null) throw new HttpError(400, "EXECABORT Transaction aborted");
  sendJson(
    res,
    200,
    results.map(([err, reply]) => toEntry(err ?? (reply as Reply), base64)),
  );
}

async function runSubscription(
  ctx: Context,
  kind: "subscribe" | "psubscribe",
  channels: string[],
  res: http.ServerResponse,
): Promise<void> {
  if (channels.length === 0) throw new HttpError(400, `ERR wrong number of arguments for '${kind}' command`);
  const conn = ctx.redis.duplicate({ lazyConnect: true, retryStrategy: () => null });
  res.on("close", () => conn.disconnect());
  await conn.connect();
  res.writeHead(200, {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    Connection: "keep-alive",
  });
  res.flushHeaders();
  conn.on("end", () => res.end());
  // Every event becomes one line, e.g. "message,channel,payload"; the client splits on the
  // first commas only, so commas inside the payload survive.
  const event = (...fields: (Buffer | string | number)[]) => res.write(`data: ${fields.map(String).join(",")}\n\n`);
  conn.on("messageBuffer", (channel: Buffer, message: Buffer) => event("message", channel, message));
  conn.on("pmessageBuffer", (pattern: Buffer, channel: Buffer, message: Buffer) =>
    event("pmessage", pattern, channel, message),
  );
  // One confirmation per channel with the running count, as Redis itself sends them.
  if (kind === "subscribe") await conn.subscribe(...channels);
  else await conn.psubscribe(...channels);
  channels.forEach((channel, i) => event(kind, channel, i + 1));
}

/**
 * Runs commands back to back on one connection and returns one reply each; a Redis error reply
 * is a value (a pipeline answers every command), only a transport failure rejects.
 */
function send(redis: Redis, commands: Arg[][]): Promise<Reply[]> {
  return Promise.all(
    commands.map((args) =>
      (redis.sendCommand(rawCommand(args)) as Promise<Reply>).catch((err: unknown) => {
        if (isReplyError(err)) return err;
        throw err;
      }),
    ),
  );
}

/** For blocking commands: a connection of their own, dropped when the caller hangs up. */
async function onOwnConnection(ctx: Context, commands: Arg[][], signal: AbortSignal): Promise<Reply[]> {
  const conn = ctx.redis.duplicate({ lazyConnect: true, retryStrategy: () => null });
  const drop = () => conn.disconnect();
  signal.addEventListener("abort", drop, { once: true });
  try {
    await conn.connect();
    return await send(conn, commands);
  } finally {
    signal.removeEventListener("abort", drop);
    conn.disconnect();
  }
}

/**
 * A command whose reply comes back as Redis sent it: Buffers (no reply encoding), and none of
 * ioredis's per-command reshaping (HGETALL into an object, XREAD into pairs), since the REST
 * API answers in Redis's own shapes.
 */
function rawCommand([name = "", ...args]: Arg[]): Command {
  const command = new Command(String(name), args);
  command.transformReply = (reply) => reply;
  return command;
}

function isReplyError(err: unknown): err is Error {
  return err instanceof ReplyError;
}

function toEntry(reply: Reply, base64: boolean): { result: unknown } | { error: string } {
  return reply instanceof Error ? { error: reply.message } : { result: encodeResult(reply, base64, true) };
}

const OK = Buffer.from("OK");

/**
 * Reply -> JSON value, applying Upstash's base64 rule (see the header comment). ioredis hands
 * status replies over as Buffers like bulk strings, so a bulk "OK" at the top level is left
 * unencoded too; the client reads both spellings as "OK", as it skips decoding exactly that.
 */
function encodeResult(value: Reply, base64: boolean, topLevel: boolean): unknown {
  if (value === null || typeof value === "number") return value;
  // Without base64, bytes that are not UTF-8 cannot survive a JSON string; that is the
  // reason the encoding exists (and why the client asks for it by default).
  if (Buffer.isBuffer(value)) {
    return base64 && !(topLevel && value.equals(OK)) ? value.toString("base64") : value.toString("utf8");
  }
  if (value instanceof Error) {
    // Only reachable for errors nested inside arrays (e.g. a Lua table holding an error);
    // JSON has no slot for them, so they travel as their message.
    return encodeResult(Buffer.from(value.message), base64, false);
  }
  return value.map((item) => encodeResult(item, base64, false));
}

function refusal(args: Arg[]): string | null {
  if (args.length === 0) return "ERR empty command";
  const name = String(args[0]).toUpperCase();
  if (REFUSED_COMMANDS.has(name)) {
    const hint =
      name === "MULTI" || name === "EXEC" || name === "DISCARD" ? " (use the /multi-exec endpoint)" : "";
    return `ERR Command is not available: '${name.toLowerCase()}'${hint}`;
  }
  if (name === "CLIENT" && args.length > 1 && REFUSED_CLIENT_SUBCOMMANDS.has(String(args[1]).toUpperCase())) {
    return `ERR Command is not available: 'client ${String(args[1]).toLowerCase()}'`;
  }
  return null;
}

function isBlocking(args: Arg[]): boolean {
  const name = String(args[0]).toUpperCase();
  if (BLOCKING_COMMANDS.has(name)) return true;
  if (name === "XREAD" || name === "XREADGROUP") {
    return args.some((arg, i) => i > 0 && typeof arg === "string" && arg.toUpperCase() === "BLOCK");
  }
  return false;
}

function parseJson(body: Buffer): unknown {
  try {
    return JSON.parse(body.toString("utf8"));
  } catch {
    throw new HttpError(400, "ERR failed to parse request body as JSON");
  }
}

function toArgs(value: unknown): Arg[] {
  if (!Array.isArray(value) || value.length === 0) {
    throw new HttpError(400, "ERR command must be a non-empty JSON array");
  }
  return value.map((item: unknown, i) => {
    // The client sends strings, numbers and booleans (objects are JSON-stringified first).
    if (typeof item === "string") return item;
    if (typeof item === "number" || typeof item === "boolean") return String(item);
    throw new HttpError(400, `ERR invalid argument at position ${i}: expected string, number or boolean`);
  });
}

function toCommandList(value: unknown): Arg[][] {
  if (!Array.isArray(value) || value.length === 0) {
    throw new HttpError(400, "ERR body must be a non-empty JSON array of commands");
  }
  return value.map(toArgs);
}

function decodeSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw new HttpError(400, "ERR malformed percent-encoding in URL path");
  }
}

function isAuthorized(ctx: Context, req: http.IncomingMessage, query: URLSearchParams): boolean {
  let presented: string | undefined;
  const header = req.headers.authorization;
  if (header !== undefined) {
    presented = /^\s*Bearer\s+(\S+)\s*$/i.exec(header)?.[1];
  } else {
    presented = query.get("_token") ?? undefined;
  }
  if (presented === undefined) return false;
  // Comparing fixed-size digests keeps the comparison constant-time and hides the length.
  return timingSafeEqual(sha256(presented), ctx.tokenDigest);
}

function sha256(text: string): Buffer {
  return createHash("sha256").update(text, "utf8").digest();
}

function headerValue(req: http.IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

/**
 * Buffers the body up to limit. Past the limit it stops storing and resolves TOO_LARGE at
 * once, but keeps reading (discarding): a client still uploading when we answer and close
 * would see a connection reset instead of the 413.
 */
function readBody(req: http.IncomingMessage, limit: number): Promise<Buffer | typeof TOO_LARGE> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    const giveUp = () => {
      over = true;
      chunks.length = 0;
      resolve(TOO_LARGE);
    };
    const declared = Number(req.headers["content-length"]);
    if (Number.isFinite(declared) && declared > limit) giveUp();
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (over) {
        if (size > limit + MAX_DISCARD_BYTES) req.socket.destroy();
        return;
      }
      if (size > limit) {
        giveUp();
        return;
      }
      chunks.push(chunk);
    });
    req.on("end", () => {
      if (!over) resolve(Buffer.concat(chunks, size));
    });
    req.on("error", reject);
    req.on("close", () => {
      if (!req.complete) reject(new Error("request aborted"));
    });
  });
}

function sendJson(res: http.ServerResponse, status: number, payload: unknown): void {
  const body = JSON.stringify(payload);
  res.writeHead(status, {
    "Content-Type": "application/json",
    "Content-Length": Buffer.byteLength(body),
  });
  res.end(body);
}
