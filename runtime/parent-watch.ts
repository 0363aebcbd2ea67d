// Router and node processes stop themselves when the process that started them is gone, however
// it went (killed with -9, crashed): the local launcher and the benches set MESH_PARENT_PID, so a
// local mesh never leaves orphans holding ports; in production (systemd, containers) it is unset
// and this does nothing.

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
