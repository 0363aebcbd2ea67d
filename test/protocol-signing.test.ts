// protocol/signing.ts: HMAC-signed requests (edge -> region) and signed, expiring artifact URLs
// (edge -> node), plus the hex/sha256/constant-time helpers they rest on.
import { createHash, createHmac } from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  DEFAULT_MAX_AGE_MS,
  SIGNATURE_HEADER,
  STAMP_HEADER,
  sha256Hex,
  signRequest,
  signUrl,
  timingSafeEqualString,
  toHex,
  verifyRequest,
  verifyUrl,
} from "../protocol/signing.js";

const SECRET = "mesh-secret-for-tests";
const NOW = 1_750_000_000_000;
const PATH = "/v1/infer?x=1";
const BODY = new TextEncoder().encode('{"inputs":[1,2,3]}');

async function signed(body: Uint8Array = BODY, method = "POST", path = PATH, now = NOW) {
  const headers = await signRequest(SECRET, method, path, body, now);
  return { stamp: headers[STAMP_HEADER]!, sig: headers[SIGNATURE_HEADER]! };
}

describe("signRequest / verifyRequest", () => {
  it("returns the two headers: the stamp and a 64-hex-digit HMAC", async () => {
    const headers = await signRequest(SECRET, "POST", PATH, BODY, NOW);
    expect(Object.keys(headers).sort()).toEqual([SIGNATURE_HEADER, STAMP_HEADER].sort());
    expect(headers[STAMP_HEADER]).toBe(String(NOW));
    expect(headers[SIGNATURE_HEADER]).toMatch(/^[0-9a-f]{64}$/);
  });

  it("is HMAC-SHA256 over stamp, method, path and body", async () => {
    const { sig } = await signed();
    const expected = createHmac("sha256", SECRET)
      .update(`${NOW}\nPOST\n${PATH}\n`)
      .update(BODY)
      .digest("hex");
    expect(sig).toBe(expected);
  });

  it("happy path: verifies with and without a body, within the allowed skew", async () => {
    const { stamp, sig } = await signed();
    expect(await verifyRequest(SECRET, "POST", PATH, BODY, stamp, sig, DEFAULT_MAX_AGE_MS, NOW)).toEqual({ ok: true });
    // Clock skew either way up to maxAge is tolerated.
    expect(await verifyRequest(SECRET, "POST", PATH, BODY, stamp, sig, DEFAULT_MAX_AGE_MS, NOW + DEFAULT_MAX_AGE_MS)).toEqual({
      ok: true,
    });
    expect(await verifyRequest(SECRET, "POST", PATH, BODY, stamp, sig, DEFAULT_MAX_AGE_MS, NOW - DEFAULT_MAX_AGE_MS)).toEqual({
      ok: true,
    });
    const h = await signRequest(SECRET, "GET", "/healthz", undefined, NOW);
    const get = { stamp: h[STAMP_HEADER]!, sig: h[SIGNATURE_HEADER]! };
    expect(await verifyRequest(SECRET, "GET", "/healthz", undefined, get.stamp, get.sig, DEFAULT_MAX_AGE_MS, NOW)).toEqual({
      ok: true,
    });
    // An empty body signs the same as no body.
    expect(await verifyRequest(SECRET, "GET", "/healthz", new Uint8Array(0), get.stamp, get.sig, DEFAULT_MAX_AGE_MS, NOW)).toEqual({
      ok: true,
    });
  });

  it("uses Date.now() by default", async () => {
    const headers = await signRequest(SECRET, "POST", PATH, BODY);
    expect(await verifyRequest(SECRET, "POST", PATH, BODY, headers[STAMP_HEADER], headers[SIGNATURE_HEADER])).toEqual({ ok: true });
  });

  it("the method is case-insensitive", async () => {
    const { stamp, sig } = await signed(BODY, "post");
    expect(await verifyRequest(SECRET, "POST", PATH, BODY, stamp, sig, DEFAULT_MAX_AGE_MS, NOW)).toEqual({ ok: true });
  });

  it("accepts a body that is a view into a larger buffer", async () => {
    const big = new Uint8Array(BODY.length + 10);
    big.set(BODY, 5);
    const view = big.subarray(5, 5 + BODY.length);
    const { stamp, sig } = await signed(view);
    expect(await verifyRequest(SECRET, "POST", PATH, BODY, stamp, sig, DEFAULT_MAX_AGE_MS, NOW)).toEqual({ ok: true });
  });

  it("refuses a tampered body", async () => {
    const { stamp, sig } = await signed();
    const tampered = BODY.slice();
    tampered[3] = tampered[3]! ^ 1;
    expect(await verifyRequest(SECRET, "POST", PATH, tampered, stamp, sig, DEFAULT_MAX_AGE_MS, NOW)).toEqual({
      ok: false,
      reason: "bad signature",
    });
    const longer = new Uint8Array([...BODY, 0x20]);
    expect(await verifyRequest(SECRET, "POST", PATH, longer, stamp, sig, DEFAULT_MAX_AGE_MS, NOW)).toEqual({
      ok: false,
      reason: "bad signature",
    });
    expect(await verifyRequest(SECRET, "POST", PATH, undefined, stamp, sig, DEFAULT_MAX_AGE_MS, NOW)).toEqual({
      ok: false,
      reason: "bad signature",
    });
  });

  it("refuses a tampered path (including the query)", async () => {
    const { stamp, sig } = await signed();
    for (const path of ["/v1/infer", "/v1/infer?x=2", "/v1/other?x=1", "/v1/infer?x=1&y=1"]) {
      expect(await verifyRequest(SECRET, "POST", path, BODY, stamp, sig, DEFAULT_MAX_AGE_MS, NOW)).toEqual({
        ok: false,
        reason: "bad signature",
      });
    }
  });

  it("refuses a tampered method", async () => {
    const { stamp, sig } = await signed();
    expect(await verifyRequest(SECRET, "PUT", PATH, BODY, stamp, sig, DEFAULT_MAX_AGE_MS, NOW)).toEqual({
      ok: false,
      reason: "bad signature",
    });
  });

  it("refuses a tampered stamp", async () => {
    const { sig } = await signed();
    expect(await verifyRequest(SECRET, "POST", PATH, BODY, String(NOW + 1), sig, DEFAULT_MAX_AGE_MS, NOW)).toEqual({
      ok: false,
      reason: "bad signature",
    });
  });

  it("refuses the wrong secret", async () => {
    const { stamp, sig } = await signed();
    expect(await verifyRequest("another-secret", "POST", PATH, BODY, stamp, sig, DEFAULT_MAX_AGE_MS, NOW)).toEqual({
      ok: false,
      reason: "bad signature",
    });
  });

  it("refuses an expired stamp, or one from the far future", async () => {
    const { stamp, sig } = await signed();
    const later = NOW + DEFAULT_MAX_AGE_MS + 1;
    expect(await verifyRequest(SECRET, "POST", PATH, BODY, stamp, sig, DEFAULT_MAX_AGE_MS, later)).toEqual({
      ok: false,
      reason: "signature expired",
    });
    expect(await verifyRequest(SECRET, "POST", PATH, BODY, stamp, sig, DEFAULT_MAX_AGE_MS, NOW + 86_400_000)).toEqual({
      ok: false,
      reason: "signature expired",
    });
    expect(await verifyRequest(SECRET, "POST", PATH, BODY, stamp, sig, DEFAULT_MAX_AGE_MS, NOW - 86_400_000)).toEqual({
      ok: false,
      reason: "signature expired",
    });
    // A tighter maxAge applies.
    expect(await verifyRequest(SECRET, "POST", PATH, BODY, stamp, sig, 1_000, NOW + 1_001)).toEqual({
      ok: false,
      reason: "signature expired",
    });
    // A stamp that is not a number is refused without checking the HMAC.
    expect(await verifyRequest(SECRET, "POST", PATH, BODY, "soon", sig, DEFAULT_MAX_AGE_MS, NOW)).toMatchObject({ ok: false });
  });

  it("refuses missing headers", async () => {
    const { stamp, sig } = await signed();
    for (const [s, g] of [
      [null, sig],
      [undefined, sig],
      ["", sig],
      [stamp, null],
      [stamp, undefined],
      [stamp, ""],
      [null, null],
    ] as const) {
      expect(await verifyRequest(SECRET, "POST", PATH, BODY, s, g, DEFAULT_MAX_AGE_MS, NOW)).toEqual({
        ok: false,
        reason: "missing signature",
      });
    }
  });

  it("refuses malformed hex", async () => {
    const { stamp, sig } = await signed();
    for (const bad of [sig.slice(1), `${sig}0`, sig.toUpperCase(), `zz${sig.slice(2)}`, "not hex at all", `${sig.slice(0, 62)}-1`]) {
      expect(await verifyRequest(SECRET, "POST", PATH, BODY, stamp, bad, DEFAULT_MAX_AGE_MS, NOW)).toEqual({
        ok: false,
        reason: "malformed signature",
      });
    }
    // Well-formed hex of the wrong length is not malformed, just wrong.
    expect(await verifyRequest(SECRET, "POST", PATH, BODY, stamp, sig.slice(2), DEFAULT_MAX_AGE_MS, NOW)).toEqual({
      ok: false,
      reason: "bad signature",
    });
  });
});

