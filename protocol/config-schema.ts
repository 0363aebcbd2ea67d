// Configuration from environment variables, typed once: each process (edge, router, node)
// writes one table of fields, and `configSchema` turns it into one zod schema over the raw
// variables whose output is the typed config (its type is inferred from the table, so adding
// a setting is one line there). The field helpers hold the rules and the error messages every
// process shares: an unset or empty variable takes its default; a bad one names itself, what
// it must be, and what it got. Worker-safe (zod only): the edge uses it too.

import { z } from "zod";

export class ConfigError extends Error {}

/** The raw variables: process.env in Node, the Worker's Env (strings and bindings) at the edge. */
export type EnvVars = Readonly<Record<string, unknown>>;

/**
 * One setting: the variable it reads and the zod schema of that variable's raw value (a string,
 * or undefined when unset), or a setting computed from several variables (`computed`).
 */
export type Field<T> = { env: string; schema: z.ZodType<T, unknown> } | { compute: (env: EnvVars) => T };

export type ConfigOf<F extends Record<string, Field<unknown>>> = { [K in keyof F]: F[K] extends Field<infer T> ? T : never };

/** A raw string, with "" read as unset (an env file's `NAME=` line means "the default"). */
const raw = z.unknown().transform((v) => (typeof v === "string" && v !== "" ? v : undefined));

/** Refuses with `message` (the first refusal is what the process reports). */
function refuse(ctx: z.RefinementCtx, message: string): typeof z.NEVER {
  ctx.addIssue({ code: "custom", message });
  return z.NEVER;
}

/** An integer >= min; `fallback` when unset (null: the setting is off). */
export function int<D extends number | null>(env: string, fallback: D, min: number): Field<number | D> {
  return {
    env,
    schema: raw.transform((v, ctx) => {
      if (v === undefined) return fallback;
      const n = Number(v);
      return Number.isInteger(n) && n >= min ? n : refuse(ctx, `${env} must be an integer >= ${min} (got '${v}')`);
    }),
  };
}

/** A number in [min, max] (not only whole ones); `fallback` when unset. */
export function num(env: string, fallback: number, min: number, max: number, message: string): Field<number> {
  return {
    env,
    schema: raw.transform((v, ctx) => {
      if (v === undefined) return fallback;
      const n = Number(v);
      return Number.isFinite(n) && n >= min && n <= max ? n : refuse(ctx, message);
    }),
  };
}

/** "0" or "1". */
export function flag(env: string, fallback: boolean): Field<boolean> {
  return {
    env,
    schema: raw.transform((v, ctx) => {
      if (v === undefined) return fallback;
      return v === "0" || v === "1" ? v === "1" : refuse(ctx, `${env} must be 0 or 1 (got '${v}')`);
    }),
  };
}

/** Any string; `fallback` when unset. */
export function text<D extends string | null>(env: string, fallback: D): Field<string | D> {
  return { env, schema: raw.transform((v) => v ?? fallback) };
}

/** One of a few words (case-insensitive). */
export function oneOf<const W extends string>(env: string, words: readonly W[], fallback: W): Field<W> {
  return {
    env,
    schema: raw.transform((v, ctx) => {
      const w = (v ?? fallback).toLowerCase();
      return (words as readonly string[]).includes(w) ? (w as W) : refuse(ctx, `${env} must be ${words.slice(0, -1).join(", ")} or ${words.at(-1)}`);
    }),
  };
}

/** A string matching `re` (required). */
export function matching(env: string, re: RegExp, message: string): Field<string> {
  return { env, schema: raw.transform((v, ctx) => (v !== undefined && re.test(v) ? v : refuse(ctx, message))) };
}

/** A secret of 16+ characters: required, or (optional) null when unset. */
export function secret(env: string): Field<string>;
export function secret(env: string, optional: true): Field<string | null>;
export function secret(env: string, optional = false): Field<string | null> {
  return {
    env,
    schema: raw.transform((v, ctx) => {
      if (v === undefined && optional) return null;
      return v !== undefined && v.length >= 16 ? v : refuse(ctx, `${env} must be set (16+ characters)`);
    }),
  };
}

/** A byte count: an integer, optionally with a binary unit (K, M, G, T; KiB ... TiB); null when unset. */
export function bytes(env: string, min: number): Field<number | null> {
  return {
    env,
    schema: raw.transform((v, ctx) => {
      if (v === undefined) return null;
      const m = /^(\d+(?:\.\d+)?)\s*(?:([KMGT])(?:i?B)?)?$/i.exec(v.trim());
      const n = m ? Math.floor(Number(m[1]) * 1024 ** (m[2] ? "KMGT".indexOf(m[2].toUpperCase()) + 1 : 0)) : NaN;
      return Number.isSafeInteger(n) && n >= min ? n : refuse(ctx, `${env} must be a byte count >= ${min} such as 53687091200 or 50GiB (got '${v}')`);
    }),
  };
}

/** JSON checked by `schema`; `fallback` when unset. */
export function json<T>(env: string, schema: z.ZodType<T>, fallback: T, message: string): Field<T> {
  return {
    env,
    schema: raw.transform((v, ctx) => {
      if (v === undefined) return fallback;
      let parsed: unknown;
      try {
        parsed = JSON.parse(v);
      } catch {
        return refuse(ctx, message);
      }
      const r = schema.safeParse(parsed);
      return r.success ? r.data : refuse(ctx, message);
    }),
  };
}

/** A setting read from several variables, or from others' values (throws ConfigError itself). */
export function computed<T>(compute: (env: EnvVars) => T): Field<T> {
  return { compute };
}

/** One field's value (for a computed setting that depends on another one). */
export function value<T>(field: Field<T>, env: EnvVars): T {
  if (!("env" in field)) return field.compute(env);
  const r = field.schema.safeParse(env[field.env]);
  if (!r.success) throw new ConfigError(r.error.issues[0]?.message ?? `${field.env} is invalid`);
  return r.data;
}

/**
 * The one zod schema of a process's configuration: its input is the raw variables, its output
 * the typed config. Fields are read in the table's order; the first refusal is the error.
 */
export function configSchema<F extends Record<string, Field<unknown>>>(fields: F): z.ZodType<ConfigOf<F>, EnvVars> {
  return z.custom<EnvVars>((v) => typeof v === "object" && v !== null, "the configuration must be an object of variables").transform((env, ctx) => {
    const out: Record<string, unknown> = {};
    for (const [key, field] of Object.entries(fields)) {
      try {
        out[key] = value(field, env);
      } catch (err) {
        if (!(err instanceof ConfigError)) throw err;
        return refuse(ctx, err.message);
      }
    }
    return out as ConfigOf<F>;
  });
}

/** Reads a configuration; a bad setting throws ConfigError (prefixed, e.g. "edge configuration: "). */
export function readConfig<T>(schema: z.ZodType<T, EnvVars>, env: EnvVars, prefix = ""): T {
  const r = schema.safeParse(env);
  if (r.success) return r.data;
  throw new ConfigError(`${prefix}${r.error.issues[0]?.message ?? "invalid configuration"}`);
}
