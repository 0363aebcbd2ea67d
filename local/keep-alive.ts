// Connections from Node clients of a local mesh (the launcher, tests, benches).
//
// The local edge is workerd, which closes a keep-alive connection after 5 s idle. Node's fetch
// (undici) keeps an idle connection 4 s by default and checks that timer about once a second,
// so now and then a call goes out on a connection the edge is closing at that moment, and fails
// with "other side closed" before it was read (seen in CI on the first call after a pause).
// A 2 s idle limit leaves room for the timer's slack and a link's delay. Cloudflare's edge keeps
// connections far longer; this is only for what talks to workerd here.
import { rootCertificates } from "node:tls";
import { Agent, setGlobalDispatcher } from "undici";

/** How long a local client keeps an idle connection: well under workerd's 5 s. */
export const LOCAL_KEEP_ALIVE_MS = 2_000;

/** An undici Agent for calls into a local mesh; `ca` (PEM) is trusted besides the system's roots. */
export function localAgent(opts: { ca?: string } = {}): Agent {
  return new Agent({
    keepAliveTimeout: LOCAL_KEEP_ALIVE_MS,
    keepAliveMaxTimeout: LOCAL_KEEP_ALIVE_MS,
    ...(opts.ca ? { connect: { ca: [...rootCertificates, opts.ca] } } : {}),
  });
}

/** Makes every plain `fetch` in this process use localAgent(opts). */
export function useLocalAgent(opts: { ca?: string } = {}): void {
  setGlobalDispatcher(localAgent(opts));
}
