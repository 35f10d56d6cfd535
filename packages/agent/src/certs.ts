// The workload certificate: obtained with the bootstrap token, renewed at about half its lifetime with the
// current certificate as proof (mTLS), so rotation keeps going long after the token expired. Each renewal uses a
// fresh key. Files are replaced atomically; Envoy picks them up through file-based SDS, proxyless gRPC through
// its file_watcher provider; neither restarts.
import { EventEmitter } from "node:events";
import fs from "node:fs/promises";
import { createPrivateKey, X509Certificate } from "node:crypto";
import { stringify as toYaml } from "yaml";
import { requestCertificate } from "@vmpilot/xds/ca/client";
import { generateKeyAndCsr } from "@vmpilot/xds/ca/csr";
import { Backoff, sleep } from "./backoff.js";
import { sdsRootCa, sdsTlsCertificate } from "./bootstrap/envoy.js";
import { controlPlaneTarget, type AgentConfig } from "./config.js";
import { ensureDir, writeFileAtomic } from "./files.js";
import type { Logger } from "./log.js";

/** Asks the CA for a certificate. The agent's only dependency on the control plane for identity. */
export interface CertificateIssuer {
  issue(req: { csrPem: string; token?: string; current?: { keyPem: string; certChainPem: string }; validitySeconds?: number }): Promise<string[]>;
}

/** The control plane's CreateCertificate on its secure port, verified by the configured root and SAN. */
export function caIssuer(cfg: AgentConfig): CertificateIssuer {
  return {
    async issue(req) {
      const rootCaPem = await fs.readFile(cfg.controlPlane.rootCertFile, "utf8");
      return requestCertificate({
        address: controlPlaneTarget(cfg),
        csrPem: req.csrPem,
        rootCaPem,
        expectedServerSan: cfg.controlPlane.san,
        ...(req.token ? { token: req.token } : {}),
        ...(req.current ? { clientKeyCert: req.current } : {}),
        ...(req.validitySeconds ? { validitySeconds: req.validitySeconds } : {}),
      });
    },
  };
}

export interface CertificateBundle {
  keyPem: string;
  /** Leaf first, root last (as the CA returned it). */
  chainPem: string[];
  /** The trust anchor written for ROOTCA / ca_certificate_file: the configured mesh root. */
  rootPem: string;
  serial: string;
  notBefore: Date;
  notAfter: Date;
  /** The leaf's URI SAN. */
  identity: string;
}

export interface LeafInfo {
  serial: string;
  notBefore: Date;
  notAfter: Date;
  uris: string[];
}

export function inspectLeaf(pem: string): LeafInfo {
  const cert = new X509Certificate(pem);
  const uris = (cert.subjectAltName ?? "")
    .split(/,\s*/)
    .filter((s) => s.startsWith("URI:"))
    .map((s) => s.slice(4));
  return { serial: cert.serialNumber, notBefore: new Date(cert.validFrom), notAfter: new Date(cert.validTo), uris };
}

/**
 * When to renew: at half the lifetime, jittered by up to ±10 % of the lifetime so a fleet issued at the same
 * moment (a rollout) does not come back to the CA at the same moment. Never negative.
 */
export function renewalDelayMs(notBefore: Date, notAfter: Date, now: number, random: () => number = Math.random): number {
  const lifetime = notAfter.getTime() - notBefore.getTime();
  const at = notBefore.getTime() + lifetime * (0.5 + (random() * 2 - 1) * 0.1);
  return Math.max(0, Math.round(at - now));
}

/** Writes key, chain, root and the two SDS resources. The SDS files come last: they are what Envoy watches. */
export async function writeCertificateFiles(cfg: AgentConfig, b: CertificateBundle): Promise<void> {
  const o = cfg.output;
  await ensureDir(o.dir);
  const chain = b.chainPem.map((p) => (p.endsWith("\n") ? p : `${p}\n`)).join("");
  await writeFileAtomic(o.rootCertFile, b.rootPem, 0o644);
  await writeFileAtomic(o.keyFile, b.keyPem, 0o600);
  await writeFileAtomic(o.certChainFile, chain, 0o644);
  await writeFileAtomic(o.sdsRootFile, toYaml(sdsRootCa(b.rootPem)), 0o644);
  await writeFileAtomic(o.sdsDefaultFile, toYaml(sdsTlsCertificate(b.keyPem, chain)), 0o600);
}

export interface RotatorOptions {
  logger: Logger;
  random?: () => number;
}

/**
 * Keeps a valid certificate on disk. `start()` resolves once the first certificate is written (reusing a still
 * valid one from a previous run, so an agent restart after the token expired is not fatal); afterwards it
 * renews on its own and emits `rotated` (bundle) after each renewal and `error` never: failures are retried with
 * backoff while the old certificate stays in place.
 */
export class CertificateRotator extends EventEmitter {
  private bundle: CertificateBundle | undefined;
  private readonly abort = new AbortController();
  private loop: Promise<void> | undefined;
  private readonly backoff: Backoff;
  private renewals = 0;
  private lastError: string | undefined;
  nextRenewalAt: Date | undefined;

  constructor(
    private readonly cfg: AgentConfig,
    private readonly issuer: CertificateIssuer,
    private readonly opts: RotatorOptions,
  ) {
    super();
    this.backoff = new Backoff(cfg.certificates.minRetryMs, cfg.certificates.maxRetryMs, opts.random);
  }

  get current(): CertificateBundle | undefined {
    return this.bundle;
  }

