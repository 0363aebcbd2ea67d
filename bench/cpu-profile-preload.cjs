// Preloaded into the mesh's Node processes by bench/mesh-overhead.ts --profile (NODE_OPTIONS
// --require; Node 20 refuses --cpu-prof there): profiles the process with V8's sampler through
// node:inspector and writes <MESH_CPU_PROF_DIR>/CPU.<pid>.cpuprofile when it exits.
"use strict";
const dir = process.env.MESH_CPU_PROF_DIR;
if (dir) {
  const fs = require("node:fs");
  const inspector = require("node:inspector");
  const session = new inspector.Session();
  session.connect();
  session.post("Profiler.enable");
  session.post("Profiler.setSamplingInterval", { interval: 500 });
  session.post("Profiler.start");
  process.on("exit", () => {
    // A session on the main thread answers synchronously, so this runs before the process ends.
    session.post("Profiler.stop", (err, res) => {
      if (err || !res) return;
      fs.mkdirSync(dir, { recursive: true });
      fs.writeFileSync(`${dir}/CPU.${process.pid}.cpuprofile`, JSON.stringify(res.profile));
    });
  });
}
