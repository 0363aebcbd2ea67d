// protocol/signing.ts: HMAC-signed requests (edge -> region) whose signature covers the body's
// hash and length and a nonce, so a router checks it from headers alone; the nonce ledger that
// refuses replays; signed, expiring download URLs bound to one region; plus the hex/sha256/
// constant-time helpers they rest on. And the router's use of them (regions/authority.ts):
// bodies read under a cap against their signature, stream requests decoded only under a grant.
import { createHash, createHmac } from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  artifactUrl,
  BODY_LENGTH_HEADER,
  BODY_SHA256_HEADER,
  bodyMatches,
  DEFAULT_MAX_AGE_MS,
  NONCE_HEADER,
  NonceLedger,
  SIGNATURE_HEADER,
  STAMP_HEADER,
  sha256Hex,
  signRequest,
  signUrl,
  toHex,
  tokenizerUrl,
  urlRegion,
  verifyRequest,
  verifyUrl,
  type SignedRequest,
  useCryptoPrimitives,
  webCryptoPrimitives,
} from "../protocol/signing.js";
import { INLINE_HASH_BYTES, nodeCryptoPrimitives } from "../runtime/node-crypto.js";
import { createCodec } from "../protocol/codec.js";
import { GENERATE_GRANT_METHOD } from "../protocol/messages.js";
import { EdgeAuthority } from "../regions/authority.js";

const SECRET = "mesh-secret-for-tests";
const NOW = 1_750_000_000_000;
const PATH = "/v1/infer?x=1";
const BODY = new TextEncoder().encode('{"inputs":[1,2,3]}');

const sign = (body: Uint8Array | undefined = BODY, method = "POST", path = PATH, now = NOW) => signRequest(SECRET, method, path, body, now);
const verify = (headers: Record<string, string | null | undefined>, opts: { secrets?: string | string[]; method?: string; path?: string; maxAge?: number; now?: number } = {}) =>
  verifyRequest(opts.secrets ?? SECRET, opts.method ?? "POST", opts.path ?? PATH, (n) => headers[n], opts.maxAge ?? DEFAULT_MAX_AGE_MS, opts.now ?? NOW);