  status(): Record<string, unknown> {
    const b = this.bundle;
    return {
      identity: this.cfg.identity,
      ...(b ? { serial: b.serial, notBefore: b.notBefore.toISOString(), notAfter: b.notAfter.toISOString() } : {}),
      renewals: this.renewals,
      ...(this.nextRenewalAt ? { nextRenewalAt: this.nextRenewalAt.toISOString() } : {}),
      ...(this.lastError ? { lastError: this.lastError } : {}),
    };
  }

  async start(): Promise<CertificateBundle> {
    const reused = await this.loadExisting();
    if (reused) {
      this.bundle = reused;
      this.opts.logger.info(`reusing certificate ${reused.serial} for ${reused.identity}, valid until ${reused.notAfter.toISOString()}`);
    } else {
      const first = await this.retrying("obtaining the first certificate", () => this.obtain(undefined));
      if (!first) throw new Error("stopped before a certificate was obtained");
      this.bundle = first;
    }
    this.loop = this.renewLoop();
    return this.bundle;
  }

  async stop(): Promise<void> {
    this.abort.abort();
    await this.loop;
  }

  private async renewLoop(): Promise<void> {
    while (!this.abort.signal.aborted && this.bundle) {
      const delay = renewalDelayMs(this.bundle.notBefore, this.bundle.notAfter, Date.now(), this.opts.random);
      this.nextRenewalAt = new Date(Date.now() + delay);
      if (!(await sleep(delay, this.abort.signal))) return;
      const renewed = await this.retrying("renewing the certificate", () => this.obtain(this.bundle));
      if (!renewed) return;
      this.bundle = renewed;
      this.renewals++;
      this.emit("rotated", renewed);
    }
  }

  /** Runs `fn` until it succeeds or the rotator stops; undefined when stopped. */
  private async retrying(what: string, fn: () => Promise<CertificateBundle>): Promise<CertificateBundle | undefined> {
    this.backoff.reset();
    while (!this.abort.signal.aborted) {
      try {
        const b = await fn();
        this.lastError = undefined;
        return b;
      } catch (e) {
        this.lastError = (e as Error).message;
        const delay = this.backoff.next();
        const keeping = this.bundle ? `; keeping certificate ${this.bundle.serial} (valid until ${this.bundle.notAfter.toISOString()})` : "";
        this.opts.logger.warn(`${what} failed: ${this.lastError}; retrying in ${delay} ms${keeping}`);
        if (!(await sleep(delay, this.abort.signal))) return undefined;
      }
    }
    return undefined;
  }

  /** One CSR round trip. Proof: the current certificate while it is valid, else the bootstrap token. */
  private async obtain(current: CertificateBundle | undefined): Promise<CertificateBundle> {
    const { keyPem, csrPem } = await generateKeyAndCsr(this.cfg.identity);
    const useCert = current !== undefined && current.notAfter.getTime() > Date.now();
    const req: Parameters<CertificateIssuer["issue"]>[0] = { csrPem };
    if (useCert) req.current = { keyPem: current.keyPem, certChainPem: current.chainPem.join("") };
    else req.token = await this.readToken();
    if (this.cfg.certificates.ttlMs) req.validitySeconds = Math.max(1, Math.round(this.cfg.certificates.ttlMs / 1000));
    const chainPem = await this.issuer.issue(req);
    const leaf = inspectLeaf(chainPem[0]!);
    if (!leaf.uris.includes(this.cfg.identity)) {
      throw new Error(`the CA issued a certificate for [${leaf.uris.join(", ")}], not ${this.cfg.identity}`);
    }
    const rootPem = await fs.readFile(this.cfg.controlPlane.rootCertFile, "utf8");
    const bundle: CertificateBundle = { keyPem, chainPem, rootPem, serial: leaf.serial, notBefore: leaf.notBefore, notAfter: leaf.notAfter, identity: this.cfg.identity };
    await writeCertificateFiles(this.cfg, bundle);
    this.opts.logger.info(`certificate ${leaf.serial} for ${this.cfg.identity} (${useCert ? "renewed with the current certificate" : "issued for the bootstrap token"}), valid until ${leaf.notAfter.toISOString()}`);
    return bundle;
  }

  private async readToken(): Promise<string> {
    try {
      const t = (await fs.readFile(this.cfg.controlPlane.tokenFile, "utf8")).trim();
      if (!t) throw new Error("is empty");
      return t;
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      throw new Error(`no usable certificate and the bootstrap token file ${this.cfg.controlPlane.tokenFile} ${err.code === "ENOENT" ? "does not exist" : err.message}`);
    }
  }

  /** A certificate from a previous run, if it is for this identity, matches its key and has not expired. */
  private async loadExisting(): Promise<CertificateBundle | undefined> {
    try {
      const [keyPem, chainText, rootPem] = await Promise.all([
        fs.readFile(this.cfg.output.keyFile, "utf8"),
        fs.readFile(this.cfg.output.certChainFile, "utf8"),
        fs.readFile(this.cfg.controlPlane.rootCertFile, "utf8"),
      ]);
      const chainPem = chainText.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n?/g) ?? [];
      if (chainPem.length === 0) return undefined;
      const leaf = inspectLeaf(chainPem[0]!);
      if (!new X509Certificate(chainPem[0]!).checkPrivateKey(createPrivateKey(keyPem))) return undefined;
      if (!leaf.uris.includes(this.cfg.identity) || leaf.notAfter.getTime() <= Date.now() + 1000) return undefined;
      const bundle: CertificateBundle = { keyPem, chainPem, rootPem, serial: leaf.serial, notBefore: leaf.notBefore, notAfter: leaf.notAfter, identity: this.cfg.identity };
      // Rewrite so the SDS files and root match this config (paths or root may have changed).
      await writeCertificateFiles(this.cfg, bundle);
      return bundle;
    } catch {
      return undefined;
    }
  }
}
