// npm run deploy:edge [-- --run <step> [NAME] | --dry-run [--outdir DIR]]
//
// The edge's deploy path (docs/deploy.md), one wrangler command at a time. Without arguments it
// only prints the steps, the commands, and what in wrangler.toml still holds a placeholder: it
// creates nothing. `--run <step>` runs one step's command after printing it (wrangler asks for
// credentials and secret values itself). `--dry-run` builds the bundle `wrangler deploy` would
// upload (`wrangler deploy --dry-run --outdir`), offline, and checks it was written: CI runs it.
//
// Steps: d1-create, r2-create, migrate, secret <NAME>, deploy.

import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const WRANGLER = join(ROOT, "node_modules", "wrangler", "bin", "wrangler.js");

/** The secrets the Worker reads (edge/env.ts); the optional ones only with their feature. */
const SECRETS: { name: string; required: boolean; what: string }[] = [
  { name: "ADMIN_TOKEN", required: true, what: "operator token for POST /v1/accounts (openssl rand -hex 32)" },
  { name: "REGION_SECRETS", required: true, what: 'JSON {"us-west":"<secret>","ap-seoul":"<secret>"}: one per region in REGIONS, each the MESH_SECRET of that region\'s router' },
  { name: "REDIS_TOKEN", required: false, what: "Upstash REST token, with REDIS_URL as a var (region reports)" },
  { name: "R2_ACCESS_KEY_ID", required: false, what: "read-only R2 API token's key id, with R2_S3_ENDPOINT and R2_BUCKET as vars (presigned artifact URLs)" },
  { name: "R2_SECRET_ACCESS_KEY", required: false, what: "that token's secret" },
  { name: "REGION_SECRETS_PREVIOUS", required: false, what: "only while rotating a region's secret (docs/security.md)" },
];

interface Toml {
  databaseName: string;
  databaseId: string;
  bucketName: string;
  /** Settings that still hold the repository's placeholders, with why each matters. */
  placeholders: string[];
}

function readToml(): Toml {
  const text = readFileSync(join(ROOT, "wrangler.toml"), "utf8");
  const value = (key: string): string => {
    const m = new RegExp(`^${key}\\s*=\\s*["']([^"'\\n]*)["']`, "m").exec(text);
    return m?.[1] ?? "";
  };
  const databaseId = value("database_id");
  const placeholders: string[] = [];
  if (/^0{8}-0{4}-0{4}-0{4}-0{12}$/.test(databaseId) || databaseId === "") {
    placeholders.push("d1_databases.database_id: paste the id `wrangler d1 create` printed");
  }
  if (/mesh\.example\.com/.test(text)) placeholders.push("vars.REGIONS: the routers' public https origins (replace *.mesh.example.com)");
  if (/\.example\.workers\.dev/.test(value("PUBLIC_ORIGIN"))) placeholders.push("vars.PUBLIC_ORIGIN: this Worker's public URL (nodes download from it)");
  return { databaseName: value("database_name"), databaseId, bucketName: value("bucket_name"), placeholders };
}

function steps(t: Toml): { step: string; argv: string[]; why: string }[] {
  return [
    { step: "d1-create", argv: ["d1", "create", t.databaseName], why: "the database; paste the printed database_id into wrangler.toml" },
    { step: "r2-create", argv: ["r2", "bucket", "create", t.bucketName], why: "the artifacts bucket (the name in wrangler.toml)" },
    { step: "migrate", argv: ["d1", "migrations", "apply", t.databaseName, "--remote"], why: "the schema (schema/migrations), in order; re-running applies only new ones" },
    ...SECRETS.map((s) => ({
      step: `secret ${s.name}`,
      argv: ["secret", "put", s.name],
      why: `${s.required ? "" : "(optional) "}${s.what}`,
    })),
    { step: "deploy", argv: ["deploy"], why: "uploads the Worker with wrangler.toml's vars and bindings" },
  ];
}

function wrangler(argv: string[], opts: { capture?: boolean } = {}): number {
  console.log(`$ npx wrangler ${argv.join(" ")}`);
  const r = spawnSync(process.execPath, [WRANGLER, ...argv], {
    cwd: ROOT,
    stdio: opts.capture ? ["ignore", "pipe", "pipe"] : "inherit",
    env: { ...process.env, WRANGLER_SEND_METRICS: "false" },
    encoding: "utf8",
  });
  if (opts.capture && r.status !== 0) process.stderr.write(`${r.stdout ?? ""}${r.stderr ?? ""}`);
  if (r.error) throw r.error;
  return r.status ?? 1;
}

function plan(t: Toml): void {
  console.log("The edge's deploy, in order (docs/deploy.md). Nothing was run; `npm run deploy:edge -- --run <step>` runs one.\n");
  for (const s of steps(t)) console.log(`  ${s.step.padEnd(32)} npx wrangler ${s.argv.join(" ")}\n  ${"".padEnd(32)} ${s.why}\n`);
  if (t.placeholders.length) {
    console.log("wrangler.toml still holds placeholders (migrate and deploy refuse until they are replaced):");
    for (const p of t.placeholders) console.log(`  - ${p}`);
  }
}

/** Builds the bundle offline and checks it; returns the exit code. */
function dryRun(outdir: string | null): number {
  const dir = outdir ?? mkdtempSync(join(tmpdir(), "mesh-edge-bundle-"));
  try {
    const code = wrangler(["deploy", "--dry-run", "--outdir", dir], { capture: true });
    if (code !== 0) {
      console.error(`[deploy:edge] wrangler deploy --dry-run failed (exit ${code})`);
      return code;
    }
    const bundle = join(dir, "index.js");
    let size = 0;
    try {
      size = statSync(bundle).size;
    } catch {
      // reported below
    }
    if (size === 0) {
      console.error(`[deploy:edge] no bundle at ${bundle}`);
      return 1;
    }
    console.log(`[deploy:edge] dry run ok: bundle ${bundle} (${(size / 1024).toFixed(0)} KiB)${outdir ? "" : ", removed"}`);
    return 0;
  } finally {
    if (!outdir) rmSync(dir, { recursive: true, force: true });
  }
}

function main(args: string[]): number {
  const t = readToml();
  if (args.length === 0) {
    plan(t);
    return 0;
  }
  if (args[0] === "--dry-run") {
    const i = args.indexOf("--outdir");
    return dryRun(i >= 0 ? resolve(args[i + 1] ?? ".") : null);
  }
  if (args[0] === "--run") {
    const name = args.slice(1).join(" ");
    const s = steps(t).find((x) => x.step === name);
    if (!s) {
      console.error(`[deploy:edge] unknown step '${name}'; steps: ${steps(t).map((x) => x.step).join(", ")}`);
      return 2;
    }
    if ((s.step === "migrate" || s.step === "deploy") && t.placeholders.length) {
      console.error(`[deploy:edge] wrangler.toml still holds placeholders; replace them first:\n  - ${t.placeholders.join("\n  - ")}`);
      return 2;
    }
    return wrangler(s.argv);
  }
  console.error("usage: npm run deploy:edge [-- --run <step> [NAME] | --dry-run [--outdir DIR]]");
  return 2;
}

process.exit(main(process.argv.slice(2)));
