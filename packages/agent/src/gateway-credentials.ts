// Gateway TLS credentials on a VM (Gateway `servers[].tls.credentialName`). In Kubernetes, Istio's gateway agent
// serves a credentialName from the Secret of that name; a VM has no secret store, so the operator (or
// cert-manager, Vault agent, a config-management run) drops files into a directory instead:
//
//   gateway.credentialsDir/NAME/cert.pem   certificate chain, leaf first    -> SDS secret NAME
//   gateway.credentialsDir/NAME/key.pem    its private key                  -> (same secret)
//   gateway.credentialsDir/NAME/ca.pem     optional: CA for client certs    -> SDS secret NAME-cacert
//
// The agent turns each into file-based SDS resources for Envoy, exactly like the workload certificate:
// output.dir/credentials/NAME.sds.yaml (0600: it holds the key) and NAME-cacert.sds.yaml, each a
// DiscoveryResponse-shaped document with one Secret, replaced atomically so Envoy's file watch sees whole files.
// The directory is announced in node metadata (CREDENTIAL_SDS_DIR) and the control plane points the gateway's
// listeners at these paths (packages/xds/src/generators/gateway-tls.ts).
//
// A credential is published only when it is whole: key and certificate parse and belong together. While an
// update is half-written (the certificate replaced, the key not yet) the previous files stay, and the next change
// completes it. A credential whose directory is removed has its files removed too: key material the operator
// took away must not linger.
//
// Changes are noticed by chokidar (debounced), with a periodic rescan as a safety net for what watchers miss
// (symlink retargets in ConfigMap-style `..data` layouts, network file systems). A rescan reads a few small files
// and rewrites only what changed, so Envoy reloads a secret only when its content did.
import { createHash, createPrivateKey, X509Certificate } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import chokidar, { type FSWatcher } from "chokidar";
import { stringify as toYaml } from "yaml";
import { sdsRootCa, sdsTlsCertificate } from "./bootstrap/envoy.js";
import { ensureDir, writeFileAtomic } from "./files.js";
import type { Logger } from "./log.js";

/** Istio's suffix for the client-CA secret that goes with a credentialName. */
export const CA_SECRET_SUFFIX = "-cacert";
export const CERT_FILE = "cert.pem";
export const KEY_FILE = "key.pem";
export const CA_FILE = "ca.pem";

/** Names usable as a file name and as an SDS secret name (the control plane checks the same before using a path). */
export const CREDENTIAL_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

export interface GatewayCredential {
  name: string;
  certPem: string;
  keyPem: string;
  caPem?: string;
}

/** The SDS files for one credential: file name -> { content, mode }. Pure. */
export function credentialSdsFiles(c: GatewayCredential): Map<string, { content: string; mode: number }> {
  const out = new Map<string, { content: string; mode: number }>();
  out.set(`${c.name}.sds.yaml`, { content: toYaml(sdsTlsCertificate(c.keyPem, c.certPem, c.name)), mode: 0o600 });
  if (c.caPem) out.set(`${c.name}${CA_SECRET_SUFFIX}.sds.yaml`, { content: toYaml(sdsRootCa(c.caPem, `${c.name}${CA_SECRET_SUFFIX}`)), mode: 0o644 });
  return out;
}

