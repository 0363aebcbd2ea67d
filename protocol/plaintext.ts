// When a part of the mesh may talk plain HTTP / ws:// instead of TLS: the one rule the router,
// the node agent and the edge apply to their own listener or to what they connect to. Plain
// text is allowed over loopback (it never leaves the machine), or anywhere when the process
// says it is part of a one-machine mesh (MESH_LOCAL=1, the flag the edge's local mode already
// uses). Everything else needs TLS: that is what keeps a forgotten certificate from silently
// putting node tokens and signed calls on a real network in clear.

/** 127.0.0.0/8, ::1 (also in brackets, as URLs write it), ::ffff:127.x, and `localhost`. */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, "").toLowerCase();
  if (h === "localhost" || h.endsWith(".localhost")) return true;
  if (h === "::1") return true;
  const v4 = h.startsWith("::ffff:") ? h.slice(7) : h;
  // No node:net here: the Worker uses this too.
  return /^127\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.test(v4) && v4.split(".").every((o) => Number(o) <= 255);
}

/** True when plain HTTP / ws:// to or on `host` is acceptable (see the header). */
export function plaintextAllowed(host: string, localMode: boolean): boolean {
  return localMode || isLoopbackHost(host);
}
