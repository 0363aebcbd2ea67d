// The shared configuration helpers (protocol/config-schema.ts) that the edge, router and node
// build their one schema from: defaults for unset and empty variables, refusals that name the
// variable and what it got, computed settings, and the first refusal in table order. Pure logic.

import { describe, expect, it } from "vitest";
import { bytes, computed, ConfigError, configSchema, flag, int, json, num, oneOf, readConfig, secret, text, value } from "../protocol/config-schema.js";
import { z } from "zod";

const FIELDS = {
  port: int("PORT", 8701, 0),
  budget: int("BUDGET_MB", null, 1),
  share: num("SHARE", 0.02, 0, 0.5, "SHARE must be between 0 and 0.5"),
  fair: flag("FAIR", true),
  host: text("HOST", "127.0.0.1"),
  provider: oneOf("PROVIDER", ["auto", "cpu", "cuda"], "auto"),
  token: secret("TOKEN"),
  previous: secret("PREVIOUS", true),
  cache: bytes("CACHE_BYTES", 1024),
  weights: json("WEIGHTS", z.record(z.string(), z.number().positive()), {}, "WEIGHTS must be a JSON object of name -> weight"),
  both: computed((env) => `${value(int("PORT", 8701, 0), env)}/${env.HOST ?? "-"}`),
};
const schema = configSchema(FIELDS);
const TOKEN = "t".repeat(16);

describe("configSchema", () => {
  it("gives every default for unset and empty variables, typed", () => {
    const c = readConfig(schema, { TOKEN, PORT: "", HOST: "" });
    expect(c).toEqual({ port: 8701, budget: null, share: 0.02, fair: true, host: "127.0.0.1", provider: "auto", token: TOKEN, previous: null, cache: null, weights: {}, both: "8701/" });
    const port: number = c.port; // the type comes from the table
    expect(port).toBe(8701);
  });

  it("reads what is set", () => {
    const c = readConfig(schema, { TOKEN, PORT: "0", BUDGET_MB: "512", SHARE: "0.5", FAIR: "0", PROVIDER: "CUDA", CACHE_BYTES: "50GiB", WEIGHTS: '{"a": 2}', PREVIOUS: "p".repeat(20) });
    expect(c).toMatchObject({ port: 0, budget: 512, share: 0.5, fair: false, provider: "cuda", cache: 50 * 1024 ** 3, weights: { a: 2 }, previous: "p".repeat(20) });
  });

  it("refuses with the variable, the rule and the value; the first bad one in table order, with the process's prefix", () => {
    const refused = (env: Record<string, string>, message: string) => {
      expect(() => readConfig(schema, { TOKEN, ...env }, "router: ")).toThrow(ConfigError);
      expect(() => readConfig(schema, { TOKEN, ...env }, "router: ")).toThrow(`router: ${message}`);
    };
    refused({ PORT: "http" }, "PORT must be an integer >= 0 (got 'http')");
    refused({ PORT: "1.5", BUDGET_MB: "0" }, "PORT must be an integer >= 0 (got '1.5')");
    refused({ BUDGET_MB: "0" }, "BUDGET_MB must be an integer >= 1 (got '0')");
    refused({ SHARE: "0.6" }, "SHARE must be between 0 and 0.5");
    refused({ FAIR: "yes" }, "FAIR must be 0 or 1 (got 'yes')");
    refused({ PROVIDER: "tpu" }, "PROVIDER must be auto, cpu or cuda");
    refused({ TOKEN: "short" }, "TOKEN must be set (16+ characters)");
    refused({ PREVIOUS: "short" }, "PREVIOUS must be set (16+ characters)");
    refused({ CACHE_BYTES: "lots" }, "CACHE_BYTES must be a byte count >= 1024 such as 53687091200 or 50GiB (got 'lots')");
    refused({ WEIGHTS: "{" }, "WEIGHTS must be a JSON object of name -> weight");
    refused({ WEIGHTS: '{"a": -1}' }, "WEIGHTS must be a JSON object of name -> weight");
    expect(() => readConfig(schema, {})).toThrow("TOKEN must be set (16+ characters)");
  });

  it("a computed setting's own ConfigError is the refusal", () => {
    const s = configSchema({
      a: int("A", 1, 0),
      b: computed((env) => {
        if (env.B === "bad") throw new ConfigError("B is bad");
        return 2;
      }),
    });
    expect(readConfig(s, {})).toEqual({ a: 1, b: 2 });
    expect(() => readConfig(s, { B: "bad" }, "edge configuration: ")).toThrow("edge configuration: B is bad");
  });
});
