// The deploy path's files (docs/deploy.md) against the code they describe: the mesh-router and
// mesh-node executables start from any directory and refuse a missing configuration clearly;
// the env examples name every variable the config parsers read, parse as they stand, and run
// a router and a node that find each other and drain on SIGTERM; the Worker's generated Env type
// is current with wrangler.toml and deploy/edge.env.example; the systemd units give the
// drain time to finish; the container files name only what exists; and `npm run deploy:edge --
// --dry-run` builds the Worker's bundle offline.

import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { freePort } from "../local/free-port.js";
import { routerConfigFromEnv } from "../regions/config.js";
import { nodeConfigFromEnv } from "../gpu-node/config.js";
import { ROOT, waitUntil } from "./helpers/region-harness.js";
import { sample, scrape } from "./helpers/metrics-text.js";

const ROUTER_BIN = join(ROOT, "bin", "mesh-router.js");
const NODE_BIN = join(ROOT, "bin", "mesh-node.js");
const scratch = mkdtempSync(join(tmpdir(), "mesh-deploy-test-"));
const children: ChildProcess[] = [];

afterAll(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  rmSync(scratch, { recursive: true, force: true });
});

/** The KEY=value lines of an env file (commented-out ones too when `withCommented`). */
function envFile(path: string, withCommented = false): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of readFileSync(join(ROOT, path), "utf8").split("\n")) {
    const m = (withCommented ? /^#?([A-Z][A-Z0-9_]*)=(.*)$/ : /^([A-Z][A-Z0-9_]*)=(.*)$/).exec(line);
    if (m) out[m[1]!] = m[2]!;
  }
  return out;
}

/** Every environment variable a source file reads: env.NAME, env["NAME"], a helper's (env, "NAME"), or a quoted R2_* name list. */
function envNames(path: string): string[] {
  const src = readFileSync(join(ROOT, path), "utf8");
  const names = new Set<string>();
  // env.NAME in code, and a field of a config table (protocol/config-schema.ts): int("NAME", ...).
  for (const re of [/env\.([A-Z][A-Z0-9_]+)/g, /env\["([A-Z][A-Z0-9_]+)"\]/g, /\b(?:int|num|flag|text|oneOf|matching|secret|bytes|json)\("([A-Z][A-Z0-9_]+)"/g, /\bstr\(env, "([A-Z][A-Z0-9_]+)"\)/g, /"(R2_[A-Z0-9_]+)"/g]) {
    for (const m of src.matchAll(re)) names.add(m[1]!);
  }
  // A certificate pair (runtime/tls-files.ts): readTlsFiles(env, "CERT_NAME", "KEY_NAME").
  for (const m of src.matchAll(/readTlsFiles\(env, "([A-Z][A-Z0-9_]+)", "([A-Z][A-Z0-9_]+)"\)/g)) names.add(m[1]!).add(m[2]!);
  return [...names].sort();
}

/** The environment a bin sees: nothing of the test's own configuration, only what is needed to run node. */
function bareEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? scratch, MESH_PARENT_PID: String(process.pid), ...extra };
}

/** The bin as npm installs it: a symlink in a .bin directory, run through its shebang. */
function linkedBin(bin: string, name: string): string {
  const dir = join(scratch, ".bin");
  mkdirSync(dir, { recursive: true });
  const link = join(dir, name);
  if (!existsSync(link)) symlinkSync(bin, link);
  return link;
}

function startBin(bin: string, env: NodeJS.ProcessEnv, viaLink = false): { child: ChildProcess; exit: Promise<number | null>; output: () => string } {
  // From a directory outside the checkout: an installed bin must not depend on the cwd.
  const [cmd, args] = viaLink ? [linkedBin(bin, bin.endsWith("mesh-router.js") ? "mesh-router" : "mesh-node"), []] : [process.execPath, [bin]];
  const child = spawn(cmd, args, { cwd: scratch, env, stdio: ["ignore", "pipe", "pipe"] });
  children.push(child);
  let text = "";
  child.stdout!.on("data", (b: Buffer) => (text += b.toString()));
  child.stderr!.on("data", (b: Buffer) => (text += b.toString()));
  const exit = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return { child, exit, output: () => text };
}

