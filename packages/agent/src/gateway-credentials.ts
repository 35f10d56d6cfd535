// Gateway TLS credentials on a VM (Gateway `servers[].tls.credentialName`). In Kubernetes, Istio's gateway agent
// serves a credentialName from the Secret of that name; a VM has no secret store, so the operator (or
// cert-manager, Vault agent, a config-management run) drops files into a directory instead:
//
//   gateway.credentialsDir/NAME/cert.pem   certificate chain, leaf first    -> SDS secret NAME
//   gateway.credentialsDir/NAME/key.pem    its private key                  -> (same secret)
//   gateway.credentialsDir/NAME/ca.pem     optional: CA for client certs    -> SDS secret NAME-cacert
//
// The agent serves each as SDS secrets over its SDS server (sds-server.ts: gRPC on a unix socket that Envoy reaches
// through the bootstrap cluster `sds-grpc`; the control plane references the secrets through it, see
// packages/xds/src/generators/gateway-tls.ts). Not as files: a Gateway may name a credential before its files are
// on the VM, and Envoy rejects a whole LDS update over one missing path_config_source file, whereas an SDS name
// nobody answers only keeps its own listener warming until the files appear (pushed within the debounce).
//
// A credential is published only when it is whole: key and certificate parse and belong together. While an
// update is half-written (the certificate replaced, the key not yet) the previous secret stays served, and the
// next change completes it. A credential whose directory is removed is no longer served: key material the
// operator took away is not handed out again (Envoy keeps the copy it holds until the Gateway server naming it is
// removed or Envoy restarts: SDS has no removal, see sds-server.ts). Earlier agents wrote NAME.sds.yaml files
// (private keys) into the directory that now holds the socket; those are deleted at start.
//
// Changes are noticed by chokidar (debounced), with a periodic rescan as a safety net for what watchers miss
// (symlink retargets in ConfigMap-style `..data` layouts, network file systems). A rescan reads a few small files
// and hands the SDS server the whole set; the server pushes only secrets whose content changed.
import { createPrivateKey, X509Certificate } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import chokidar, { type FSWatcher } from "chokidar";
// Istio's suffix for the client-CA secret of a credentialName: the control plane's constant, a wire contract.
import { CA_SECRET_SUFFIX } from "@vmpilot/xds/generators/gateway-tls";
import { tlsCertificateSecret, validationContextSecret } from "./bootstrap/envoy.js";
import type { Logger } from "./log.js";

export const CERT_FILE = "cert.pem";
export const KEY_FILE = "key.pem";
export const CA_FILE = "ca.pem";

/** Directory names taken as credentials (and so as SDS secret names). */
export const CREDENTIAL_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

export interface GatewayCredential {
  name: string;
  certPem: string;
  keyPem: string;
  caPem?: string;
}

/** The SDS secrets of one credential (proto3 JSON Secrets): NAME, and NAME-cacert when it has a CA. Pure. */
export function credentialSecrets(c: GatewayCredential): Record<string, unknown>[] {
  const out = [tlsCertificateSecret(c.name, c.keyPem, c.certPem)];
  if (c.caPem) out.push(validationContextSecret(`${c.name}${CA_SECRET_SUFFIX}`, c.caPem));
  return out;
}

/** What to tell the operator about a secret Envoy asks for that is not served: which files would provide it. */
export function missingCredentialHint(sourceDir: string, secret: string): string {
  const ca = secret.endsWith(CA_SECRET_SUFFIX) && secret.length > CA_SECRET_SUFFIX.length;
  const name = ca ? secret.slice(0, -CA_SECRET_SUFFIX.length) : secret;
  if (!CREDENTIAL_NAME.test(name)) return `${JSON.stringify(name)} cannot be a credential directory name (${CREDENTIAL_NAME})`;
  return `expected ${path.join(sourceDir, name)}/{${ca ? CA_FILE : `${CERT_FILE},${KEY_FILE}`}}`;
}

function pemCertificates(pem: string): X509Certificate[] {
  return (pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []).map((p) => new X509Certificate(p));
}

/**
 * A file cut off inside a PEM block (a copy still being written: a whole leaf, half an intermediate) would
 * pass the checks on its complete blocks and hand Envoy the fragment. Text outside blocks is allowed, as
 * OpenSSL and Envoy allow it (`openssl pkcs12` writes "Bag Attributes" lines before each block).
 */
function cutOffPem(pem: string): boolean {
  const begins = pem.match(/^-----BEGIN [A-Z0-9 ]+-----\s*$/gm)?.length ?? 0;
  const ends = pem.match(/^-----END [A-Z0-9 ]+-----\s*$/gm)?.length ?? 0;
  return begins !== ends;
}