describe("signRequest / verifyRequest", () => {
  it("sends stamp, nonce, body length and sha256, and a 64-hex-digit HMAC over all of them", async () => {
    const h = await sign();
    expect(Object.keys(h).sort()).toEqual([STAMP_HEADER, NONCE_HEADER, BODY_LENGTH_HEADER, BODY_SHA256_HEADER, SIGNATURE_HEADER].sort());
    expect(h[STAMP_HEADER]).toBe(String(NOW));
    expect(h[NONCE_HEADER]).toMatch(/^[0-9a-f]{32}$/);
    expect(h[BODY_LENGTH_HEADER]).toBe(String(BODY.length));
    expect(h[BODY_SHA256_HEADER]).toBe(createHash("sha256").update(BODY).digest("hex"));
    const expected = createHmac("sha256", SECRET)
      .update(`${NOW}\n${h[NONCE_HEADER]}\nPOST\n${PATH}\n${BODY.length}\n${h[BODY_SHA256_HEADER]}`)
      .digest("hex");
    expect(h[SIGNATURE_HEADER]).toBe(expected);
    // A fresh nonce every time.
    expect((await sign())[NONCE_HEADER]).not.toBe(h[NONCE_HEADER]);
  });

  it("verifies from the headers alone, within the allowed skew, and says what the body must be", async () => {
    const h = await sign();
    const ok = await verify(h);
    expect(ok).toEqual({ ok: true, stamp: NOW, nonce: h[NONCE_HEADER], bodyLength: BODY.length, bodySha256: h[BODY_SHA256_HEADER] });
    expect((await verify(h, { now: NOW + DEFAULT_MAX_AGE_MS })).ok).toBe(true);
    expect((await verify(h, { now: NOW - DEFAULT_MAX_AGE_MS })).ok).toBe(true);
    // No body signs as length 0 and the empty hash.
    const get = await signRequest(SECRET, "GET", "/v1/status", undefined, NOW);
    expect(get[BODY_LENGTH_HEADER]).toBe("0");
    expect(get[BODY_SHA256_HEADER]).toBe(await sha256Hex(""));
    expect((await verify(get, { method: "GET", path: "/v1/status" })).ok).toBe(true);
    // The method is case-insensitive; Date.now() by default.
    expect((await verify(await sign(BODY, "post"))).ok).toBe(true);
    const now = await signRequest(SECRET, "POST", PATH, BODY);
    expect((await verifyRequest(SECRET, "POST", PATH, (n) => now[n])).ok).toBe(true);
  });

  it("accepts the current or the previous secret (rotation), and nothing else", async () => {
    const h = await sign();
    expect((await verify(h, { secrets: ["new-secret-of-some-length", SECRET] })).ok).toBe(true);
    expect((await verify(h, { secrets: [SECRET, "old-secret-of-some-length"] })).ok).toBe(true);
    expect(await verify(h, { secrets: ["another-secret", "and-another-one"] })).toEqual({ ok: false, reason: "bad signature" });
    expect(await verify(h, { secrets: [] })).toEqual({ ok: false, reason: "bad signature" });
  });

  it("bodyMatches: exactly the signed bytes, a view into a larger buffer included", async () => {
    const h = await sign();
    const v = (await verify(h)) as SignedRequest;
    expect(await bodyMatches(v, BODY)).toBe(true);
    const big = new Uint8Array(BODY.length + 10);
    big.set(BODY, 5);
    expect(await bodyMatches(v, big.subarray(5, 5 + BODY.length))).toBe(true);
    const tampered = BODY.slice();
    tampered[3] = tampered[3]! ^ 1;
    expect(await bodyMatches(v, tampered)).toBe(false);
    expect(await bodyMatches(v, new Uint8Array([...BODY, 0x20]))).toBe(false);
    expect(await bodyMatches(v, new Uint8Array(0))).toBe(false);
    const empty = (await verify(await signRequest(SECRET, "GET", PATH, undefined, NOW), { method: "GET" })) as SignedRequest;
    expect(await bodyMatches(empty, new Uint8Array(0))).toBe(true);
    expect(await bodyMatches(empty, new Uint8Array([0]))).toBe(false);
  });

  it("refuses any tampered header: path (with query), method, stamp, nonce, length, sha256", async () => {
    const h = await sign();
    for (const path of ["/v1/infer", "/v1/infer?x=2", "/v1/other?x=1", "/v1/infer?x=1&y=1"]) {
      expect(await verify(h, { path })).toEqual({ ok: false, reason: "bad signature" });
    }
    expect(await verify(h, { method: "PUT" })).toEqual({ ok: false, reason: "bad signature" });
    expect(await verify({ ...h, [STAMP_HEADER]: String(NOW + 1) })).toEqual({ ok: false, reason: "bad signature" });
    expect(await verify({ ...h, [NONCE_HEADER]: "0".repeat(32) })).toEqual({ ok: false, reason: "bad signature" });
    expect(await verify({ ...h, [BODY_LENGTH_HEADER]: String(BODY.length + 1) })).toEqual({ ok: false, reason: "bad signature" });
    expect(await verify({ ...h, [BODY_SHA256_HEADER]: "a".repeat(64) })).toEqual({ ok: false, reason: "bad signature" });
    expect(await verify(h, { secrets: "another-secret" })).toEqual({ ok: false, reason: "bad signature" });
  });

  it("refuses an expired stamp, or one from the far future", async () => {
    const h = await sign();
    expect(await verify(h, { now: NOW + DEFAULT_MAX_AGE_MS + 1 })).toEqual({ ok: false, reason: "signature expired" });
    expect(await verify(h, { now: NOW + 86_400_000 })).toEqual({ ok: false, reason: "signature expired" });
    expect(await verify(h, { now: NOW - 86_400_000 })).toEqual({ ok: false, reason: "signature expired" });
    expect(await verify(h, { maxAge: 1_000, now: NOW + 1_001 })).toEqual({ ok: false, reason: "signature expired" });
    expect(await verify({ ...h, [STAMP_HEADER]: "soon" })).toMatchObject({ ok: false });
  });

  it("refuses missing headers", async () => {
    const h = await sign();
    for (const name of [STAMP_HEADER, NONCE_HEADER, BODY_LENGTH_HEADER, BODY_SHA256_HEADER, SIGNATURE_HEADER]) {
      for (const v of [null, undefined, ""]) {
        expect(await verify({ ...h, [name]: v })).toEqual({ ok: false, reason: "missing signature" });
      }
    }
  });

  it("refuses malformed hex, nonces, lengths and hashes", async () => {
    const h = await sign();
    const sig = h[SIGNATURE_HEADER]!;
    for (const bad of [sig.slice(1), `${sig}0`, sig.toUpperCase(), `zz${sig.slice(2)}`, "not hex at all", `${sig.slice(0, 62)}-1`]) {
      expect(await verify({ ...h, [SIGNATURE_HEADER]: bad })).toEqual({ ok: false, reason: "malformed signature" });
    }
    for (const [name, bad] of [
      [NONCE_HEADER, "short"],
      [NONCE_HEADER, "X".repeat(32)],
      [BODY_LENGTH_HEADER, "-1"],
      [BODY_LENGTH_HEADER, "1e3"],
      [BODY_SHA256_HEADER, "abc"],
    ] as const) {
      expect(await verify({ ...h, [name]: bad })).toEqual({ ok: false, reason: "malformed signature" });
    }
    // Well-formed hex of the wrong length is not malformed, just wrong.
    expect(await verify({ ...h, [SIGNATURE_HEADER]: sig.slice(2) })).toEqual({ ok: false, reason: "bad signature" });
  });
});

