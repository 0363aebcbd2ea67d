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

export function expectClose(actual: number[], expected: number[], tol = 1e-5): void {
  expect(actual.length).toBe(expected.length);
  actual.forEach((v, i) => expect(Math.abs(v - expected[i]!), `element ${i}: ${v} vs ${expected[i]}`).toBeLessThan(tol));
}
