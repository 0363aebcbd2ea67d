// formats/tensor.ts: an OIP JSON inference body validated against a model signature and turned
// into the typed arrays the mesh carries, plus the FP16 bit conversions and the way back to JSON.
import { describe, expect, it } from "vitest";
import type { ModelSignature, OipDatatype, TensorSpec } from "../formats/datatypes.js";
import { OIP_DATATYPES } from "../formats/datatypes.js";
import {
  TensorError,
  decodeTensorData,
  elementCount,
  fromHalfBits,
  parseInferRequest,
  toHalfBits,
  toJsonTensor,
  type TensorData,
} from "../formats/tensor.js";

function sig(inputs: TensorSpec[], outputs: TensorSpec[] = [{ name: "y", datatype: "FP32", shape: [-1] }]): ModelSignature {
  return { inputs, outputs };
}

function one(datatype: OipDatatype, shape: number[]): ModelSignature {
  return sig([{ name: "x", datatype, shape }]);
}

function body(datatype: string, shape: unknown, data: unknown, extra: Record<string, unknown> = {}) {
  return { inputs: [{ name: "x", datatype, shape, data }], ...extra };
}

/** parseInferRequest, expected to fail; returns the TensorError's message. */
function refusal(b: unknown, s: ModelSignature): string {
  try {
    parseInferRequest(b, s);
  } catch (err) {
    expect(err).toBeInstanceOf(TensorError);
    return (err as Error).message;
  }
  throw new Error("parseInferRequest accepted a request it should refuse");
}