describe("NonceLedger", () => {
  it("refuses a second use of a nonce within its window, and forgets it after", () => {
    const ledger = new NonceLedger(30_000);
    expect(ledger.claim("a", NOW, NOW)).toBe(true);
    expect(ledger.claim("a", NOW, NOW + 1)).toBe(false);
    expect(ledger.claim("a", NOW, NOW + 30_000)).toBe(false);
    expect(ledger.claim("b", NOW, NOW + 1)).toBe(true);
    // Past stamp + window the signature itself is expired; the ledger may forget the nonce.
    expect(ledger.claim("a", NOW + 40_000, NOW + 40_000)).toBe(true);
  });

  it("stays bounded: entries expire with the window", () => {
    const ledger = new NonceLedger(1_000);
    for (let i = 0; i < 5_000; i++) expect(ledger.claim(`n${i}`, NOW + i, NOW + i)).toBe(true);
    // Only the last window's nonces (plus at most one sweep interval) are held.
    expect(ledger.size).toBeLessThanOrEqual(1_000 + 101 + 1);
    expect(ledger.claim("n4999", NOW + 4_999, NOW + 5_000)).toBe(false);
  });
});

describe("signUrl / verifyUrl", () => {
  const base = new URL("https://edge.example/internal/artifacts/abc123");
  const EXP = NOW + 60_000;
  const REGION = "us-west";

  it("happy path: adds region, exp and sig and verifies until exp", async () => {
    const s = new URL(await signUrl(SECRET, base, REGION, EXP));
    expect(s.pathname).toBe(base.pathname);
    expect(s.searchParams.get("exp")).toBe(String(EXP));
    expect(urlRegion(s)).toBe(REGION);
    expect(s.searchParams.get("sig")).toMatch(/^[0-9a-f]{64}$/);
    expect(await verifyUrl(SECRET, s, NOW)).toEqual({ ok: true });
    expect(await verifyUrl(SECRET, s, EXP)).toEqual({ ok: true });
    // The previous secret still verifies during a rotation.
    expect(await verifyUrl(["new-secret-of-some-length", SECRET], s, NOW)).toEqual({ ok: true });
  });

  it("binds the URL to its region: another region's name or secret is refused", async () => {
    const s = new URL(await signUrl(SECRET, base, REGION, EXP));
    const moved = new URL(s);
    moved.searchParams.set("region", "ap-seoul");
    expect(await verifyUrl(SECRET, moved, NOW)).toEqual({ ok: false, reason: "bad signature" });
    expect(await verifyUrl("ap-seoul-secret-of-some-length", s, NOW)).toEqual({ ok: false, reason: "bad signature" });
    const noRegion = new URL(s);
    noRegion.searchParams.delete("region");
    expect(await verifyUrl(SECRET, noRegion, NOW)).toEqual({ ok: false, reason: "missing signature" });
  });

  it("artifactUrl and tokenizerUrl: the edge's download paths, signed for one region", async () => {
    const a = new URL(await artifactUrl(SECRET, "https://edge.example", REGION, "ab".repeat(32), EXP));
    expect(a.origin + a.pathname).toBe(`https://edge.example/internal/artifacts/${"ab".repeat(32)}`);
    const t = new URL(await tokenizerUrl(SECRET, "https://edge.example", REGION, "cd".repeat(32), EXP));
    expect(t.origin + t.pathname).toBe(`https://edge.example/internal/tokenizers/${"cd".repeat(32)}`);
    expect(await verifyUrl(SECRET, a, NOW)).toEqual({ ok: true });
    expect(await verifyUrl(SECRET, t, NOW)).toEqual({ ok: true });
    // A signed artifact URL is no tokenizer URL.
    const swapped = new URL(a);
    swapped.pathname = `/internal/tokenizers/${"ab".repeat(32)}`;
    expect(await verifyUrl(SECRET, swapped, NOW)).toEqual({ ok: false, reason: "bad signature" });
  });

  it("keeps other query parameters and replaces a stale sig", async () => {
    const withQuery = new URL(base);
    withQuery.searchParams.set("sig", "deadbeef");
    withQuery.searchParams.set("keep", "1");
    const s = new URL(await signUrl(SECRET, withQuery, REGION, EXP));
    expect(s.searchParams.get("keep")).toBe("1");
    expect(s.searchParams.getAll("sig")).toHaveLength(1);
    expect(await verifyUrl(SECRET, s, NOW)).toEqual({ ok: true });
    expect(withQuery.searchParams.get("sig")).toBe("deadbeef");
  });

  it("refuses an expired URL, a tampered path or exp", async () => {
    const s = new URL(await signUrl(SECRET, base, REGION, EXP));
    expect(await verifyUrl(SECRET, s, EXP + 1)).toEqual({ ok: false, reason: "signature expired" });
    const path = new URL(s);
    path.pathname = "/internal/artifacts/abc124";
    expect(await verifyUrl(SECRET, path, NOW)).toEqual({ ok: false, reason: "bad signature" });
    const exp = new URL(s);
    exp.searchParams.set("exp", String(EXP + 3_600_000));
    expect(await verifyUrl(SECRET, exp, NOW)).toEqual({ ok: false, reason: "bad signature" });
  });

  it("refuses a tampered sig, the wrong secret, and a URL with no signature", async () => {
    const s = new URL(await signUrl(SECRET, base, REGION, EXP));
    expect(await verifyUrl("another-secret", s, NOW)).toEqual({ ok: false, reason: "bad signature" });
    expect(await verifyUrl([], s, NOW)).toEqual({ ok: false, reason: "bad signature" });
    const sig = s.searchParams.get("sig")!;
    const flipped = new URL(s);
    flipped.searchParams.set("sig", `${sig.slice(0, -1)}${sig.endsWith("0") ? "1" : "0"}`);
    expect(await verifyUrl(SECRET, flipped, NOW)).toEqual({ ok: false, reason: "bad signature" });
    const upper = new URL(s);
    upper.searchParams.set("sig", sig.toUpperCase());
    expect(await verifyUrl(SECRET, upper, NOW)).toEqual({ ok: false, reason: "missing signature" });
    expect((await verifyUrl(SECRET, base, NOW)).ok).toBe(false);
    const noSig = new URL(s);
    noSig.searchParams.delete("sig");
    expect((await verifyUrl(SECRET, noSig, NOW)).ok).toBe(false);
    const noExp = new URL(s);
    noExp.searchParams.delete("exp");
    expect((await verifyUrl(SECRET, noExp, NOW)).ok).toBe(false);
  });
});