describe("bins", () => {
  it("mesh-router without configuration exits 2 naming the missing setting (run as npm links it)", async () => {
    const r = startBin(ROUTER_BIN, bareEnv(), true);
    expect(await r.exit).toBe(2);
    expect(r.output()).toContain("MESH_REGION must be");
  });

  it("mesh-node without configuration exits 2 naming the missing setting (run as npm links it)", async () => {
    const r = startBin(NODE_BIN, bareEnv(), true);
    expect(await r.exit).toBe(2);
    expect(r.output()).toContain("ROUTER_URL must be");
  });

  it("a router and a node started from the env examples connect, and both drain on SIGTERM with exit 0", async () => {
    const token = "metrics-token-0123456789";
    const port = await freePort();
    const router = startBin(ROUTER_BIN, bareEnv({
      ...envFile("deploy/router.env.example"),
      MESH_SECRET: "router-secret-0123456789abcdef",
      NODE_TOKEN: "node-token-0123456789abcdef",
      METRICS_TOKEN: token,
      PORT: String(port),
    }));
    const metrics = `http://127.0.0.1:${port}/metrics`;
    const nodes = async (): Promise<number | undefined> => {
      const res = await scrape(metrics, token);
      return res.ok ? sample(await res.text(), "mesh_router_nodes", { state: "connected" }) : undefined;
    };
    await waitUntil("router serves /metrics", 30_000, nodes);

    const node = startBin(NODE_BIN, bareEnv({
      ...envFile("deploy/node.env.example"),
      ROUTER_URL: `ws://127.0.0.1:${port}/v1/nodes`,
      NODE_TOKEN: "node-token-0123456789abcdef",
      NODE_ID: "deploy-test-node",
      MODEL_CACHE_DIR: join(scratch, "cache"),
      MESH_EXECUTION_PROVIDER: "cpu",
    }));
    await waitUntil("node connected", 30_000, async () => ((await nodes()) === 1 ? true : undefined));

    node.child.kill("SIGTERM");
    expect(await node.exit).toBe(0);
    await waitUntil("node gone from the router", 30_000, async () => ((await nodes()) === 0 ? true : undefined));
    router.child.kill("SIGTERM");
    expect(await router.exit).toBe(0);
  });
});

describe("env examples", () => {
  const cases = [
    { file: "deploy/router.env.example", parsers: ["regions/config.ts", "protocol/presign.ts"] },
    { file: "deploy/node.env.example", parsers: ["gpu-node/config.ts"] },
    // The Worker's: its secrets and optional settings there, the rest in wrangler.toml's [vars].
    { file: "deploy/edge.env.example", parsers: ["edge/env.ts", "protocol/presign.ts"], also: ["REGIONS", "INFER_TIMEOUT_MS", "PUBLIC_ORIGIN"] },
  ];
  for (const { file, parsers, also = [] } of cases) {
    it(`${file} names every variable ${parsers.join(" and ")} read`, () => {
      const named = [...Object.keys(envFile(file, true)), ...also];
      const read = parsers.flatMap(envNames);
      expect(read.length).toBeGreaterThan(10);
      expect(read.filter((n) => !named.includes(n))).toEqual([]);
    });
  }

  it("parse as written once the secrets are filled in", () => {
    const router = routerConfigFromEnv({ ...envFile("deploy/router.env.example"), MESH_SECRET: "s".repeat(32), NODE_TOKEN: "t".repeat(32) });
    expect(router.region).toBe("us-west");
    expect(router.r2).toBeNull();
    expect(router.metricsToken).toBeNull();
    const node = nodeConfigFromEnv({ ...envFile("deploy/node.env.example"), NODE_TOKEN: "t".repeat(32) });
    expect(node.nodeId).not.toBe("");
    expect(node.metrics).toBeNull();
  });
});

describe("the Worker's Env type", () => {
  it("edge/worker-configuration.d.ts is what `npm run types:edge` (wrangler types) writes now", () => {
    // Written next to the real one (its import of ./index is relative), under a name of its own.
    const out = `edge/worker-configuration.check-${process.pid}-${Date.now()}.d.ts`;
    try {
      const r = spawnSync(
        process.execPath,
        [join(ROOT, "node_modules/wrangler/bin/wrangler.js"), "types", out, "--include-runtime=false", "--strict-vars=false", "--env-file", "deploy/edge.env.example"],
        { cwd: ROOT, encoding: "utf8", env: { ...process.env, WRANGLER_SEND_METRICS: "false", CI: "1", NO_COLOR: "1" }, timeout: 60_000 },
      );
      expect(r.status, r.stderr + r.stdout).toBe(0);
      const fresh = readFileSync(join(ROOT, out), "utf8").replace(out, "edge/worker-configuration.d.ts");
      expect(fresh, "run `npm run types:edge` and commit edge/worker-configuration.d.ts").toBe(readFileSync(join(ROOT, "edge/worker-configuration.d.ts"), "utf8"));
    } finally {
      rmSync(join(ROOT, out), { force: true });
    }
  }, 90_000);
});

