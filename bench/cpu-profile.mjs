// Preloaded into a process a bench starts (NODE_OPTIONS="--import ./bench/cpu-profile.mjs";
// --cpu-prof itself is not allowed in NODE_OPTIONS): records a V8 CPU profile from start and
// writes it to $BENCH_CPU_PROF_DIR/<name>-<pid>.cpuprofile on SIGUSR2, or after BENCH_CPU_PROF_MS.
import { Session } from "node:inspector";
import { writeFileSync } from "node:fs";
import { join } from "node:path";

const dir = process.env.BENCH_CPU_PROF_DIR;
if (dir) {
  const session = new Session();
  session.connect();
  session.post("Profiler.enable");
  session.post("Profiler.setSamplingInterval", { interval: 1000 });
  session.post("Profiler.start");
  let written = false;
  const write = () => {
    if (written) return;
    written = true;
    session.post("Profiler.stop", (err, res) => {
      if (!err) writeFileSync(join(dir, `${process.env.BENCH_CPU_PROF_NAME ?? "proc"}-${process.pid}.cpuprofile`), JSON.stringify(res.profile));
    });
  };
  process.on("SIGUSR2", write);
  const ms = Number(process.env.BENCH_CPU_PROF_MS ?? "0");
  if (ms > 0) setTimeout(write, ms).unref();
}