describe("the router's check of the edge's authority (regions/authority.ts)", () => {
  const codec = createCodec();
  const auth = () => new EdgeAuthority([SECRET, "previous-secret-0123456789"]);
  const headersOf = (h: Record<string, string>) => (n: string) => h[n];
  /** A request whose body arrives in chunks, with no Content-Length (as a chunked upload). */
  const chunked = (chunks: Uint8Array[]) =>
    new Request("http://router/v1/infer", {
      method: "POST",
      body: new ReadableStream<Uint8Array>({
        pull(c) {
          const next = chunks.shift();
          if (next) c.enqueue(next);
          else c.close();
        },
      }),
      duplex: "half",
    } as RequestInit);

  it("verify: the current or previous secret, once per nonce", async () => {
    const a = auth();
    const h = await signRequest(SECRET, "POST", "/v1/infer", BODY);
    await expect(a.verify("POST", "/v1/infer", headersOf(h))).resolves.toMatchObject({ ok: true });
    await expect(a.verify("POST", "/v1/infer", headersOf(h))).rejects.toMatchObject({ code: "unauthorized", message: expect.stringMatching(/already used/) });
    const old = await signRequest("previous-secret-0123456789", "POST", "/v1/infer", BODY);
    await expect(a.verify("POST", "/v1/infer", headersOf(old))).resolves.toMatchObject({ ok: true });
    await expect(a.verify("POST", "/v1/infer", () => undefined)).rejects.toMatchObject({ code: "unauthorized" });
  });

  it("readBody: exactly the signed bytes; longer is cut off while streaming (payload_too_large), other bytes are unauthorized", async () => {
    const a = auth();
    const signed = async (body: Uint8Array) => a.verify("POST", "/v1/infer", headersOf(await signRequest(SECRET, "POST", "/v1/infer", body)));
    const body = new Uint8Array(300).fill(7);
    expect(await a.readBody(chunked([body.slice(0, 100), body.slice(100)]), await signed(body), 1024)).toEqual(body);
    // Past the signed length: refused at the chunk that crosses it, whatever follows.
    let pulled = 0;
    const endless = new Request("http://router/v1/infer", {
      method: "POST",
      body: new ReadableStream<Uint8Array>({
        pull(c) {
          pulled++;
          c.enqueue(new Uint8Array(256));
        },
      }),
      duplex: "half",
    } as RequestInit);
    await expect(a.readBody(endless, await signed(body), 1024)).rejects.toMatchObject({ code: "payload_too_large" });
    expect(pulled).toBeLessThan(10);
    // A signed length over the route's limit: refused before reading.
    await expect(a.readBody(chunked([]), await signed(new Uint8Array(2048)), 1024)).rejects.toMatchObject({ code: "payload_too_large" });
    // Same length, other bytes; shorter; a Content-Length that is not the signed one.
    const other = body.slice();
    other[5] = 8;
    await expect(a.readBody(chunked([other]), await signed(body), 1024)).rejects.toMatchObject({ code: "unauthorized" });
    await expect(a.readBody(chunked([body.slice(0, 10)]), await signed(body), 1024)).rejects.toMatchObject({ code: "unauthorized" });
    const lying = new Request("http://router/v1/infer", { method: "POST", body: body.slice(0, 10), headers: { "content-length": "10" } });
    await expect(a.readBody(lying, await signed(body), 1024)).rejects.toMatchObject({ code: "unauthorized" });
  });

  it("generate: decodes a request only under a grant made for exactly its bytes, once, before its deadline", async () => {
    const a = auth();
    const req = {
      requestId: "r1",
      model: {
        key: "m@1",
        account: "acc_a",
        name: "m",
        version: 1,
        sha256: "a".repeat(64),
        size: 1,
        artifactUrl: "https://edge/internal/artifacts/aa",
        signature: { inputs: [], outputs: [] },
        tokenizer: { sha256: "b".repeat(64), size: 1, url: "https://edge/internal/tokenizers/bb" },
      },
      prompt: "hi",
      params: { maxTokens: 4, temperature: 0, topK: 0, topP: 1, repetitionPenalty: 1, stop: [] },
      deadline: Date.now() + 60_000,
    };
    const frame = async (r: unknown, grantFor: unknown = r, secret = SECRET, now = Date.now()) => ({
      t: "generate" as const,
      sid: "s",
      window: 8,
      req: codec.encode(r),
      grant: await signRequest(secret, GENERATE_GRANT_METHOD, "/v1/streams", codec.encode(grantFor), now),
    });
    const good = await frame(req);
    await expect(a.generate(good, "/v1/streams")).resolves.toEqual(req);
    await expect(a.generate(good, "/v1/streams")).rejects.toMatchObject({ code: "unauthorized" }); // replay
    const altered = { ...req, model: { ...req.model, account: "acc_b" } };
    const swapped = await frame(altered, req);
    await expect(a.generate(swapped, "/v1/streams")).rejects.toMatchObject({ code: "unauthorized" });
    // The grant stays good for its own bytes: a mismatch does not use it up.
    await expect(a.generate({ ...swapped, req: codec.encode(req) }, "/v1/streams")).resolves.toEqual(req);
    await expect(a.generate(await frame(req, req, "not-this-regions-secret"), "/v1/streams")).rejects.toMatchObject({ code: "unauthorized" });
    await expect(a.generate(await frame(req, req, SECRET, Date.now() - 35_000), "/v1/streams")).rejects.toMatchObject({ code: "unauthorized" });
    // A grant for the stream socket is no grant for another path, nor an HTTP call's signature.
    await expect(a.generate(await frame(req), "/v1/other")).rejects.toMatchObject({ code: "unauthorized" });
    await expect(a.generate(await frame({ ...req, deadline: Date.now() - 1 }), "/v1/streams")).rejects.toMatchObject({ code: "deadline_exceeded" });
  });
});

