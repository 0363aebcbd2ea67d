// The local Upstash REST stand-in (local/upstash-rest-server.ts) against a fresh redis-server,
// driven by the unmodified @upstash/redis client (Node and Cloudflare builds) and by raw
// fetch for the wire details the client hides.
import { randomUUID } from "node:crypto";
import { Redis } from "@upstash/redis";
import { Redis as CloudflareRedis } from "@upstash/redis/cloudflare";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "../local/free-port.js";
import { startRedisServer, type RedisServerHandle } from "../local/redis-server.js";
import { startUpstashRestServer, type UpstashRestServer } from "../local/upstash-rest-server.js";

const TOKEN = `local-${randomUUID()}`;

let redisServer: RedisServerHandle | undefined;
let rest: UpstashRestServer | undefined;
let redis: Redis;

beforeAll(async () => {
  redisServer = await startRedisServer();
  rest = await startUpstashRestServer({ redisPort: redisServer.port, token: TOKEN });
  redis = new Redis({ url: rest.url, token: TOKEN, enableTelemetry: false });
});

afterAll(async () => {
  await rest?.close();
  await redisServer?.stop();
});

/** Raw request against the stand-in; returns status and parsed JSON body. */
async function call(
  path: string,
  init: {
    method?: string;
    /** An array is sent as JSON; a string or bytes as they are. */
    body?: string | Uint8Array<ArrayBuffer> | unknown[];
    headers?: Record<string, string>;
    auth?: boolean;
  } = {},
): Promise<{ status: number; json: any }> {
  const headers: Record<string, string> = { ...init.headers };
  if (init.auth !== false) headers.Authorization = `Bearer ${TOKEN}`;
  const body = Array.isArray(init.body) ? JSON.stringify(init.body) : init.body;
  const res = await fetch(`${rest!.url}${path}`, { method: init.method ?? (body ? "POST" : "GET"), headers, body });
  const text = await res.text();
  return { status: res.status, json: text === "" ? undefined : JSON.parse(text) };
}

const b64 = (text: string) => Buffer.from(text, "utf8").toString("base64");

