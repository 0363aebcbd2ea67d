// `npm start`: boots the local mesh, prints what to call, and stops everything on Ctrl-C.
// `npm run start:hosts` (`npm start -- --hosts`): the multi-host mode (docs/multi-host.md), a
// network namespace per colo and per region joined by links from the link table.

import { join } from "node:path";
import { TINY_GPT_NAME, tinyGptBundle } from "../scripts/make-demo-models.js";
import { simulatedRttVar } from "./link-table.js";
import { DEFAULT_REGIONS, ROOT, startMesh } from "./mesh.js";
import { multiHostUnavailable, startHostsMesh, type HostsMesh } from "./topology.js";

const say = (line: string) => process.stdout.write(line + "\n");
// A closed pipe (`npm start | tee` after Ctrl-C) must not crash the launcher before it cleans up.
process.stdout.on("error", () => undefined);

const multiHost = process.argv.includes("--hosts");
let mesh: Awaited<ReturnType<typeof startMesh>> | null = null;
let hosts: HostsMesh | null = null;
let stopping = false;
const shutdown = async (signal: string) => {
  if (stopping) return;
  stopping = true;
  say(`\n[mesh] ${signal}: stopping every process the mesh started${multiHost ? " and removing its namespaces" : ""}...`);
  await (hosts ?? mesh)?.stop();
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
  const common = { progress: say, edgePort: Number(process.env.EDGE_PORT ?? 8787), demoChat: !tinyGptBundle(join(ROOT, "models", TINY_GPT_NAME)), demoWarm: true };
  if (multiHost) {
    const why = multiHostUnavailable();
    if (why) throw new Error(`--hosts needs network namespaces: ${why}. Plain \`npm start\` runs the one-machine mode.`);
    // MESH_COLOS=ICN,SJC,NRT: the colos that get a host (and an edge) of their own.
    // Across hosts the parts speak TLS (a local CA made at start); MESH_TLS=0 turns it off.
    hosts = await startHostsMesh({ ...common, tls: process.env.MESH_TLS !== "0", colos: process.env.MESH_COLOS?.split(",").filter(Boolean) });
    mesh = hosts.mesh;
  } else {
    mesh = await startMesh({
      ...common,
      tls: process.env.MESH_TLS === "1",
      // One machine: the link table's round trips become delay on the edge-to-region hop, so
      // the latency model measures the configured geography instead of ~1 ms of loopback.
      edgeVars: { SIMULATED_RTT: simulatedRttVar(DEFAULT_REGIONS.map((r) => r.name)) },
    });
  }
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
if (hosts) {
  const port = new URL(mesh.edge).port;
  const topo = hosts.topology;
  say("[mesh] multi-host: a caller's colo is the namespace it runs in (that colo's edge is on 127.0.0.1 there):");
  for (const [colo, h] of Object.entries(topo.colos)) {
    say(`  ${colo}: ip netns exec ${h.ns} curl -s -D - -o /dev/null http://127.0.0.1:${port}/v2/models/demo-mlp/infer -H "Authorization: Bearer ${mesh.apiKey}" -H "Content-Type: application/json" -d '${body}' | grep x-mesh-region`);
  }
  say(`[mesh] links (${topo.mode}): ${Object.keys(topo.colos).flatMap((c) => Object.keys(topo.regions).map((r) => `${c}<->${r} ${topo.link(c, r).rttMs} ms`)).join(", ")}`);
  say("");
}
say("[mesh] Ctrl-C stops everything.");
