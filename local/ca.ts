// A throwaway certificate authority for meshes started on this machine (the multi-host mode,
// `MESH_TLS=1 npm start`, tests): one CA and one certificate per host, made at start with
// Debian's `openssl` CLI (no npm dependency, and the same tool an operator would use).
//
//   makeLocalCa(dir: string, hosts: { name: string; hosts: string[] }[]): Promise<LocalCa>
//
// `dir` is created (mode 0700) if needed and receives:
//   ca.crt, ca.key                  the CA (ECDSA P-256, CA:TRUE, 30 days)
//   <name>.crt, <name>.key          per entry: a server certificate signed by the CA whose
//                                   subjectAltName lists every entry of `hosts` (IP addresses
//                                   as IP SANs, names as DNS SANs); keys are written 0600.
// It resolves to the file paths (LocalCa below): hand `caFile` to what connects (a node's
// MESH_CA_FILE, the local edge's MESH_CA_FILE) and certs[name] to the server
// (ROUTER_TLS_CERT / ROUTER_TLS_KEY). Every call makes a new CA: two calls in two folders give
// two CAs that do not trust each other (how tests make an "untrusted" certificate).
// `issueHostCert(ca, name, hosts)` adds one more certificate from an existing CA.

import { execFile } from "node:child_process";
import { chmod, mkdir, rm, writeFile } from "node:fs/promises";
import { isIP } from "node:net";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);
const DAYS = "30";
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const HOST_RE = /^(?=.{1,253}$)[A-Za-z0-9*]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*$/;

export interface HostCert {
  /** PEM certificate (leaf only; the CA is ca.crt). */
  certFile: string;
  /** PEM private key, mode 0600. */
  keyFile: string;
}

export interface LocalCa {
  dir: string;
  /** The CA certificate (PEM): what clients trust. */
  caFile: string;
  /** The CA's key (0600): only issueHostCert needs it. */
  caKeyFile: string;
  /** By the names given. */
  certs: Record<string, HostCert>;
}

export class LocalCaError extends Error {}

async function openssl(args: string[]): Promise<void> {
  try {
    await run("openssl", args, { timeout: 30_000 });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    if (e.code === "ENOENT") throw new LocalCaError("the `openssl` command is needed to make a local CA (apt-get install openssl)");
    throw new LocalCaError(`openssl ${args[0]} failed: ${(e.stderr ?? e.message).trim().slice(0, 500)}`);
  }
}

/** Names become file names, hosts go into an openssl config: both are checked strictly. */
function checkEntry(name: string, hosts: string[]): void {
  if (!NAME_RE.test(name) || name === "ca") throw new LocalCaError(`certificate name '${name}' must be a short file-name-safe word (not 'ca')`);
  if (hosts.length === 0) throw new LocalCaError(`certificate '${name}' needs at least one host name or IP address`);
  for (const h of hosts) if (!isIP(h) && !HOST_RE.test(h)) throw new LocalCaError(`'${h}' is neither an IP address nor a host name`);
}

/** Makes a new CA in `dir` and one server certificate per entry (see the header). */
export async function makeLocalCa(dir: string, entries: { name: string; hosts: string[] }[]): Promise<LocalCa> {
  for (const e of entries) checkEntry(e.name, e.hosts);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const caFile = join(dir, "ca.crt");
  const caKeyFile = join(dir, "ca.key");
  // A random suffix in the CA's name: two local CAs are never mistaken for one another in logs.
  const cn = `inference-mesh local CA ${Math.random().toString(36).slice(2, 10)}`;
  await openssl([
    "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
    "-keyout", caKeyFile, "-out", caFile, "-days", DAYS, "-subj", `/CN=${cn}`,
    "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0",
    "-addext", "keyUsage=critical,keyCertSign,cRLSign",
  ]);
  await chmod(caKeyFile, 0o600);
  const ca: LocalCa = { dir, caFile, caKeyFile, certs: {} };
  for (const e of entries) ca.certs[e.name] = await issueHostCert(ca, e.name, e.hosts);
  return ca;
}

/** Signs one more server certificate with `ca`, for `hosts` (IPs and DNS names), as <name>.crt/.key. */
export async function issueHostCert(ca: LocalCa, name: string, hosts: string[]): Promise<HostCert> {
  checkEntry(name, hosts);
  const certFile = join(ca.dir, `${name}.crt`);
  const keyFile = join(ca.dir, `${name}.key`);
  const csr = join(ca.dir, `${name}.csr`);
  const ext = join(ca.dir, `${name}.ext`);
  const san = hosts.map((h) => (isIP(h) ? `IP:${h}` : `DNS:${h}`)).join(",");
  await writeFile(
    ext,
    `basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=${san}\n`,
  );
  try {
    await openssl(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", keyFile, "-out", csr, "-subj", `/CN=${hosts[0]}`]);
    await chmod(keyFile, 0o600);
    await openssl([
      "x509", "-req", "-in", csr, "-CA", ca.caFile, "-CAkey", ca.caKeyFile, "-set_serial", `0x${randomSerial()}`,
      "-days", DAYS, "-sha256", "-extfile", ext, "-out", certFile,
    ]);
  } finally {
    await rm(csr, { force: true });
    await rm(ext, { force: true });
  }
  return { certFile, keyFile };
}

/** A positive 64-bit serial: unique per certificate, which TLS clients expect of one issuer. */
function randomSerial(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  bytes[0] = (bytes[0]! & 0x7f) | 0x10;
  return Buffer.from(bytes).toString("hex");
}