function pemCertificates(pem: string): X509Certificate[] {
  return (pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []).map((p) => new X509Certificate(p));
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

export interface GatewayCredentialsOptions {
  /** Where operators put NAME/{cert,key,ca}.pem. */
  sourceDir: string;
  /** Where the SDS files go (announced to the control plane as CREDENTIAL_SDS_DIR). */
  sdsDir: string;
  logger: Logger;
  /** Safety-net rescan period; default 10 s. */
  rescanMs?: number;
  /** Quiet period after a change before rescanning; default 100 ms. */
  debounceMs?: number;
}

export interface CredentialStatus {
  name: string;
  /** Served: its SDS files are written. */
  served: boolean;
  /** Why not (or why an update is held back). */
  problem?: string;
  hasCa: boolean;
  /** The leaf's expiry, when served. */
  notAfter?: string;
}

export class GatewayCredentials {
  /** SDS file name -> content hash last written. */
  private readonly written = new Map<string, string>();
  private readonly state = new Map<string, CredentialStatus>();
  /** Directory names already reported as unusable (reported once, not on every rescan). */
  private readonly badNames = new Set<string>();
  private watcher: FSWatcher | undefined;
  private rescanTimer: NodeJS.Timeout | undefined;
  private debounceTimer: NodeJS.Timeout | undefined;
  private running: Promise<void> = Promise.resolve();
  private dirty = false;
  private stopped = false;
  scans = 0;

  constructor(private readonly opts: GatewayCredentialsOptions) {}

  /** First scan (files written before Envoy starts), then watching. */
  async start(): Promise<void> {
    await ensureDir(this.opts.sdsDir);
    await fs.chmod(this.opts.sdsDir, 0o700); // it holds private keys, whoever created it
    // Files from an earlier run are ours to replace or remove (a credential deleted while the agent was down).
    for (const f of await fs.readdir(this.opts.sdsDir)) if (f.endsWith(".sds.yaml")) this.written.set(f, "");
    await this.scanNow();
    try {
      await fs.access(this.opts.sourceDir);
    } catch {
      this.opts.logger.warn(`gateway credentials directory ${this.opts.sourceDir} does not exist (gateway.credentialsDir): no credentialName can be served until it is created`);
    }
    this.watcher = chokidar.watch(this.opts.sourceDir, { ignoreInitial: true, followSymlinks: true, depth: 2 });
    this.watcher.on("all", () => this.trigger());
    this.watcher.on("error", (err) => this.opts.logger.warn(`watching ${this.opts.sourceDir}: ${String(err)}`));
    // Changes made before the watcher's own first scan completes would otherwise go unheard until the rescan.
    await new Promise<void>((resolve) => this.watcher!.once("ready", () => resolve()));
    this.trigger();
    const every = this.opts.rescanMs ?? 10_000;
    const tick = () => {
      this.rescanTimer = setTimeout(() => {
        this.trigger();
        tick();
      }, every);
    };
    tick();
  }

  async stop(): Promise<void> {
    this.stopped = true;
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
    const wanted = new Map<string, { content: string; mode: number }>();
    const present = new Set(await this.names());
    for (const name of present) {
      const read = await readCredential(path.join(this.opts.sourceDir, name), name);
      const prev = this.state.get(name);
      if (typeof read === "string") {
        // Keep what is served (a half-written update must not take a working certificate away).
        if (prev?.problem !== read) log.warn(`gateway credential ${name}: ${read}${prev?.served ? "; still serving the previous version" : ""}`);
        this.state.set(name, { ...(prev ?? { name, served: false, hasCa: false }), problem: read });
        for (const f of this.written.keys()) if (f === `${name}.sds.yaml` || f === `${name}${CA_SECRET_SUFFIX}.sds.yaml`) wanted.set(f, { content: "", mode: -1 });
        continue;
      }
      for (const [f, v] of credentialSdsFiles(read)) wanted.set(f, v);
      const notAfter = new Date(pemCertificates(read.certPem)[0]!.validTo).toISOString();
      if (!prev?.served || prev.problem) log.info(`gateway credential ${name}: serving secret ${name}${read.caPem ? ` and ${name}${CA_SECRET_SUFFIX}` : ""} (certificate valid until ${notAfter})`);
      this.state.set(name, { name, served: true, hasCa: read.caPem !== undefined, notAfter });
    }
    await ensureDir(this.opts.sdsDir);
    for (const [file, { content, mode }] of wanted) {
      if (mode === -1) continue; // held back: leave the previous file alone
      const hash = createHash("sha256").update(content).digest("hex");
      if (this.written.get(file) === hash) continue;
      await writeFileAtomic(path.join(this.opts.sdsDir, file), content, mode);
      this.written.set(file, hash);
    }
    for (const file of [...this.written.keys()]) {
      if (wanted.has(file)) continue;
      await fs.rm(path.join(this.opts.sdsDir, file), { force: true });
      this.written.delete(file);
    }
    for (const [name, st] of [...this.state]) {
      if (present.has(name)) continue;
      if (st.served) log.warn(`gateway credential ${name}: its directory is gone; its SDS files were removed (a Gateway still using it will be rejected by Envoy at its next listener update)`);
      this.state.delete(name);
    }
  }
}
