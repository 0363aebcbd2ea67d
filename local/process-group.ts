// Children started in their own process group (spawn's `detached: true`), so a signal reaches the
// whole tree (wrangler starts workerd underneath; tsx starts node). A terminal's Ctrl-C then
// reaches the launcher only, which drains them in order; if the launcher exits anyway, every
// group still registered here is killed on the way out.
import type { ChildProcess } from "node:child_process";

const live = new Set<ChildProcess>();
let hooked = false;

/** Kills `child`'s process group with SIGKILL if this process exits while the child still runs. */
export function killGroupOnExit(child: ChildProcess): void {
  if (!hooked) {
    hooked = true;
    process.once("exit", () => {
      for (const c of live) signalGroup(c, "SIGKILL");
    });
  }
  live.add(child);
  child.once("exit", () => live.delete(child));
}

/** Sends `signal` to `child`'s whole process group; a group already gone is not an error. */
export function signalGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  try {
    process.kill(-child.pid!, signal);
  } catch {
    /* already gone */
  }
}