describe("signUrl / verifyUrl", () => {
  const base = new URL("https://edge.example/internal/artifacts/abc123");
  const EXP = NOW + 60_000;

  it("happy path: adds exp and sig and verifies until exp", async () => {
    const s = new URL(await signUrl(SECRET, base, EXP));
    expect(s.pathname).toBe(base.pathname);
    expect(s.searchParams.get("exp")).toBe(String(EXP));
    expect(s.searchParams.get("sig")).toMatch(/^[0-9a-f]{64}$/);
    expect(await verifyUrl(SECRET, s, NOW)).toEqual({ ok: true });
    expect(await verifyUrl(SECRET, s, EXP)).toEqual({ ok: true });
  });

  it("keeps other query parameters and replaces a stale sig", async () => {
    const withQuery = new URL(base);
    withQuery.searchParams.set("sig", "deadbeef");
    withQuery.searchParams.set("keep", "1");
    const s = new URL(await signUrl(SECRET, withQuery, EXP));
    expect(s.searchParams.get("keep")).toBe("1");
    expect(s.searchParams.getAll("sig")).toHaveLength(1);
    expect(await verifyUrl(SECRET, s, NOW)).toEqual({ ok: true });
    // The input URL is not modified.
    expect(withQuery.searchParams.get("sig")).toBe("deadbeef");
  });

  it("refuses an expired URL", async () => {
    const s = new URL(await signUrl(SECRET, base, EXP));
    expect(await verifyUrl(SECRET, s, EXP + 1)).toEqual({ ok: false, reason: "signature expired" });
  });

  it("refuses a tampered path", async () => {
    const s = new URL(await signUrl(SECRET, base, EXP));
    s.pathname = "/internal/artifacts/abc124";
    expect(await verifyUrl(SECRET, s, NOW)).toEqual({ ok: false, reason: "bad signature" });
  });

  it("refuses a tampered exp (extending the lifetime)", async () => {
    const s = new URL(await signUrl(SECRET, base, EXP));
    s.searchParams.set("exp", String(EXP + 3_600_000));
    expect(await verifyUrl(SECRET, s, NOW)).toEqual({ ok: false, reason: "bad signature" });
  });

  it("refuses a tampered sig, the wrong secret, and a URL with no signature", async () => {
    const s = new URL(await signUrl(SECRET, base, EXP));
    expect(await verifyUrl("another-secret", s, NOW)).toEqual({ ok: false, reason: "bad signature" });

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

describe("helpers", () => {
  it("timingSafeEqualString", () => {
    expect(timingSafeEqualString("", "")).toBe(true);
    expect(timingSafeEqualString("abc", "abc")).toBe(true);
    expect(timingSafeEqualString("héllo ✓", "héllo ✓")).toBe(true);
    expect(timingSafeEqualString("abc", "abd")).toBe(false);
    expect(timingSafeEqualString("abc", "ab")).toBe(false);
    expect(timingSafeEqualString("ab", "abc")).toBe(false);
    expect(timingSafeEqualString("", "a")).toBe(false);
    expect(timingSafeEqualString("a\u0000", "a")).toBe(false);
    // Same UTF-16 length, different UTF-8 bytes.
    expect(timingSafeEqualString("é", "e")).toBe(false);
  });

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
