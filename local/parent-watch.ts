// Processes the local launcher starts stop themselves when the launcher is gone, however it
// went (killed with -9, crashed), so a local mesh never leaves orphans holding ports.

export function exitWhenParentDies(onGone: () => void, env: NodeJS.ProcessEnv = process.env): void {
  const pid = Number(env.MESH_PARENT_PID);
  if (!Number.isInteger(pid) || pid <= 1) return;
  const timer = setInterval(() => {
    try {
      process.kill(pid, 0);
    } catch {
      clearInterval(timer);
      onGone();
    }
  }, 1_000);
  timer.unref();
}
