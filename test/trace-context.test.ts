// W3C traceparent parsing and formatting (protocol/trace-context.ts): the spec's examples, its
// invalid forms (which start a new trace), and the spans each process opens under a parent.

import { describe, expect, it } from "vitest";
import { childSpan, formatTraceparent, parseTraceparent, spanFrom } from "../protocol/trace-context.js";

// https://www.w3.org/TR/trace-context/#examples-of-http-traceparent-headers
const SPEC_SAMPLED = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const SPEC_NOT_SAMPLED = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";

describe("parseTraceparent", () => {
  it("reads the spec's examples", () => {
    expect(parseTraceparent(SPEC_SAMPLED)).toEqual({ traceId: "4bf92f3577b34da6a3ce929d0e0e4736", spanId: "00f067aa0ba902b7", flags: "01" });
    expect(parseTraceparent(SPEC_NOT_SAMPLED)?.flags).toBe("00");
  });

  it("reads a future version by its first four fields, with more after them", () => {
    expect(parseTraceparent("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds")).toEqual({
      traceId: "4bf92f3577b34da6a3ce929d0e0e4736",
      spanId: "00f067aa0ba902b7",
      flags: "01",
    });
  });

  it.each([
    ["absent", undefined],
    ["empty", ""],
    ["version ff", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"],
    ["version 00 with extra fields", `${SPEC_SAMPLED}-extra`],
    ["all-zero trace id", "00-00000000000000000000000000000000-00f067aa0ba902b7-01"],
    ["all-zero parent id", "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"],
    ["uppercase hex", "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01"],
    ["short trace id", "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01"],
    ["long parent id", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7a-01"],
    ["non-hex", "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01"],
    ["wrong separators", "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01"],
    ["missing flags", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7"],
    ["one-digit version", "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"],
    ["future version glued to more text", "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01extra"],
    ["far too long", `cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-${"x".repeat(1000)}`],
  ])("refuses %s", (_what, value) => {
    expect(parseTraceparent(value)).toBeNull();
  });

  it("formats what it parses back to the same value (version 00)", () => {
    expect(formatTraceparent(parseTraceparent(SPEC_SAMPLED)!)).toBe(SPEC_SAMPLED);
  });
});

describe("spans", () => {
  it("a child keeps the trace id and flags and gets a new span id", () => {
    const parent = parseTraceparent(SPEC_NOT_SAMPLED)!;
    const child = childSpan(parent);
    expect(child.traceId).toBe(parent.traceId);
    expect(child.flags).toBe("00");
    expect(child.spanId).toMatch(/^[0-9a-f]{16}$/);
    expect(child.spanId).not.toBe(parent.spanId);
    expect(parseTraceparent(formatTraceparent(child))).toEqual(child);
  });

  it("an invalid or absent parent starts a new, sampled trace", () => {
    const a = spanFrom("garbage");
    const b = spanFrom(undefined);
    expect(a.traceId).toMatch(/^[0-9a-f]{32}$/);
    expect(a.traceId).not.toBe(b.traceId);
    expect(a.flags).toBe("01");
    expect(parseTraceparent(formatTraceparent(a))).toEqual(a);
  });
});
