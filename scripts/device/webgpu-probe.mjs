// Does onnxruntime-node's bundled WebGPU execution provider (Dawn over Vulkan) run models on this
// machine's GPU, and how does it compare with the CPU provider? For each model given: create a
// CPU session and a WebGPU session, run the same seeded input on both, compare the outputs (max
// absolute difference), and time runs of each (p50 after warm-up). One JSON line per model, then
// a table. Plain ESM (no tsx): the GPU machine carries only node and onnxruntime-node.
// Usage: node webgpu-probe.mjs MODEL.onnx[:BATCH] ...
import * as ort from "onnxruntime-node";

const rows = [];
function seeded(n, seed) {
  const a = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (s * 1664525 + 1013904223) >>> 0;
    a[i] = (s / 2 ** 32) * 2 - 1;
  }
  return a;
}
function feedsFor(session, batch) {
  const feeds = {};
  session.inputNames.forEach((name, k) => {
    const meta = session.inputMetadata?.[k];
    const dims = (meta?.shape ?? [batch, 4]).map((d) => (typeof d === "number" && d > 0 ? d : batch));
    feeds[name] = new ort.Tensor("float32", seeded(dims.reduce((a, b) => a * b, 1), 11 + k), dims);
  });
  return feeds;
}
async function timeRuns(session, feeds, minRuns, budgetMs) {
  for (let i = 0; i < 3; i++) await session.run(feeds);
  const times = [];
  const t0 = performance.now();
  while (times.length < minRuns || (performance.now() - t0 < budgetMs && times.length < 200)) {
    const t = performance.now();
    await session.run(feeds);
    times.push(performance.now() - t);
    if (performance.now() - t0 > budgetMs * 3) break;
  }
  times.sort((a, b) => a - b);
  return { p50: times[Math.floor(times.length / 2)], runs: times.length };
}
console.log(JSON.stringify({ ort: ort.env.versions, backends: ort.listSupportedBackends() }));
for (const arg of process.argv.slice(2)) {
  const [path, b] = arg.split(":");
  const batch = Number(b ?? 1);
  const row = { model: path.split("/").pop(), batch };
  try {
    let t = performance.now();
    const cpu = await ort.InferenceSession.create(path, { executionProviders: ["cpu"], graphOptimizationLevel: "all" });
    row.cpuCreateMs = performance.now() - t;
    const feeds = feedsFor(cpu, batch);
    const cpuOut = await cpu.run(feeds);
    t = performance.now();
    let gpu;
    try {
      gpu = await ort.InferenceSession.create(path, { executionProviders: ["webgpu"], graphOptimizationLevel: "all" });
      row.gpuCreateMs = performance.now() - t;
    } catch (err) {
      row.gpuError = String(err.message).slice(0, 600);
    }
    if (gpu) {
      const gpuOut = await gpu.run(feeds);
      let maxDiff = 0, maxAbs = 0;
      for (const name of cpu.outputNames) {
        const a = cpuOut[name].data, g = gpuOut[name].data;
        for (let i = 0; i < a.length; i++) {
          maxDiff = Math.max(maxDiff, Math.abs(a[i] - g[i]));
          maxAbs = Math.max(maxAbs, Math.abs(a[i]));
        }
      }
      row.maxAbsDiff = maxDiff;
      row.maxAbsOutput = maxAbs;
      const tg = await timeRuns(gpu, feeds, 10, 3000);
      row.gpuP50Ms = tg.p50;
      row.gpuRuns = tg.runs;
    }
    const tc = await timeRuns(cpu, feeds, 5, 3000);
    row.cpuP50Ms = tc.p50;
    row.cpuRuns = tc.runs;
    if (row.gpuP50Ms) row.gpuVsCpu = row.gpuP50Ms / row.cpuP50Ms;
  } catch (err) {
    row.error = String(err.message).slice(0, 600);
  }
  console.log(JSON.stringify(row));
  rows.push(row);
}
const f = (x) => (typeof x === "number" ? x.toFixed(3) : "-");
console.log("\nmodel | batch | cpu p50 ms | webgpu p50 ms | webgpu / cpu | max |diff| | create cpu / webgpu ms");
for (const r of rows) console.log(`${r.model} | ${r.batch} | ${f(r.cpuP50Ms)} | ${f(r.gpuP50Ms)} | ${f(r.gpuVsCpu)} | ${f(r.maxAbsDiff)} | ${f(r.cpuCreateMs)} / ${f(r.gpuCreateMs)}${r.gpuError ? " | webgpu: " + r.gpuError : ""}${r.error ? " | " + r.error : ""}`);