describe("helpers", () => {
  it("sha256Hex: the FIPS 180-2 vector for 'abc', and the same for bytes and ArrayBuffers", async () => {
    const abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    expect(await sha256Hex("abc")).toBe(abc);
    const bytes = new TextEncoder().encode("abc");
    expect(await sha256Hex(bytes)).toBe(abc);
    expect(await sha256Hex(bytes.buffer)).toBe(abc);
    expect(await sha256Hex("")).toBe("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    const data = new Uint8Array(100_000).map((_, i) => (i * 31) & 0xff);
    expect(await sha256Hex(data)).toBe(createHash("sha256").update(data).digest("hex"));
  });

  it("toHex", () => {
    expect(toHex(new Uint8Array([0, 1, 15, 16, 255]))).toBe("00010f10ff");
    expect(toHex(new Uint8Array([0xab, 0xcd]).buffer)).toBe("abcd");
    expect(toHex(new Uint8Array(0))).toBe("");
  });
});

describe("node:crypto primitives (the router's) and WebCrypto's (the edge's)", () => {
  const sizes = [0, 1, 63, 64, 1000, INLINE_HASH_BYTES, INLINE_HASH_BYTES + 1, 300_000];
  const bytes = (n: number) => {
    const b = new Uint8Array(n);
    for (let i = 0; i < n; i++) b[i] = (i * 131 + 7) & 0xff;
    return b;
  };

  it("give the same hash and MAC for every size, inline and off-loop", async () => {
    for (const n of sizes) {
      const data = bytes(n);
      expect(toHex(await nodeCryptoPrimitives.sha256(data)), `sha256 ${n}`).toBe(toHex(await webCryptoPrimitives.sha256(data)));
      for (const secret of ["s", "a-region-secret-of-some-length", "é".repeat(70)]) {
        expect(toHex(await nodeCryptoPrimitives.hmacSha256(secret, data)), `hmac ${n}`).toBe(toHex(await webCryptoPrimitives.hmacSha256(secret, data)));
      }
    }
  });

  it("what one signs the other verifies, and a changed byte or secret is refused by both", async () => {
    const body = bytes(5000);
    const path = "/v1/infer";
    try {
      for (const [signer, verifier] of [
        [webCryptoPrimitives, nodeCryptoPrimitives],
        [nodeCryptoPrimitives, webCryptoPrimitives],
      ] as const) {
        useCryptoPrimitives(signer);
        const headers = await signRequest("secret-1", "POST", path, body);
        useCryptoPrimitives(verifier);
        const signed = await verifyRequest(["secret-0", "secret-1"], "POST", path, (n) => headers[n]);
        expect(signed.ok).toBe(true);
        expect(await bodyMatches(signed as SignedRequest, body)).toBe(true);
        const changed = body.slice();
        changed[4999] = changed[4999]! ^ 1;
        expect(await bodyMatches(signed as SignedRequest, changed)).toBe(false);
        const other = await verifyRequest("secret-2", "POST", path, (n) => headers[n]);
        expect(other).toEqual({ ok: false, reason: "bad signature" });
        const mac = headers[SIGNATURE_HEADER]!;
        const flipped: Record<string, string> = { ...headers, [SIGNATURE_HEADER]: (mac[0] === "0" ? "1" : "0") + mac.slice(1) };
        expect(await verifyRequest("secret-1", "POST", path, (n) => flipped[n])).toEqual({ ok: false, reason: "bad signature" });
      }
    } finally {
      useCryptoPrimitives(webCryptoPrimitives);
    }
  });
});