describe("systemd units", () => {
  const units = ["mesh-router", "mesh-node"].map((u) => ({ name: u, text: readFileSync(join(ROOT, "deploy", "systemd", `${u}.service`), "utf8") }));
  const setting = (text: string, key: string): string | undefined => new RegExp(`^${key}=(.*)$`, "m").exec(text)?.[1];

  it("signal only the main process on stop, and wait longer than the drain", () => {
    const drainMs = Math.max(
      Number(envFile("deploy/router.env.example").DRAIN_TIMEOUT_MS),
      Number(envFile("deploy/node.env.example").DRAIN_TIMEOUT_MS),
    );
    for (const u of units) {
      expect(setting(u.text, "KillMode"), u.name).toBe("mixed");
      expect(Number(setting(u.text, "TimeoutStopSec")) * 1000, u.name).toBeGreaterThan(drainMs + 2_500);
      expect(setting(u.text, "EnvironmentFile"), u.name).toMatch(/^\/etc\/inference-mesh\/(router|node)\.env$/);
      expect(setting(u.text, "ExecStart"), u.name).toContain(`bin/${u.name}.js`);
    }
  });

  it("pass systemd-analyze verify", (ctx) => {
    const probe = spawnSync("systemd-analyze", ["--version"], { encoding: "utf8" });
    if (probe.error || probe.status !== 0) return ctx.skip("systemd-analyze is not installed here");
    const r = spawnSync("systemd-analyze", ["verify", ...units.map((u) => join(ROOT, "deploy", "systemd", `${u.name}.service`))], { encoding: "utf8" });
    // Missing /opt/inference-mesh or user `mesh` on this machine is expected; a syntax error is not.
    const problems = `${r.stdout}${r.stderr}`.split("\n").filter((l) => /Unknown (key|section)|Failed to parse|Invalid|bad-setting/i.test(l));
    expect(problems).toEqual([]);
  });
});

describe("container files", () => {
  const INSTRUCTIONS = new Set(["FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL"]);
  for (const file of ["deploy/Containerfile.router", "deploy/Containerfile.node"]) {
    it(`${file}: known instructions, and every COPY from the build context exists`, () => {
      // Join continuation lines, drop comments: what the builder parses.
      const lines = readFileSync(join(ROOT, file), "utf8").replace(/\\\n/g, " ").split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
      expect(lines[0]).toMatch(/^FROM /);
      for (const l of lines) {
        const word = l.split(/\s+/)[0]!;
        expect(INSTRUCTIONS.has(word), `${file}: ${l}`).toBe(true);
        if (word === "COPY" && !/--from=/.test(l)) {
          const parts = l.split(/\s+/).slice(1).filter((p) => !p.startsWith("--"));
          for (const src of parts.slice(0, -1)) expect(existsSync(join(ROOT, src)), `${file}: COPY ${src}`).toBe(true);
        }
        if (word === "ENTRYPOINT") {
          const argv = JSON.parse(l.slice("ENTRYPOINT".length)) as string[];
          expect(existsSync(join(ROOT, argv[1]!)), `${file}: ${argv[1]}`).toBe(true);
        }
      }
    });
  }
});

describe("npm run deploy:edge", () => {
  it("--dry-run builds the Worker bundle without a Cloudflare account", (ctx) => {
    const outdir = join(scratch, "bundle");
    const r = spawnSync(process.execPath, ["--import", "tsx", join(ROOT, "scripts", "deploy-edge.ts"), "--dry-run", "--outdir", outdir], {
      cwd: ROOT,
      env: { ...process.env, WRANGLER_SEND_METRICS: "false" },
      encoding: "utf8",
      timeout: 120_000,
    });
    const out = `${r.stdout}${r.stderr}`;
    if (r.status !== 0 && /ENOTFOUND|EAI_AGAIN|fetch failed|ECONNREFUSED/.test(out)) {
      return ctx.skip(`wrangler's dry run wanted the network here: ${out.slice(-300)}`);
    }
    expect(r.status, out).toBe(0);
    expect(statSync(join(outdir, "index.js")).size).toBeGreaterThan(100_000);
  }, 180_000);

  it("without arguments runs nothing and names the placeholders left in wrangler.toml", () => {
    const r = spawnSync(process.execPath, ["--import", "tsx", join(ROOT, "scripts", "deploy-edge.ts")], { cwd: ROOT, encoding: "utf8", timeout: 60_000 });
    expect(r.status).toBe(0);
    expect(r.stdout).toContain("npx wrangler d1 create inference-mesh");
    expect(r.stdout).toContain("npx wrangler d1 migrations apply inference-mesh --remote");
    expect(r.stdout).not.toContain("$ npx wrangler");
    expect(r.stdout).toContain("database_id");
  });
});