describe("parseInferRequest: every OIP datatype", () => {
  const cases: {
    datatype: OipDatatype;
    data: unknown[];
    ctor: new (...args: never[]) => TensorData | unknown[];
    wire: unknown[];
    json: unknown[];
  }[] = [
    { datatype: "FP32", data: [1.5, -2, 0, 3.25], ctor: Float32Array, wire: [1.5, -2, 0, 3.25], json: [1.5, -2, 0, 3.25] },
    { datatype: "FP64", data: [0.1, -1e300, 5e-324, 2], ctor: Float64Array, wire: [0.1, -1e300, 5e-324, 2], json: [0.1, -1e300, 5e-324, 2] },
    // 1 = 0x3c00, -2 = 0xc000, 65504 = 0x7bff (largest half), 0.5 = 0x3800
    { datatype: "FP16", data: [1, -2, 65504, 0.5], ctor: Uint16Array, wire: [0x3c00, 0xc000, 0x7bff, 0x3800], json: [1, -2, 65504, 0.5] },
    // bfloat16 keeps the top 16 bits of the float32: 1 = 0x3f80, -2 = 0xc000, 1.5 = 0x3fc0, 0 = 0
    { datatype: "BF16", data: [1, -2, 1.5, 0], ctor: Uint16Array, wire: [0x3f80, 0xc000, 0x3fc0, 0], json: [1, -2, 1.5, 0] },
    { datatype: "INT8", data: [-128, 127, 0, -1], ctor: Int8Array, wire: [-128, 127, 0, -1], json: [-128, 127, 0, -1] },
    { datatype: "INT16", data: [-32768, 32767, 0, 1], ctor: Int16Array, wire: [-32768, 32767, 0, 1], json: [-32768, 32767, 0, 1] },
    {
      datatype: "INT32",
      data: [-2147483648, 2147483647, 0, 7],
      ctor: Int32Array,
      wire: [-2147483648, 2147483647, 0, 7],
      json: [-2147483648, 2147483647, 0, 7],
    },
    {
      datatype: "INT64",
      data: [Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER, 0, -5],
      ctor: BigInt64Array,
      wire: [BigInt(Number.MIN_SAFE_INTEGER), BigInt(Number.MAX_SAFE_INTEGER), 0n, -5n],
      json: [Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER, 0, -5],
    },
    { datatype: "UINT8", data: [0, 255, 1, 128], ctor: Uint8Array, wire: [0, 255, 1, 128], json: [0, 255, 1, 128] },
    { datatype: "UINT16", data: [0, 65535, 1, 2], ctor: Uint16Array, wire: [0, 65535, 1, 2], json: [0, 65535, 1, 2] },
    { datatype: "UINT32", data: [0, 4294967295, 1, 2], ctor: Uint32Array, wire: [0, 4294967295, 1, 2], json: [0, 4294967295, 1, 2] },
    {
      datatype: "UINT64",
      data: [0, Number.MAX_SAFE_INTEGER, 1, 2],
      ctor: BigUint64Array,
      wire: [0n, BigInt(Number.MAX_SAFE_INTEGER), 1n, 2n],
      json: [0, Number.MAX_SAFE_INTEGER, 1, 2],
    },
    { datatype: "BOOL", data: [true, false, 1, 0], ctor: Uint8Array, wire: [1, 0, 1, 0], json: [true, false, true, false] },
    { datatype: "BYTES", data: ["a", "", "héllo", "{}"], ctor: Array, wire: ["a", "", "héllo", "{}"], json: ["a", "", "héllo", "{}"] },
  ];

  it("the cases cover every datatype the module names", () => {
    expect(new Set(cases.map((c) => c.datatype))).toEqual(new Set(OIP_DATATYPES));
  });

  for (const c of cases) {
    it(`${c.datatype}: flat data`, () => {
      const parsed = parseInferRequest(body(c.datatype, [4], c.data), one(c.datatype, [4]));
      expect(parsed.inputs).toHaveLength(1);
      const t = parsed.inputs[0]!;
      expect(t.name).toBe("x");
      expect(t.datatype).toBe(c.datatype);
      expect(t.shape).toEqual([4]);
      expect(t.data).toBeInstanceOf(c.ctor);
      expect(Array.from(t.data as ArrayLike<unknown>)).toEqual(c.wire);
      expect(decodeTensorData(c.datatype, t.data)).toEqual(c.json);
      expect(toJsonTensor(t)).toEqual({ name: "x", datatype: c.datatype, shape: [4], data: c.json });
    });

    it(`${c.datatype}: nested data is flattened row-major`, () => {
      const nested = [
        [c.data[0], c.data[1]],
        [c.data[2], c.data[3]],
      ];
      const t = parseInferRequest(body(c.datatype, [2, 2], nested), one(c.datatype, [2, 2])).inputs[0]!;
      expect(t.shape).toEqual([2, 2]);
      expect(Array.from(t.data as ArrayLike<unknown>)).toEqual(c.wire);
    });
  }

  it("deeper nesting (rank 3) flattens in row-major order", () => {
    const data = [
      [
        [1, 2, 3],
        [4, 5, 6],
      ],
      [
        [7, 8, 9],
        [10, 11, 12],
      ],
    ];
    const t = parseInferRequest(body("INT32", [2, 2, 3], data), one("INT32", [2, 2, 3])).inputs[0]!;
    expect(Array.from(t.data as Int32Array)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
  });

  it("a flat data array is accepted for a rank-2 shape", () => {
    const t = parseInferRequest(body("FP32", [2, 3], [1, 2, 3, 4, 5, 6]), one("FP32", [2, 3])).inputs[0]!;
    expect(Array.from(t.data as Float32Array)).toEqual([1, 2, 3, 4, 5, 6]);
  });
});

describe("parseInferRequest: shapes", () => {
  it("a dynamic dimension (-1) accepts any size, including 0", () => {
    const s = one("FP32", [-1, 2]);
    for (const n of [0, 1, 3, 17]) {
      const data = Array.from({ length: n * 2 }, (_, i) => i);
      const t = parseInferRequest(body("FP32", [n, 2], data), s).inputs[0]!;
      expect(t.shape).toEqual([n, 2]);
      expect(t.data).toHaveLength(n * 2);
    }
  });

  it("all-dynamic dims accept any shape of that rank", () => {
    const s = one("UINT8", [-1, -1]);
    expect(parseInferRequest(body("UINT8", [1, 5], [1, 2, 3, 4, 5]), s).inputs[0]!.shape).toEqual([1, 5]);
    expect(parseInferRequest(body("UINT8", [5, 1], [[1], [2], [3], [4], [5]]), s).inputs[0]!.shape).toEqual([5, 1]);
  });

  it("a scalar (rank 0) takes exactly one element", () => {
    const t = parseInferRequest(body("FP64", [], [2.5]), one("FP64", [])).inputs[0]!;
    expect(Array.from(t.data as Float64Array)).toEqual([2.5]);
    expect(refusal(body("FP64", [], [1, 2]), one("FP64", []))).toMatch(/needs 1 elements, data has 2/);
  });

  it("elementCount multiplies the dimensions", () => {
    expect(elementCount([])).toBe(1);
    expect(elementCount([2, 3, 4])).toBe(24);
    expect(elementCount([5, 0])).toBe(0);
  });
});

describe("parseInferRequest: several inputs, id and outputs", () => {
  const s = sig(
    [
      { name: "a", datatype: "FP32", shape: [-1, 2] },
      { name: "b", datatype: "INT64", shape: [1] },
    ],
    [
      { name: "p", datatype: "FP32", shape: [-1] },
      { name: "q", datatype: "INT64", shape: [-1] },
    ],
  );
  const inputs = [
    { name: "b", datatype: "INT64", shape: [1], data: [3] },
    { name: "a", datatype: "FP32", shape: [1, 2], data: [[1, 2]] },
  ];

  it("accepts inputs in any order, keeps id and an outputs subset", () => {
    const parsed = parseInferRequest({ id: "req-1", inputs, outputs: [{ name: "q" }] }, s);
    expect(parsed.id).toBe("req-1");
    expect(parsed.inputs.map((t) => t.name)).toEqual(["b", "a"]);
    expect(parsed.outputs).toEqual(["q"]);
  });

  it("leaves id and outputs out when the body does", () => {
    const parsed = parseInferRequest({ inputs }, s);
    expect(parsed).not.toHaveProperty("id");
    expect(parsed).not.toHaveProperty("outputs");
  });

  it("names the missing input", () => {
    expect(refusal({ inputs: [inputs[0]] }, s)).toBe("missing input(s): a");
  });

  it("refuses an outputs entry the model does not have, listing the known ones", () => {
    const msg = refusal({ inputs, outputs: [{ name: "p" }, { name: "zzz" }] }, s);
    expect(msg).toMatch(/unknown output 'zzz'/);
    expect(msg).toMatch(/p, q/);
  });

  it("refuses an output asked for more than once (each copy would be computed and sent again)", () => {
    expect(refusal({ inputs, outputs: [{ name: "p" }, { name: "q" }, { name: "p" }] }, s)).toBe("output 'p' is asked for more than once");
    expect(refusal({ inputs, outputs: Array.from({ length: 1024 }, () => ({ name: "q" })) }, s)).toBe("output 'q' is asked for more than once");
  });

  it("shortens an unknown output's name in the message", () => {
    const msg = refusal({ inputs, outputs: [{ name: "x".repeat(100_000) }] }, s);
    expect(msg.length).toBeLessThan(200);
    expect(msg).toMatch(/^unknown output 'x{64}\.\.\.'/);
  });

  it("lists at most 20 of a model's outputs in the message", () => {
    const wide = sig(s.inputs, Array.from({ length: 1024 }, (_, i) => ({ name: `out${i}`, datatype: "FP32" as const, shape: [-1] })));
    const msg = refusal({ inputs, outputs: [{ name: "nope" }] }, wide);
    expect(msg).toBe(`unknown output 'nope'; the model's outputs are: ${Array.from({ length: 20 }, (_, i) => `out${i}`).join(", ")}, ... (1024 in all)`);
  });

  it("refuses malformed outputs", () => {
    expect(refusal({ inputs, outputs: "p" }, s)).toBe("'outputs' must be an array");
    expect(refusal({ inputs, outputs: ["p"] }, s)).toBe("outputs[0].name must be a string");
    expect(refusal({ inputs, outputs: [{ name: 1 }] }, s)).toBe("outputs[0].name must be a string");
  });

  it("refuses a non-string id", () => {
    expect(refusal({ id: 5, inputs }, s)).toBe("'id' must be a string");
    expect(refusal({ id: null, inputs }, s)).toBe("'id' must be a string");
    expect(refusal({ id: { x: 1 }, inputs }, s)).toBe("'id' must be a string");
  });
});

describe("parseInferRequest: refusals with clear messages", () => {
  const fp = one("FP32", [2, 2]);

  it("body that is not an object", () => {
    for (const b of [null, undefined, 3, "x", [], [{ name: "x" }]]) {
      expect(refusal(b, fp)).toMatch(/request body must be a JSON object/);
    }
  });

  it("missing or empty inputs", () => {
    expect(refusal({}, fp)).toBe("'inputs' must be a non-empty array");
    expect(refusal({ inputs: [] }, fp)).toBe("'inputs' must be a non-empty array");
    expect(refusal({ inputs: { name: "x" } }, fp)).toBe("'inputs' must be a non-empty array");
  });

  it("an input entry that is not an object, or has no name", () => {
    expect(refusal({ inputs: [7] }, fp)).toBe("inputs[0] must be an object");
    expect(refusal({ inputs: [{ datatype: "FP32", shape: [2, 2], data: [1, 2, 3, 4] }] }, fp)).toBe(
      "inputs[0].name must be a string",
    );
  });

  it("unknown input name, listing the model's inputs", () => {
    const msg = refusal({ inputs: [{ name: "nope", datatype: "FP32", shape: [2, 2], data: [1, 2, 3, 4] }] }, fp);
    expect(msg).toBe("unknown input 'nope'; the model's inputs are: x");
  });

  it("duplicate input", () => {
    const t = { name: "x", datatype: "FP32", shape: [2, 2], data: [1, 2, 3, 4] };
    expect(refusal({ inputs: [t, t] }, fp)).toBe("input 'x' is given more than once");
  });

  it("wrong datatype", () => {
    expect(refusal(body("FP64", [2, 2], [1, 2, 3, 4]), fp)).toBe("input 'x': datatype FP64 does not match the model's FP32");
  });

  it("unknown datatype", () => {
    expect(refusal(body("FLOAT32", [2, 2], [1, 2, 3, 4]), fp)).toBe('input \'x\': unknown datatype "FLOAT32"');
    expect(refusal(body("fp32", [2, 2], [1, 2, 3, 4]), fp)).toMatch(/unknown datatype "fp32"/);
    expect(refusal({ inputs: [{ name: "x", shape: [2, 2], data: [1, 2, 3, 4] }] }, fp)).toMatch(/unknown datatype/);
  });

  it("malformed shape", () => {
    for (const shape of ["2,2", [2, -1], [2, 1.5], [2, "2"], null]) {
      expect(refusal(body("FP32", shape, [1, 2, 3, 4]), fp)).toBe("input 'x': shape must be an array of non-negative integers");
    }
  });

  it("wrong rank", () => {
    expect(refusal(body("FP32", [4], [1, 2, 3, 4]), fp)).toBe(
      "input 'x': shape [4] has rank 1, the model expects rank 2 ([2,2], -1 = any)",
    );
    expect(refusal(body("FP32", [1, 2, 2], [1, 2, 3, 4]), fp)).toMatch(/has rank 3, the model expects rank 2/);
  });

  it("fixed dimension mismatch", () => {
    expect(refusal(body("FP32", [2, 3], [1, 2, 3, 4, 5, 6]), fp)).toBe("input 'x': dimension 1 is 3, the model expects 2");
    expect(refusal(body("FP32", [5, 2], new Array(10).fill(0)), one("FP32", [-1, 3]))).toBe(
      "input 'x': dimension 1 is 2, the model expects 3",
    );
  });

  it("element count mismatch: shape says 4, data has 3 (or 5)", () => {
    expect(refusal(body("FP32", [2, 2], [1, 2, 3]), fp)).toBe("input 'x': shape [2,2] needs 4 elements, data has 3");
    expect(refusal(body("FP32", [2, 2], [[1, 2], [3]]), fp)).toBe("input 'x': shape [2,2] needs 4 elements, data has 3");
    expect(refusal(body("FP32", [2, 2], [1, 2, 3, 4, 5]), fp)).toMatch(/needs 4 elements, data has 5/);
    expect(refusal(body("FP32", [4], [1, 2, 3]), one("FP32", [-1]))).toMatch(/needs 4 elements, data has 3/);
  });

  it("data nested absurdly deep", () => {
    let deep: unknown = 1;
    for (let i = 0; i < 40; i++) deep = [deep];
    expect(refusal(body("FP32", [1], deep), one("FP32", [1]))).toBe("data is nested too deeply");
  });

  it("a non-number in FP32 (and the other float types)", () => {
    expect(refusal(body("FP32", [2, 2], [1, "2", 3, 4]), fp)).toBe("input 'x' (FP32): element 1 is not a number");
    expect(refusal(body("FP32", [2, 2], [1, 2, null, 4]), fp)).toBe("input 'x' (FP32): element 2 is not a number");
    expect(refusal(body("FP32", [2, 2], [1, 2, 3, true]), fp)).toBe("input 'x' (FP32): element 3 is not a number");
    expect(refusal(body("FP32", [2, 2], [1, 2, 3, Infinity]), fp)).toMatch(/element 3 is not a number/);
    expect(refusal(body("FP64", [1], ["x"]), one("FP64", [1]))).toBe("input 'x' (FP64): element 0 is not a number");
    expect(refusal(body("FP16", [1], [{}]), one("FP16", [1]))).toBe("input 'x' (FP16): element 0 is not a number");
    expect(refusal(body("BF16", [1], ["1"]), one("BF16", [1]))).toBe("input 'x' (BF16): element 0 is not a number");
  });

  it("non-integer or out-of-range values in integer types", () => {
    const cases: [OipDatatype, unknown, string][] = [
      ["INT8", 1.5, "element 0 (1.5) is not an integer in [-128, 127]"],
      ["INT8", 128, "element 0 (128) is not an integer in [-128, 127]"],
      ["INT8", -129, "element 0 (-129) is not an integer in [-128, 127]"],
      ["UINT8", -1, "element 0 (-1) is not an integer in [0, 255]"],
      ["UINT8", 256, "element 0 (256) is not an integer in [0, 255]"],
      ["UINT8", 0.5, "element 0 (0.5) is not an integer in [0, 255]"],
      ["INT32", 2147483648, "element 0 (2147483648) is not an integer in [-2147483648, 2147483647]"],
      ["INT32", -2147483649, "element 0 (-2147483649) is not an integer in [-2147483648, 2147483647]"],
      ["INT32", 1e-3, "element 0 (0.001) is not an integer"],
      ["INT16", 32768, "element 0 (32768) is not an integer in [-32768, 32767]"],
      ["UINT16", 65536, "element 0 (65536) is not an integer in [0, 65535]"],
      ["UINT32", -1, "element 0 (-1) is not an integer in [0, 4294967295]"],
      ["UINT64", -1, "element 0 (-1) is not an integer"],
      ["INT64", 2 ** 53, "element 0 (9007199254740992) is not an integer"],
      ["INT64", NaN, "element 0 (NaN) is not an integer"],
    ];
    for (const [datatype, v, msg] of cases) {
      const got = refusal(body(datatype, [1], [v]), one(datatype, [1]));
      expect(got.startsWith(`input 'x' (${datatype}): `)).toBe(true);
      expect(got).toContain(msg);
    }
    expect(refusal(body("INT32", [1], ["3"]), one("INT32", [1]))).toBe("input 'x' (INT32): element 0 is not a number");
  });

  it("BOOL refuses anything but true/false/0/1", () => {
    for (const v of ["yes", "true", 2, -1, null]) {
      expect(refusal(body("BOOL", [1], [v]), one("BOOL", [1]))).toBe("input 'x' (BOOL): element 0 is not a boolean");
    }
  });

  it("BYTES refuses a non-string", () => {
    expect(refusal(body("BYTES", [2], ["ok", 5]), one("BYTES", [2]))).toBe("input 'x' (BYTES): element 1 is not a string");
    expect(refusal(body("BYTES", [1], [null]), one("BYTES", [1]))).toBe("input 'x' (BYTES): element 0 is not a string");
  });
});

describe("FP16 bits", () => {
  it("known values", () => {
    expect(toHalfBits(0)).toBe(0x0000);
    expect(toHalfBits(-0)).toBe(0x8000);
    expect(toHalfBits(1)).toBe(0x3c00);
    expect(toHalfBits(-1)).toBe(0xbc00);
    expect(toHalfBits(65504)).toBe(0x7bff);
    expect(toHalfBits(2 ** -14)).toBe(0x0400); // smallest normal
    expect(toHalfBits(2 ** -24)).toBe(0x0001); // smallest subnormal
    expect(toHalfBits(Infinity)).toBe(0x7c00);
    expect(toHalfBits(-Infinity)).toBe(0xfc00);
    expect(toHalfBits(1e6)).toBe(0x7c00); // overflow
    expect(toHalfBits(65520)).toBe(0x7c00); // halfway past the largest half rounds to even = Infinity
    expect(toHalfBits(65519)).toBe(0x7bff);
    expect(toHalfBits(1e-9)).toBe(0x0000); // underflow
    expect(toHalfBits(-1e-9)).toBe(0x8000);
  });

  it("0, -0, 1, 65504 round-trip", () => {
    for (const v of [0, 1, 65504, -65504, 0.5, -2, 1024]) expect(fromHalfBits(toHalfBits(v))).toBe(v);
    expect(Object.is(fromHalfBits(toHalfBits(-0)), -0)).toBe(true);
    expect(Object.is(fromHalfBits(toHalfBits(0)), 0)).toBe(true);
  });

  it("1e-7 lands on the nearest subnormal", () => {
    // 1e-7 / 2^-24 = 1.677..., so the nearest subnormal is 2 * 2^-24
    expect(toHalfBits(1e-7)).toBe(0x0002);
    expect(fromHalfBits(0x0002)).toBe(2 * 2 ** -24);
    expect(toHalfBits(-1e-7)).toBe(0x8002);
    expect(Math.abs(fromHalfBits(toHalfBits(1e-7)) - 1e-7)).toBeLessThanOrEqual(2 ** -25);
  });

  it("Infinity and NaN", () => {
    expect(fromHalfBits(toHalfBits(Infinity))).toBe(Infinity);
    expect(fromHalfBits(toHalfBits(-Infinity))).toBe(-Infinity);
    const nan = toHalfBits(NaN);
    expect(nan & 0x7c00).toBe(0x7c00);
    expect(nan & 0x3ff).not.toBe(0);
    expect(fromHalfBits(nan)).toBeNaN();
    expect(fromHalfBits(0xfe00)).toBeNaN();
  });

  it("rounds to nearest, ties to even", () => {
    // Around 1: spacing 2^-10. 1 + 2^-11 is a tie between 0x3c00 (even) and 0x3c01 -> 0x3c00.
    expect(toHalfBits(1 + 2 ** -11)).toBe(0x3c00);
    // 1 + 3*2^-11 ties between 0x3c01 and 0x3c02 (even) -> 0x3c02.
    expect(toHalfBits(1 + 3 * 2 ** -11)).toBe(0x3c02);
    // Just above a tie goes up, just below goes down.
    expect(toHalfBits(1 + 2 ** -11 + 2 ** -20)).toBe(0x3c01);
    expect(toHalfBits(1 + 2 ** -11 - 2 ** -20)).toBe(0x3c00);
    // Subnormal ties: 2^-25 is half the smallest subnormal -> 0 (even); 3*2^-25 -> 2*2^-24 (even).
    expect(toHalfBits(2 ** -25)).toBe(0x0000);
    expect(toHalfBits(3 * 2 ** -25)).toBe(0x0002);
    expect(toHalfBits(2 ** -25 + 2 ** -35)).toBe(0x0001);
    // Rounding up carries from the largest subnormal into the smallest normal.
    expect(toHalfBits(2 ** -14 - 2 ** -26)).toBe(0x0400);
  });

  it("every finite half round-trips, and every midpoint rounds to the even neighbour", () => {
    for (let h = 0; h < 0x10000; h++) {
      const exp = (h >>> 10) & 0x1f;
      const v = fromHalfBits(h);
      if (exp === 0x1f) {
        expect(Number.isNaN(v) || !Number.isFinite(v)).toBe(true);
        continue;
      }
      if (toHalfBits(v) !== h) expect.fail(`half 0x${h.toString(16)} (${v}) came back as 0x${toHalfBits(v).toString(16)}`);
      // Midpoint between h and the next half of larger magnitude (same sign).
      const next = h + 1;
      if (((next >>> 10) & 0x1f) === 0x1f) continue;
      const mid = (v + fromHalfBits(next)) / 2;
      const even = h % 2 === 0 ? h : next;
      if (toHalfBits(mid) !== even) expect.fail(`midpoint ${mid} of 0x${h.toString(16)} rounded to 0x${toHalfBits(mid).toString(16)}`);
    }
  });
});

describe("decodeTensorData", () => {
  it("BigInt64Array and BigUint64Array become numbers", () => {
    const out = decodeTensorData("INT64", new BigInt64Array([-3n, 0n, 9007199254740991n]));
    expect(out).toEqual([-3, 0, 9007199254740991]);
    for (const v of out) expect(typeof v).toBe("number");
    expect(decodeTensorData("UINT64", new BigUint64Array([7n, 0n]))).toEqual([7, 0]);
  });

  it("BOOL bytes become booleans (any non-zero is true)", () => {
    expect(decodeTensorData("BOOL", new Uint8Array([0, 1, 2, 255]))).toEqual([false, true, true, true]);
  });

  it("FP16/BF16 bits become numbers; plain typed arrays and strings pass through", () => {
    expect(decodeTensorData("FP16", new Uint16Array([0x3c00, 0xc000, 0x7c00]))).toEqual([1, -2, Infinity]);
    expect(decodeTensorData("BF16", new Uint16Array([0x3f80, 0x4049]))).toEqual([1, Math.fround(3.140625)]);
    expect(decodeTensorData("UINT16", new Uint16Array([0x3c00]))).toEqual([0x3c00]);
    expect(decodeTensorData("FP32", new Float32Array([0.5, 2]))).toEqual([0.5, 2]);
    expect(decodeTensorData("BYTES", ["a", "b"])).toEqual(["a", "b"]);
  });
});