describe("@upstash/redis against the local stand-in", () => {
  it("sets and gets strings and JSON values; a missing key is null", async () => {
    expect(await redis.set("greeting", "hello")).toBe("OK");
    expect(await redis.get("greeting")).toBe("hello");

    const doc = { id: 7, tags: ["a", "b"], nested: { ok: true, n: null } };
    await redis.set("doc", doc);
    expect(await redis.get("doc")).toEqual(doc);

    expect(await redis.get(`missing-${randomUUID()}`)).toBeNull();
  });

  it("counts, expires and reports ttl", async () => {
    expect(await redis.incr("counter")).toBe(1);
    expect(await redis.incrby("counter", 41)).toBe(42);
    expect(await redis.get("counter")).toBe(42);

    expect(await redis.expire("counter", 100)).toBe(1);
    const ttl = await redis.ttl("counter");
    expect(ttl).toBeGreaterThan(90);
    expect(ttl).toBeLessThanOrEqual(100);

    await redis.set("short", "x", { ex: 50 });
    expect(await redis.ttl("short")).toBeGreaterThan(40);
    expect(await redis.ttl(`missing-${randomUUID()}`)).toBe(-2);
  });

  it("handles hashes and lists", async () => {
    expect(await redis.hset("user:1", { name: "ada", age: 36, meta: { admin: true } })).toBe(3);
    expect(await redis.hgetall("user:1")).toEqual({ name: "ada", age: 36, meta: { admin: true } });
    expect(await redis.hget("user:1", "name")).toBe("ada");

    expect(await redis.rpush("queue", "a", "b", "c")).toBe(3);
    expect(await redis.lpush("queue", "z")).toBe(4);
    expect(await redis.lrange("queue", 0, -1)).toEqual(["z", "a", "b", "c"]);
    expect(await redis.lpop("queue")).toBe("z");
    expect(await redis.llen("queue")).toBe(3);
  });

  it("executes an explicit pipeline with mixed result types", async () => {
    const results = await redis
      .pipeline()
      .set("p:str", "v")
      .incr("p:n")
      .get("p:str")
      .hset("p:h", { f: "1" })
      .hget("p:h", "f")
      .get(`missing-${randomUUID()}`)
      .rpush("p:l", "x", "y")
      .lrange("p:l", 0, -1)
      .exec();
    expect(results).toEqual(["OK", 1, "v", 1, 1, null, 2, ["x", "y"]]);
  });

  it("executes a transaction", async () => {
    const results = await redis.multi().set("m:a", "1").incr("m:a").get("m:a").exec();
    expect(results).toEqual(["OK", 2, 2]);
  });

  it("keeps concurrent transactions atomic", async () => {
    const runs = await Promise.all(
      Array.from({ length: 40 }, () => redis.multi().incr("m:atomic").incr("m:atomic").exec<[number, number]>()),
    );
    for (const [first, second] of runs) expect(second).toBe(first + 1);
    expect(runs.map(([first]) => first).sort((a, b) => a - b)).toEqual(
      Array.from({ length: 40 }, (_, i) => 2 * i + 1),
    );
  });

  it("surfaces a per-command error in a pipeline the way the client expects", async () => {
    await redis.set("p:text", "not a number");
    await expect(redis.pipeline().set("p:ok", 1).incr("p:text").exec()).rejects.toThrow(
      /Command 2 \[ incr \] failed: ERR value is not an integer/,
    );

    const kept = await redis.pipeline().get("p:ok").incr("p:text").exec({ keepErrors: true });
    expect(kept[0]).toEqual({ error: undefined, result: 1 });
    expect(kept[1]?.error).toMatch(/^ERR value is not an integer/);

    // Auto-pipelined single command (the client's default mode goes through /pipeline).
    await expect(redis.incr("p:text")).rejects.toThrow(/ERR value is not an integer/);
  });

  it("works without auto-pipelining or base64 (POST / and 400 errors)", async () => {
    const plain = new Redis({
      url: rest!.url,
      token: TOKEN,
      enableTelemetry: false,
      enableAutoPipelining: false,
      responseEncoding: false,
    });
    expect(await plain.set("plain", { a: "ü" })).toBe("OK");
    expect(await plain.get("plain")).toEqual({ a: "ü" });
    expect(await plain.ping()).toBe("PONG");
    await plain.set("plain:text", "abc");
    await expect(plain.incr("plain:text")).rejects.toThrow(/ERR value is not an integer/);
  });

  it("round-trips unicode keys and awkward values", async () => {
    const values: Record<string, string> = {
      "ключ:🔑:鍵": "héllo 世界 🎉",
      "ctrl\u0001key": "line1\nline2\r\n\ttab \"quoted\" \\ back\u0000nul",
      "looks-like-base64": "aGVsbG8=",
      "status-word": "OK",
      "pong-word": "PONG",
      "spaces /slash?query#hash%25": "  padded  ",
    };
    for (const [key, value] of Object.entries(values)) {
      await redis.set(key, value);
      expect(await redis.get(key)).toBe(value);
    }
    expect(await redis.mget(...Object.keys(values))).toEqual(Object.values(values));
    // Numeric-looking strings come back as numbers: the client JSON-parses every result.
    await redis.set("numeric", "123");
    expect(await redis.get("numeric")).toBe(123);
  });

  it("refuses a wrong token", async () => {
    const wrong = new Redis({ url: rest!.url, token: "not-the-token", enableTelemetry: false });
    await expect(wrong.get("greeting")).rejects.toThrow(/Unauthorized/);
  });

  it("serves the Cloudflare build of the client", async () => {
    const cf = new CloudflareRedis({ url: rest!.url, token: TOKEN, enableTelemetry: false });
    await cf.set("cf:key", { from: "worker" });
    expect(await cf.get("cf:key")).toEqual({ from: "worker" });
    expect(await cf.multi().incr("cf:n").incr("cf:n").exec()).toEqual([1, 2]);
  });

  it("streams pub/sub messages to the client's subscriber", async () => {
    const sub = redis.subscribe<{ n: number }>(["news"]);
    try {
      await new Promise<void>((resolve) => sub.on("subscribe", () => resolve()));
      const received = new Promise<unknown>((resolve) => sub.on("message", ({ message }) => resolve(message)));
      expect(await redis.publish("news", { n: 1 })).toBe(1);
      expect(await received).toEqual({ n: 1 });
    } finally {
      await sub.unsubscribe();
    }
  });

  it("does not let a blocking command stall other requests", async () => {
    const blocked = call("/", { body: ["BLPOP", "blk", 5] });
    await new Promise((resolve) => setTimeout(resolve, 100));
    const started = Date.now();
    expect(await redis.set("blk:other", "fine")).toBe("OK");
    expect(Date.now() - started).toBeLessThan(1000);
    await redis.rpush("blk", "item");
    const { status, json } = await blocked;
    expect(status).toBe(200);
    expect(json).toEqual({ result: ["blk", "item"] });
  });
});

