// A certificate and key named by two environment variables (PEM file paths), read and checked
// once at start: both or neither, each file of the expected kind, and the key belonging to the
// certificate (checked now, not at the first client). The router's port and the node's metrics
// listener use it; the rule for when plain HTTP is acceptable instead is protocol/plaintext.ts.

import { readFileSync } from "node:fs";
import { createSecureContext } from "node:tls";
import { ConfigError, type EnvVars } from "../protocol/config-schema.js";

export interface TlsFiles {
  certFile: string;
  keyFile: string;
  /** PEM: the certificate chain (leaf first) and its private key. */
  cert: string;
  key: string;
}

function readPem(name: string, path: string, what: RegExp): string {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new ConfigError(`${name}: cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  if (!what.test(text)) throw new ConfigError(`${name}: ${path} is not a PEM file of the expected kind`);
  return text;
}

/** The pair named by `certVar` and `keyVar`; null when neither is set. */
export function readTlsFiles(env: EnvVars, certVar: string, keyVar: string): TlsFiles | null {
  const certFile = typeof env[certVar] === "string" ? (env[certVar] as string) : "";
  const keyFile = typeof env[keyVar] === "string" ? (env[keyVar] as string) : "";
  if (!certFile && !keyFile) return null;
  if (!certFile || !keyFile) throw new ConfigError(`${certVar} and ${keyVar} go together: set both PEM file paths, or neither`);
  const cert = readPem(certVar, certFile, /-----BEGIN CERTIFICATE-----/);
  const key = readPem(keyVar, keyFile, /-----BEGIN [A-Z ]*PRIVATE KEY-----/);
  try {
    createSecureContext({ cert, key });
  } catch (err) {
    throw new ConfigError(`${certVar}/${keyVar}: ${(err as Error).message} (does the key belong to the certificate?)`);
  }
  return { certFile, keyFile, cert, key };
}
