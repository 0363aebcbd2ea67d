// Small helpers for end-to-end tests: calls against a running mesh, and checks of the one
// error envelope every failure must come back in.

import { expect } from "vitest";

export interface Answer {
  status: number;
  headers: Headers;
  body: any;
}

export async function call(
  url: string,
  init: { method?: string; key?: string; json?: unknown; body?: BodyInit; headers?: Record<string, string> } = {},
): Promise<Answer> {
  const headers: Record<string, string> = { ...init.headers };
  if (init.key) headers.authorization = `Bearer ${init.key}`;
  let body = init.body;
  if (init.json !== undefined) {
    body = JSON.stringify(init.json);
    headers["content-type"] ??= "application/json";
  }
  const res = await fetch(url, { method: init.method ?? (body ? "POST" : "GET"), headers, body });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    /* not JSON: the assertion that cares will say so */
  }
  return { status: res.status, headers: res.headers, body: parsed };
}

/** Asserts the one error shape: {error: string, code, requestId}, and the id matches the header. */
/** OpenAI's error codes on /openai/v1 (edge/openai-format.ts) for the mesh codes they stand for. */
const FROM_OPENAI: Record<string, string> = {
  invalid_api_key: "unauthorized",
  insufficient_permissions: "forbidden",
  rate_limit_exceeded: "rate_limited",
  insufficient_quota: "quota_exceeded",
};

/**
 * The mesh error code of an answer in either error shape: the mesh's envelope, or OpenAI's
 * `{"error": {"code", "request_id", ...}}` on the OpenAI surface (mapped back to the mesh's code).
 */
export function errorCodeOf(a: Answer): string | undefined {
  const e = a.body?.error;
  if (e && typeof e === "object") return FROM_OPENAI[e.code] ?? e.code ?? undefined;
  return a.body?.code;
}

/** expectError for either error shape (see errorCodeOf): routes under /openai/v1 answer in OpenAI's. */
export function expectAnyError(a: Answer, status: number, code: string): void {
  const e = a.body?.error;
  if (!(e && typeof e === "object")) return expectError(a, status, code);
  expect(a.status, JSON.stringify(a.body)).toBe(status);
  expect(errorCodeOf(a)).toBe(code);
  expect(typeof e.message).toBe("string");
  expect(typeof e.type).toBe("string");
  if (a.headers.get("x-request-id")) expect(e.request_id).toBe(a.headers.get("x-request-id"));
  expect(JSON.stringify(a.body)).not.toMatch(/at .*\.(ts|js):\d+/);
}

export function expectError(a: Answer, status: number, code: string): void {
  expect(a.status, JSON.stringify(a.body)).toBe(status);
  expect(Object.keys(a.body).sort()).toEqual(["code", "error", "requestId"]);
  expect(typeof a.body.error).toBe("string");
  expect(a.body.error.length).toBeGreaterThan(5);
  expect(a.body.code).toBe(code);
  expect(a.body.requestId).toMatch(/^[A-Za-z0-9._-]+$/);
  if (a.headers.get("x-request-id")) expect(a.body.requestId).toBe(a.headers.get("x-request-id"));
  expect(JSON.stringify(a.body)).not.toMatch(/at .*\.(ts|js):\d+/); // never a stack
}

export function mlpBody(rows: number[][], extra: Record<string, unknown> = {}) {
  return { inputs: [{ name: "x", datatype: "FP32", shape: [rows.length, 4], data: rows }], ...extra };
}

/** Three values per datatype for the demo-types model (one identity input per datatype), edges of each range included. */
export const DEMO_TYPES_VALUES: Record<string, unknown[]> = {
  INT64: [1, -2, 3000000000],
  INT32: [1, -2, 7],
  UINT8: [0, 1, 255],
  INT8: [-128, 0, 127],
  UINT16: [0, 1, 65535],
  INT16: [-32768, 0, 32767],
  UINT32: [0, 1, 4294967295],
  UINT64: [0, 1, 2 ** 40],
  FP64: [0.1, -2.5, 1e100],
  FP16: [1.5, -2, 0.25],
  BOOL: [true, false, true],
  BYTES: ["a", "héllo", ""],
};

export function expectClose(actual: number[], expected: number[], tol = 1e-5): void {
  expect(actual.length).toBe(expected.length);
  actual.forEach((v, i) => expect(Math.abs(v - expected[i]!), `element ${i}: ${v} vs ${expected[i]}`).toBeLessThan(tol));
}

/**
 * POSTs over a raw socket and reads whatever the server answers, even when it answers before
 * the body is sent and closes (as it should for an oversize body): fetch reports that as a
 * reset write instead of the response.
 */
/** An HTTP/1.1 answer read off a raw socket (status, headers, a small JSON or text body); null when there is none. */
export function parseRawAnswer(text: string): Answer | null {
  const m = /^HTTP\/1\.1 (\d{3})/.exec(text);
  if (!m) return null;
  const [head, ...rest] = text.split("\r\n\r\n");
  const h = new Headers();
  for (const line of head!.split("\r\n").slice(1)) {
    const i = line.indexOf(":");
    if (i > 0) h.append(line.slice(0, i).trim(), line.slice(i + 1).trim());
  }
  let payload = rest.join("\r\n\r\n");
  if (/chunked/i.test(h.get("transfer-encoding") ?? "")) {
    // Enough for a small JSON body in one or a few chunks.
    payload = payload.replace(/(^|\r\n)[0-9a-f]+\r\n/gi, "").replace(/\r\n$/, "");
  }
  let body: unknown = payload;
  try {
    body = JSON.parse(payload);
  } catch {
    /* leave as text */
  }
  return { status: Number(m[1]), headers: h, body };
}

export async function rawPost(
  url: string,
  headers: Record<string, string>,
  body: Buffer,
  opts: { announceOnly?: boolean; method?: string } = {},
): Promise<Answer> {
  const { connect } = await import("node:net");
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(u.port), u.hostname);
    const chunks: Buffer[] = [];
    socket.on("data", (d) => {
      chunks.push(d);
      // Answered before the body was wanted: stop here, as a client honouring it would.
      if (opts.announceOnly) socket.end();
    });
    socket.on("error", () => undefined); // EPIPE/ECONNRESET while writing: read what came back
    socket.on("close", () => {
      const answer = parseRawAnswer(Buffer.concat(chunks).toString("utf8"));
      if (!answer) return reject(new Error(`no HTTP response: ${Buffer.concat(chunks).toString("utf8").slice(0, 200)}`));
      resolve(answer);
    });
    const head = [`${opts.method ?? "POST"} ${u.pathname} HTTP/1.1`, `Host: ${u.host}`, `Content-Length: ${body.length}`, "Connection: close"];
    for (const [k, v] of Object.entries(headers)) head.push(`${k}: ${v}`);
    socket.write(head.join("\r\n") + "\r\n\r\n");
    // announceOnly: send the headers (with the body's length) and wait for the answer. A
    // server that refuses by Content-Length answers now; sending a body it will not read
    // only races its close (an RST can discard the answer before the client reads it).
    if (!opts.announceOnly) socket.end(body);
  });
}