describe("raw REST protocol", () => {
  it("requires the bearer token (or _token) and answers 401 otherwise", async () => {
    expect(await call("/", { body: ["PING"], auth: false })).toEqual({
      status: 401,
      json: { error: "Unauthorized" },
    });
    expect(
      (await call("/", { body: ["PING"], auth: false, headers: { Authorization: "Bearer nope" } })).status,
    ).toBe(401);
    expect((await call("/", { body: ["PING"], auth: false, headers: { Authorization: TOKEN } })).status).toBe(401);
    expect(await call(`/ping?_token=${encodeURIComponent(TOKEN)}`, { auth: false })).toEqual({
      status: 200,
      json: { result: "PONG" },
    });
  });

  it("encodes strings as base64 only when asked, leaving OK, integers and nil alone", async () => {
    const enc = { "Upstash-Encoding": "base64" };
    expect(await call("/", { body: ["SET", "raw:s", "héllo"], headers: enc })).toEqual({
      status: 200,
      json: { result: "OK" },
    });
    expect((await call("/", { body: ["GET", "raw:s"], headers: enc })).json).toEqual({ result: b64("héllo") });
    expect((await call("/", { body: ["GET", "raw:s"] })).json).toEqual({ result: "héllo" });
    expect((await call("/", { body: ["PING"], headers: enc })).json).toEqual({ result: b64("PONG") });
    expect((await call("/", { body: ["INCR", "raw:n"], headers: enc })).json).toEqual({ result: 1 });
    expect((await call("/", { body: ["GET", "raw:none"], headers: enc })).json).toEqual({ result: null });

    await call("/", { body: ["RPUSH", "raw:l", "a", "OK"] });
    expect((await call("/", { body: ["LRANGE", "raw:l", 0, -1], headers: enc })).json).toEqual({
      result: [b64("a"), b64("OK")],
    });
    expect((await call("/", { body: ["LRANGE", "raw:l", 0, -1] })).json).toEqual({ result: ["a", "OK"] });

    // Nested arrays (XRANGE: [[id, [field, value]]]) are encoded all the way down.
    const id = (await call("/", { body: ["XADD", "raw:x", "*", "f", "v"] })).json.result as string;
    expect((await call("/", { body: ["XRANGE", "raw:x", "-", "+"], headers: enc })).json).toEqual({
      result: [[b64(id), [b64("f"), b64("v")]]],
    });

    const piped = await call("/pipeline", {
      body: [["SET", "raw:p", "x"], ["GET", "raw:p"], ["INCR", "raw:p"]],
      headers: enc,
    });
    expect(piped.status).toBe(200);
    expect(piped.json).toEqual([
      { result: "OK" },
      { result: b64("x") },
      { error: "ERR value is not an integer or out of range" },
    ]);
  });

  it("reports a failing single command as 400 with the Redis error", async () => {
    expect(await call("/", { body: ["NOSUCHCOMMAND", "x"] })).toEqual({
      status: 400,
      json: { error: expect.stringMatching(/^ERR unknown command/) },
    });
    expect((await call("/", { body: "not json" })).status).toBe(400);
    expect((await call("/", { body: [] })).status).toBe(400);
    expect((await call("/", { body: ["SET", "k", { nested: 1 }] })).status).toBe(400);
  });

  it("refuses commands that would hijack a shared connection", async () => {
    for (const command of [["MULTI"], ["SELECT", 1], ["SUBSCRIBE", "x"], ["CLIENT", "REPLY", "OFF"], ["HELLO", 3]]) {
      const { status, json } = await call("/", { body: command });
      expect(status).toBe(400);
      expect(json.error).toMatch(/not available/);
    }
    // Later requests still work: the shared connections were not touched.
    expect((await call("/", { body: ["PING"] })).json).toEqual({ result: "PONG" });
    const piped = await call("/pipeline", { body: [["WATCH", "k"], ["PING"]] });
    expect(piped.json).toEqual([{ error: expect.stringMatching(/not available/) }, { result: "PONG" }]);
  });

  it("aborts a transaction whose command Redis refused to queue", async () => {
    const res = await call("/multi-exec", { body: [["SET", "tx:a", "1"], ["SET", "tx:b"]] });
    expect(res.status).toBe(400);
    expect(res.json.error).toMatch(/^EXECABORT .*wrong number of arguments/);
    expect((await call("/", { body: ["EXISTS", "tx:a"] })).json).toEqual({ result: 0 });

    // A runtime error inside EXEC is per command, and the others still ran.
    await call("/", { body: ["SET", "tx:s", "text"] });
    const ran = await call("/multi-exec", { body: [["INCR", "tx:s"], ["SET", "tx:c", "1"]] });
    expect(ran.status).toBe(200);
    expect(ran.json).toEqual([{ error: expect.stringMatching(/^ERR value is not an integer/) }, { result: "OK" }]);
  });

  it("accepts path-style commands", async () => {
    expect(await call("/set/path:k/v%2Fwith%20slash")).toEqual({ status: 200, json: { result: "OK" } });
    expect(await call("/get/path:k")).toEqual({ status: 200, json: { result: "v/with slash" } });
    expect(await call("/GET/path:k/")).toEqual({ status: 200, json: { result: "v/with slash" } });

    // POST body is the last argument (binary safe), then query parameters.
    const bytes = new Uint8Array([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x31, 0x7d]); // {"a":1}
    expect((await call("/set/path:body?EX=100", { method: "POST", body: bytes })).json).toEqual({ result: "OK" });
    expect((await call("/get/path:body")).json).toEqual({ result: '{"a":1}' });
    const ttl = (await call("/ttl/path:body")).json.result as number;
    expect(ttl).toBeGreaterThan(90);

    expect((await call("/get/path:k", { headers: { "Upstash-Encoding": "base64" } })).json).toEqual({
      result: b64("v/with slash"),
    });
  });

  it("rejects an oversized body with 413 and keeps serving", async () => {
    const big = "x".repeat(11 * 1024 * 1024);
    const res = await call("/", { body: ["SET", "big", big] });
    expect(res.status).toBe(413);
    expect(res.json.error).toMatch(/exceeds/);
    expect((await call("/", { body: ["PING"] })).json).toEqual({ result: "PONG" });
  });

  it("refuses response formats it cannot produce", async () => {
    const res = await call("/", { body: ["PING"], headers: { "Upstash-Response-Format": "resp2" } });
    expect(res.status).toBe(400);
  });
});

describe("connections to Redis", () => {
  it("drops a blocking command's own connection when its caller hangs up", async () => {
    const blockedClients = async () =>
      String((await call("/", { body: ["CLIENT", "LIST"] })).json.result)
        .split("\n")
        .filter((line) => / cmd=blpop\b/.test(line)).length;
    const abort = new AbortController();
    const blocked = fetch(`${rest!.url}/`, {
      method: "POST",
      headers: { Authorization: `Bearer ${TOKEN}` },
      body: JSON.stringify(["BLPOP", "hangup:never", 0]),
      signal: abort.signal,
    }).catch(() => "aborted");
    while ((await blockedClients()) === 0) await new Promise((resolve) => setTimeout(resolve, 20));
    abort.abort();
    expect(await blocked).toBe("aborted");
    while ((await blockedClients()) > 0) await new Promise((resolve) => setTimeout(resolve, 20));
    expect((await call("/", { body: ["PING"] })).json).toEqual({ result: "PONG" });
  });

  it("fails clearly at startup when nothing listens", async () => {
    const port = await freePort();
    await expect(startUpstashRestServer({ redisPort: port, token: TOKEN })).rejects.toThrow(
      new RegExp(`redis at 127.0.0.1:${port} is not usable`),
    );
  });
});