async function readOptional(file: string): Promise<string | undefined> {
  try {
    return await fs.readFile(file, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw e;
  }
}

/** Reads and checks one credential directory; a string says why it cannot be served (yet). */
export async function readCredential(dir: string, name: string): Promise<GatewayCredential | string> {
  const [certPem, keyPem, caPem] = await Promise.all([CERT_FILE, KEY_FILE, CA_FILE].map((f) => readOptional(path.join(dir, f))));
  if (certPem === undefined || keyPem === undefined) return `needs ${CERT_FILE} and ${KEY_FILE} (missing ${[certPem === undefined ? CERT_FILE : "", keyPem === undefined ? KEY_FILE : ""].filter(Boolean).join(", ")})`;
  for (const [file, text] of [[CERT_FILE, certPem], [KEY_FILE, keyPem], [CA_FILE, caPem]] as const) {
    if (text !== undefined && cutOffPem(text)) return `${file} ends inside a PEM block (still being written?)`;
  }
  try {
    const certs = pemCertificates(certPem);
    if (certs.length === 0) return `${CERT_FILE} holds no PEM certificate`;
    if (!certs[0]!.checkPrivateKey(createPrivateKey(keyPem))) return `${KEY_FILE} is not the key of the first certificate in ${CERT_FILE}`;
    if (caPem !== undefined && pemCertificates(caPem).length === 0) return `${CA_FILE} holds no PEM certificate`;
  } catch (e) {
    return `unreadable PEM: ${(e as Error).message}`;
  }
  return { name, certPem, keyPem, ...(caPem !== undefined ? { caPem } : {}) };
}

/** Where credentials are published: the SDS server (or anything that takes the whole set of secrets). */
export interface SecretSink {
  setSecrets(secrets: Iterable<Record<string, unknown>>): void;
}

export interface GatewayCredentialsOptions {
  /** Where operators put NAME/{cert,key,ca}.pem. */
  sourceDir: string;
  /** Receives the whole set of secrets after every scan. */
  sds: SecretSink;
  /** A directory where earlier agents wrote NAME.sds.yaml files (private keys): those are removed at start. */
  legacySdsDir?: string;
  logger: Logger;
  /** Safety-net rescan period; default 10 s. */
  rescanMs?: number;
  /** Quiet period after a change before rescanning; default 100 ms. */
  debounceMs?: number;
}

export interface CredentialStatus {
  name: string;
  /** Served: the SDS server has its secrets. */
  served: boolean;
  /** Why not (or why an update is held back). */
  problem?: string;
  hasCa: boolean;
  /** The leaf's expiry, when served. */
  notAfter?: string;
}

export class GatewayCredentials {
  /** Credential name -> the secrets served for it (kept while an update is half-written). */
  private readonly served = new Map<string, Record<string, unknown>[]>();
  private readonly state = new Map<string, CredentialStatus>();
  /** Directory names already reported as unusable (reported once, not on every rescan). */
  private readonly badNames = new Set<string>();
  private watcher: FSWatcher | undefined;
  private rescanTimer: NodeJS.Timeout | undefined;
  private debounceTimer: NodeJS.Timeout | undefined;
  private running: Promise<void> = Promise.resolve();
  private dirty = false;
  private stopped = false;
  /** Releases start()'s wait for the watcher's first scan when stop() comes first. */
  private onStop: (() => void) | undefined;
  scans = 0;

  constructor(private readonly opts: GatewayCredentialsOptions) {}

  /** Removes an earlier agent's SDS files, scans once (secrets served before Envoy starts), then watches. */
  async start(): Promise<void> {
    // stop() may come while any of these awaits is pending (SIGTERM during start-up): each step checks, so
    // nothing is opened after stop() has closed what it found.
    if (this.opts.legacySdsDir) await removeLegacySdsFiles(this.opts.legacySdsDir, this.opts.logger);
    await this.scanNow();
    try {
      await fs.access(this.opts.sourceDir);
    } catch {
      this.opts.logger.warn(`gateway credentials directory ${this.opts.sourceDir} does not exist (gateway.credentialsDir): no credentialName can be served until it is created`);
    }
    if (this.stopped) return;
    const watcher = chokidar.watch(this.opts.sourceDir, { ignoreInitial: true, followSymlinks: true, depth: 2 });
    this.watcher = watcher;
    watcher.on("all", () => this.trigger());
    watcher.on("error", (err) => this.opts.logger.warn(`watching ${this.opts.sourceDir}: ${String(err)}`));
    // Changes made before the watcher's own first scan completes would otherwise go unheard until the rescan.
    // A watcher closed by stop() never reports ready: wait for whichever comes first.
    await new Promise<void>((resolve) => {
      watcher.once("ready", () => resolve());
      this.onStop = resolve;
    });
    this.onStop = undefined;
    if (this.stopped) return;
    this.trigger();
    const every = this.opts.rescanMs ?? 10_000;
    const tick = () => {
      this.rescanTimer = setTimeout(() => {
        if (this.stopped) return;
        this.trigger();
        tick();
      }, every);
    };
    tick();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.onStop?.();
    if (this.rescanTimer) clearTimeout(this.rescanTimer);
    if (this.debounceTimer) clearTimeout(this.debounceTimer);
    await this.watcher?.close();
    await this.running;
  }

  status(): CredentialStatus[] {
    return [...this.state.values()].sort((a, b) => a.name.localeCompare(b.name));
  }

  private trigger(): void {
    if (this.stopped) return;
    if (this.debounceTimer) clearTimeout(this.debounceTimer);
    this.debounceTimer = setTimeout(() => void this.scanNow(), this.opts.debounceMs ?? 100);
  }

  /** One scan at a time; a change during a scan schedules exactly one more. */
  scanNow(): Promise<void> {
    if (this.dirty) return this.running;
    this.dirty = true;
    this.running = this.running.then(async () => {
      this.dirty = false;
      if (this.stopped) return;
      try {
        await this.scan();
      } catch (e) {
        this.opts.logger.warn(`gateway credentials: scan of ${this.opts.sourceDir} failed: ${(e as Error).message}`);
      }
    });
    return this.running;
  }

  private async names(): Promise<string[]> {
    let entries: string[];
    try {
      entries = await fs.readdir(this.opts.sourceDir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw e;
    }
    const out: string[] = [];
    for (const name of entries.sort()) {
      // Dot entries are bookkeeping (`..data` of a ConfigMap-style swap), never credentials.
      if (name.startsWith(".")) continue;
      const st = await fs.stat(path.join(this.opts.sourceDir, name)).catch(() => undefined);
      if (!st?.isDirectory()) continue;
      if (!CREDENTIAL_NAME.test(name)) {
        if (this.badNames.has(name)) continue;
        this.badNames.add(name);
        this.opts.logger.warn(`gateway credential directory ${JSON.stringify(name)} skipped: a credentialName must match ${CREDENTIAL_NAME}`);
        continue;
      }
      out.push(name);
    }
    return out;
  }

  private async scan(): Promise<void> {
    this.scans++;
    const log = this.opts.logger;
    const present = new Set(await this.names());
    for (const name of present) {
      const read = await readCredential(path.join(this.opts.sourceDir, name), name);
      const prev = this.state.get(name);
      if (typeof read === "string") {
        // Keep what is served (a half-written update must not take a working certificate away).
        if (prev?.problem !== read) log.warn(`gateway credential ${name}: ${read}${prev?.served ? "; still serving the previous version" : ""}`);
        this.state.set(name, { ...(prev ?? { name, served: false, hasCa: false }), problem: read });
        continue;
      }
      this.served.set(name, credentialSecrets(read));
      const notAfter = new Date(pemCertificates(read.certPem)[0]!.validTo).toISOString();
      if (!prev?.served || prev.problem) log.info(`gateway credential ${name}: serving secret ${name}${read.caPem ? ` and ${name}${CA_SECRET_SUFFIX}` : ""} (certificate valid until ${notAfter})`);
      this.state.set(name, { name, served: true, hasCa: read.caPem !== undefined, notAfter });
    }
    for (const [name, st] of [...this.state]) {
      if (present.has(name)) continue;
      if (st.served) {
        log.warn(
          `gateway credential ${name}: its directory is gone; secret ${name} is no longer served (Envoy keeps the copy it has until the Gateway server naming it is removed or Envoy restarts)`,
        );
      }
      this.state.delete(name);
      this.served.delete(name);
    }
    this.opts.sds.setSecrets([...this.served.values()].flat());
  }
}

/**
 * Earlier agents served credentials as DIR/NAME.sds.yaml and DIR/NAME-cacert.sds.yaml; nothing reads them any more
 * and they hold private keys.
 */
async function removeLegacySdsFiles(dir: string, logger: Logger): Promise<void> {
  let entries: string[];
  try {
    entries = await fs.readdir(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return;
    throw e;
  }
  const stale = entries.filter((f) => f.endsWith(".sds.yaml"));
  for (const f of stale) await fs.rm(path.join(dir, f), { force: true });
  if (stale.length) logger.info(`gateway credentials: removed ${stale.length} file-based SDS file(s) of an earlier agent from ${dir} (credentials are served over the SDS socket now)`);
}
