// `npm start`: boots the local mesh, prints what to call, and stops everything on Ctrl-C.

import { join } from "node:path";
import { TINY_GPT_NAME, tinyGptBundle } from "../scripts/make-demo-models.js";
import { ROOT, startMesh } from "./mesh.js";

const say = (line: string) => process.stdout.write(line + "\n");
// A closed pipe (`npm start | tee` after Ctrl-C) must not crash the launcher before it cleans up.
process.stdout.on("error", () => undefined);

let mesh: Awaited<ReturnType<typeof startMesh>> | null = null;
let stopping = false;
const shutdown = async (signal: string) => {
  if (stopping) return;
  stopping = true;
  say(`\n[mesh] ${signal}: stopping every process the mesh started...`);
  await mesh?.stop();
  say("[mesh] stopped");
  process.exit(0);
};
process.on("SIGINT", () => void shutdown("SIGINT"));
process.on("SIGTERM", () => void shutdown("SIGTERM"));
process.on("uncaughtException", (err) => {
  process.stderr.write(`[mesh] unexpected error: ${err.stack ?? err}\n`);
  void shutdown("error");
});

try {
  // tiny-gpt is the demo's generative model; demo-chat (the character bigram) only stands in without it.
  mesh = await startMesh({ progress: say, edgePort: Number(process.env.EDGE_PORT ?? 8787), demoChat: !tinyGptBundle(join(ROOT, "models", TINY_GPT_NAME)), tls: process.env.MESH_TLS === "1" });
} catch (err) {
  say(`[mesh] failed to start: ${(err as Error).message}`);
  process.exit(1);
}
if (stopping) await new Promise(() => undefined);

const body = JSON.stringify({ id: "hello", inputs: [{ name: "x", datatype: "FP32", shape: [1, 4], data: [1, 2, 3, 4] }] });
say("");
say(`[mesh] ready: edge ${mesh.edge}, regions ${Object.entries(mesh.regions).map(([k, v]) => `${k}=${v}`).join(" ")}`);
say(`[mesh] facts for scripts: ${mesh.stateDir}/local.json   logs: ${mesh.stateDir}/logs/`);
if (mesh.caFile) say(`[mesh] routers serve HTTPS/WSS; their CA: ${mesh.caFile} (curl --cacert)`);
say("[mesh] try it:");
say("");
say(`  curl -s ${mesh.edge}/v2/models/demo-mlp/infer \\`);
say(`    -H "Authorization: Bearer ${mesh.apiKey}" \\`);
say(`    -H "Content-Type: application/json" \\`);
say(`    -d '${body}'`);
say("");
const chatModel = mesh.models.some((m) => m.name === TINY_GPT_NAME) ? TINY_GPT_NAME : "demo-chat";
say(`  curl -s ${mesh.edge}/openai/v1/chat/completions \\`);
say(`    -H "Authorization: Bearer ${mesh.apiKey}" \\`);
say(`    -H "Content-Type: application/json" \\`);
say(`    -d '${JSON.stringify({ model: chatModel, messages: [{ role: "user", content: "Tell me about the river." }], max_tokens: 60 })}'`);
say("");
say("[mesh] Ctrl-C stops everything.");
