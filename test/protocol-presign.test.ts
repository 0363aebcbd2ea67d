// protocol/presign.ts: S3 SigV4 presigned GET URLs, checked byte for byte against AWS's published
// example (Amazon S3 API reference, "Authenticating Requests: Using Query Parameters (AWS
// Signature Version 4)": GET examplebucket/test.txt, 2013-05-24, 86400 s), and the verifier the
// local stand-in uses: a good URL passes; a changed path, parameter, key, clock or host fails.
import { describe, expect, it } from "vitest";
import { amzDate, presignGet, verifyPresignedGet, type S3Credentials } from "../protocol/presign.js";

const AWS_EXAMPLE: S3Credentials = {
  accessKeyId: "AKIAIOSFODNN7EXAMPLE",
  secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
  region: "us-east-1",
};
const AWS_EXAMPLE_URL =
  "https://examplebucket.s3.amazonaws.com/test.txt" +
  "?X-Amz-Algorithm=AWS4-HMAC-SHA256" +
  "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request" +
  "&X-Amz-Date=20130524T000000Z" +
  "&X-Amz-Expires=86400" +
  "&X-Amz-SignedHeaders=host" +
  "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404";
const SIGNED_AT = new Date(Date.UTC(2013, 4, 24, 0, 0, 0));

describe("presignGet", () => {
  it("produces AWS's published example URL byte for byte", async () => {
    const url = await presignGet(AWS_EXAMPLE, new URL("https://examplebucket.s3.amazonaws.com"), "test.txt", 86400, SIGNED_AT);
    expect(url).toBe(AWS_EXAMPLE_URL);
  });

  it("formats the SigV4 date", () => {
    expect(amzDate(SIGNED_AT)).toBe("20130524T000000Z");
    expect(amzDate(new Date(Date.UTC(2026, 11, 2, 17, 5, 9, 123)))).toBe("20261202T170509Z");
  });

  it("signs an R2 path-style URL with the bucket in the path and region auto", async () => {
    const r2: S3Credentials = { accessKeyId: "r2-read-key", secretAccessKey: "r2-read-secret-0123456789", region: "auto" };
    const url = new URL(await presignGet(r2, new URL("https://acct.r2.cloudflarestorage.com"), "mesh-artifacts/artifacts/ab.onnx", 900));
    expect(url.origin + url.pathname).toBe("https://acct.r2.cloudflarestorage.com/mesh-artifacts/artifacts/ab.onnx");
    expect(url.searchParams.get("X-Amz-Credential")).toMatch(/^r2-read-key\/\d{8}\/auto\/s3\/aws4_request$/);
    expect(url.searchParams.get("X-Amz-Expires")).toBe("900");
  });

  it("refuses a life SigV4 does not allow", async () => {
    await expect(presignGet(AWS_EXAMPLE, new URL("https://h"), "b/k", 0)).rejects.toThrow();
    await expect(presignGet(AWS_EXAMPLE, new URL("https://h"), "b/k", 7 * 24 * 3600 + 1)).rejects.toThrow();
  });
});

describe("verifyPresignedGet", () => {
  const host = "examplebucket.s3.amazonaws.com";
  const inLife = SIGNED_AT.getTime() + 3600_000;

  it("accepts AWS's example within its life", async () => {
    expect(await verifyPresignedGet(AWS_EXAMPLE, new URL(AWS_EXAMPLE_URL), host, inLife)).toEqual({ ok: true });
  });

  it("refuses it once expired, or dated too far ahead", async () => {
    const expired = await verifyPresignedGet(AWS_EXAMPLE, new URL(AWS_EXAMPLE_URL), host, SIGNED_AT.getTime() + 86400_000 + 1);
    expect(expired).toEqual({ ok: false, reason: "signature expired" });
    const early = await verifyPresignedGet(AWS_EXAMPLE, new URL(AWS_EXAMPLE_URL), host, SIGNED_AT.getTime() - 3600_000);
    expect(early).toEqual({ ok: false, reason: "signed in the future" });
  });

  it("refuses a tampered path, parameter or signature, another host, and another key", async () => {
    const tamper = async (edit: (u: URL) => void, h = host, creds = AWS_EXAMPLE) => {
      const u = new URL(AWS_EXAMPLE_URL);
      edit(u);
      return verifyPresignedGet(creds, u, h, inLife);
    };
    expect((await tamper((u) => (u.pathname = "/test.txu"))).ok).toBe(false);
    expect((await tamper((u) => u.searchParams.set("X-Amz-Expires", "86401"))).ok).toBe(false);
    expect((await tamper((u) => u.searchParams.append("extra", "1"))).ok).toBe(false);
    expect((await tamper((u) => u.searchParams.set("X-Amz-Signature", "0".repeat(64)))).ok).toBe(false);
    expect((await tamper((u) => u.searchParams.delete("X-Amz-Signature"))).ok).toBe(false);
    expect((await tamper(() => undefined, "other.example.com")).ok).toBe(false);
    expect(await tamper(() => undefined, host, { ...AWS_EXAMPLE, accessKeyId: "AKIAOTHERKEY" })).toEqual({ ok: false, reason: "unknown credential" });
    expect(await tamper(() => undefined, host, { ...AWS_EXAMPLE, secretAccessKey: "another-secret" })).toEqual({ ok: false, reason: "bad signature" });
  });

  it("round-trips with presignGet for keys with characters SigV4 escapes", async () => {
    const u = new URL(await presignGet(AWS_EXAMPLE, new URL("http://127.0.0.1:8787/r2/"), "bucket/dir/a b+c%é.onnx", 60));
    expect(u.pathname).toBe("/r2/bucket/dir/a%20b%2Bc%25%C3%A9.onnx");
    expect(await verifyPresignedGet(AWS_EXAMPLE, u, "127.0.0.1:8787")).toEqual({ ok: true });
  });
});
