// The mesh certificate authority: its signing material (generated once, or plugged in by the operator the way
// Istio's `cacerts` are) and leaf issuance.
//
// Layout of the CA directory (default `STATE_DIR/ca`):
//   generated on first start     root-cert.pem (0644), root-key.pem (0600)
//   plugged in by the operator   ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem (optional: the
//                                intermediates between ca-cert.pem and root-cert.pem; Istio's file, which may
//                                also repeat ca-cert.pem and the root, is accepted as is)
// Existing material is never replaced: every replica of a scaled-out control plane must sign with the same key.
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import * as x509 from "@peculiar/x509";
import { spiffeId } from "@vmpilot/registry";
import { createLogger, type Logger } from "@vmpilot/registry/logger";
import {
  ECDSA_SHA256,
  KeyFileError,
  ensurePrivateDir,
  fileExists,
  generateP256,
  importSigningKey,
  privateKeyToPem,
  readPrivateKeyFile,
  webcrypto,
  writeFileOnce,
  type CryptoKey,
  type SigningKey,
} from "./keys.js";

export const DEFAULT_LEAF_TTL_MS = 24 * 3600_000;
export const DEFAULT_ROOT_TTL_MS = 10 * 365 * 24 * 3600_000;
/** Leaves are backdated by this much (at most 10% of their lifetime) to tolerate clock skew between hosts. */
const MAX_BACKDATE_MS = 60_000;

/** The control plane's own identity: the SAN every agent verifies on the secure port. */
export const CONTROL_PLANE_NAMESPACE = "vmpilot-system";
export const CONTROL_PLANE_SERVICE_ACCOUNT = "vmpilot";
export function controlPlaneSpiffeId(trustDomain: string): string {
  return spiffeId(trustDomain, CONTROL_PLANE_NAMESPACE, CONTROL_PLANE_SERVICE_ACCOUNT);
}

export const CA_FILES = {
  rootCert: "root-cert.pem",
  rootKey: "root-key.pem",
  caCert: "ca-cert.pem",
  caKey: "ca-key.pem",
  certChain: "cert-chain.pem",
} as const;

export class CaConfigError extends Error {
  override name = "CaConfigError";
}

export interface CertificateAuthorityOptions {
  /** Directory holding the CA files (see the layout above). */
  dir: string;
  trustDomain: string;
  /** Default and maximum leaf lifetime. Default 24 h. */
  leafTtlMs?: number;
  /** Lifetime of a root generated on first start. Default 10 years. */
  rootTtlMs?: number;
  logger?: Logger;
}

export interface IssueRequest {
  publicKey: x509.PublicKey | CryptoKey;
  /** The URI SAN. */
  spiffeId: string;
  /** Requested lifetime; missing, 0 or longer than the CA's maximum means the maximum. */
  ttlMs?: number;
  dnsNames?: readonly string[];
  ipAddresses?: readonly string[];
}

export interface IssuedCertificate {
  certPem: string;
  /** Leaf first, then intermediates, the root last (what TLS peers and Envoy's SDS expect). */
  chainPem: string[];
  serialNumber: string;
  notBefore: Date;
  notAfter: Date;
}

interface SigningMaterial {
  signer: x509.X509Certificate;
  key: SigningKey;
  /** Intermediates above the signer, excluding the root, bottom-up. */
  intermediates: x509.X509Certificate[];
  root: x509.X509Certificate;
  mode: "generated" | "plugged-in";
}

function pem(cert: x509.X509Certificate): string {
  return cert.toString("pem") + "\n";
}

function readCerts(file: string): x509.X509Certificate[] {
  const text = fs.readFileSync(file, "utf8");
  const blocks = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) throw new CaConfigError(`${file}: no PEM certificate found`);
  return blocks.map((b, i) => {
    try {
      return new x509.X509Certificate(b);
    } catch (e) {
      throw new CaConfigError(`${file}: certificate #${i + 1} does not parse: ${(e as Error).message}`);
    }
  });
}

function fingerprint(cert: x509.X509Certificate): string {
  return crypto.createHash("sha256").update(Buffer.from(cert.rawData)).digest("hex");
}

function nodeCert(cert: x509.X509Certificate): crypto.X509Certificate {
  return new crypto.X509Certificate(Buffer.from(cert.rawData));
}

/** True when `issuer` issued and signed `cert`. */
function issuedBy(cert: x509.X509Certificate, issuer: x509.X509Certificate): boolean {
  const c = nodeCert(cert);
  const i = nodeCert(issuer);
  return c.checkIssued(i) && c.verify(i.publicKey);
}

function checkCaCert(cert: x509.X509Certificate, file: string, now: Date): void {
  if (!nodeCert(cert).ca) throw new CaConfigError(`${file}: not a CA certificate (basicConstraints CA:TRUE missing)`);
  if (cert.notAfter <= now) throw new CaConfigError(`${file}: expired at ${cert.notAfter.toISOString()}`);
  if (cert.notBefore > now) throw new CaConfigError(`${file}: not valid before ${cert.notBefore.toISOString()}`);
}

function checkKeyMatches(cert: x509.X509Certificate, key: SigningKey, certFile: string, keyFile: string): void {
  if (!nodeCert(cert).checkPrivateKey(key.keyObject)) {
    throw new CaConfigError(`${keyFile} is not the private key of ${certFile}`);
  }
}

function randomSerial(): string {
  const b = crypto.randomBytes(16);
  b[0] = (b[0]! & 0x7f) | 0x01; // positive and full length, as RFC 5280 wants
  return b.toString("hex");
}

async function keyIdentifier(cert: x509.X509Certificate): Promise<string> {
  const ski = cert.getExtension(x509.SubjectKeyIdentifierExtension);
  if (ski) return ski.keyId;
  return (await x509.SubjectKeyIdentifierExtension.create(cert.publicKey, false, webcrypto)).keyId;
}

export class CertificateAuthority {
  private constructor(
    private readonly material: SigningMaterial,
    readonly trustDomain: string,
    readonly leafTtlMs: number,
    readonly dir: string,
  ) {}

  /** Loads the CA from `dir`, generating a root there on first start. Throws CaConfigError/KeyFileError. */
  static async load(opts: CertificateAuthorityOptions): Promise<CertificateAuthority> {
    const log = opts.logger ?? createLogger("ca");
    const leafTtlMs = opts.leafTtlMs ?? DEFAULT_LEAF_TTL_MS;
    if (!(leafTtlMs >= 1000)) throw new CaConfigError(`leaf certificate lifetime must be at least 1s (got ${leafTtlMs}ms)`);
    const f = (name: string) => path.join(opts.dir, name);
    let material: SigningMaterial;
    if (fileExists(f(CA_FILES.caCert)) || fileExists(f(CA_FILES.caKey))) {
      material = await loadPluggedIn(opts.dir);
      log.info("using the operator-provided CA", {
        dir: opts.dir,
        signer: material.signer.subject,
        root: material.root.subject,
        intermediates: material.intermediates.length,
      });
    } else if (fileExists(f(CA_FILES.rootCert)) || fileExists(f(CA_FILES.rootKey))) {
      material = await loadGenerated(opts.dir);
      log.info("using the CA root generated earlier", { dir: opts.dir, root: material.root.subject });
    } else {
      material = await generateRoot(opts.dir, opts.trustDomain, opts.rootTtlMs ?? DEFAULT_ROOT_TTL_MS);
      log.info("generated a new CA root", { dir: opts.dir, root: material.root.subject, notAfter: material.root.notAfter });
    }
    return new CertificateAuthority(material, opts.trustDomain, leafTtlMs, opts.dir);
  }

  get mode(): "generated" | "plugged-in" {
    return this.material.mode;
  }

  /** The trust anchor agents verify the control plane and each other with. */
  get rootCertPem(): string {
    return pem(this.material.root);
  }

  /** The part of every issued chain above the leaf: signer (unless it is the root), intermediates, root. */
  get caChainPem(): string[] {
    const { signer, intermediates, root } = this.material;
    const out = signer === root ? [] : [pem(signer)];
    for (const c of intermediates) out.push(pem(c));
    out.push(pem(root));
    return out;
  }

  /** Signs a leaf certificate for `req.spiffeId`. The caller has already authorized the request. */
  async issue(req: IssueRequest): Promise<IssuedCertificate> {
    const { signer, key } = this.material;
    const now = Date.now();
    const ttl = req.ttlMs && req.ttlMs > 0 ? Math.min(req.ttlMs, this.leafTtlMs) : this.leafTtlMs;
    // Never outlive the signer: a chain whose middle expires first fails validation anyway.
    const notAfter = new Date(Math.min(now + ttl, signer.notAfter.getTime()));
    const notBefore = new Date(now - Math.min(MAX_BACKDATE_MS, Math.floor(ttl / 10)));
    const publicKey =
      req.publicKey instanceof x509.PublicKey ? req.publicKey : await x509.PublicKey.create(req.publicKey, webcrypto);

    const names: x509.JsonGeneralName[] = [{ type: "url", value: req.spiffeId }];
    for (const d of req.dnsNames ?? []) names.push({ type: "dns", value: d });
    for (const ip of req.ipAddresses ?? []) names.push({ type: "ip", value: ip });

    const cert = await x509.X509CertificateGenerator.create(
      {
        serialNumber: randomSerial(),
        // Empty subject, as SPIFFE X.509-SVIDs and Istio's leaves: the identity is the URI SAN, which RFC 5280
        // then requires to be critical.
        subject: [],
        issuer: signer.subjectName,
        notBefore,
        notAfter,
        publicKey,
        signingKey: key.privateKey,
        signingAlgorithm: key.signingAlgorithm,
        extensions: [
          new x509.BasicConstraintsExtension(false, undefined, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
          new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
          await x509.SubjectKeyIdentifierExtension.create(publicKey, false, webcrypto),
          new x509.AuthorityKeyIdentifierExtension(await keyIdentifier(signer)),
          new x509.SubjectAlternativeNameExtension(names, true),
        ],
      },
      webcrypto,
    );
    const certPem = pem(cert);
    return {
      certPem,
      chainPem: [certPem, ...this.caChainPem],
      serialNumber: cert.serialNumber,
      notBefore: cert.notBefore,
      notAfter: cert.notAfter,
    };
  }

  /** A fresh key and certificate for the control plane's secure port (see `controlPlaneSpiffeId`). */
  async issueServingCertificate(opts: {
    dnsNames?: readonly string[];
    ipAddresses?: readonly string[];
    ttlMs?: number;
  }): Promise<IssuedCertificate & { keyPem: string }> {
    const keys = await generateP256();
    const issued = await this.issue({
      publicKey: keys.publicKey,
      spiffeId: controlPlaneSpiffeId(this.trustDomain),
      ...(opts.ttlMs !== undefined ? { ttlMs: opts.ttlMs } : {}),
      ...(opts.dnsNames ? { dnsNames: opts.dnsNames } : {}),
      ...(opts.ipAddresses ? { ipAddresses: opts.ipAddresses } : {}),
    });
    return { ...issued, keyPem: await privateKeyToPem(keys.privateKey) };
  }
}

async function loadPluggedIn(dir: string): Promise<SigningMaterial> {
  const f = (name: string) => path.join(dir, name);
  for (const name of [CA_FILES.caCert, CA_FILES.caKey, CA_FILES.rootCert]) {
    if (!fileExists(f(name))) {
      throw new CaConfigError(
        `${f(name)} is missing: a plugged-in CA needs ${CA_FILES.caCert}, ${CA_FILES.caKey} and ${CA_FILES.rootCert} (and optionally ${CA_FILES.certChain})`,
      );
    }
  }
  const now = new Date();
  const [signer] = readCerts(f(CA_FILES.caCert)) as [x509.X509Certificate];
  const key = await importSigningKey(readPrivateKeyFile(f(CA_FILES.caKey)), f(CA_FILES.caKey));
  checkKeyMatches(signer, key, f(CA_FILES.caCert), f(CA_FILES.caKey));
  checkCaCert(signer, f(CA_FILES.caCert), now);
  const roots = readCerts(f(CA_FILES.rootCert));
  if (roots.length !== 1) throw new CaConfigError(`${f(CA_FILES.rootCert)}: expected one certificate, found ${roots.length}`);
  const root = roots[0]!;
  checkCaCert(root, f(CA_FILES.rootCert), now);
  if (!issuedBy(root, root)) throw new CaConfigError(`${f(CA_FILES.rootCert)}: not a self-signed root`);

  const pool = fileExists(f(CA_FILES.certChain)) ? readCerts(f(CA_FILES.certChain)) : [];
  const rootFp = fingerprint(root);
  const intermediates: x509.X509Certificate[] = [];
  let current = signer;
  for (let depth = 0; fingerprint(current) !== rootFp; depth++) {
    if (depth > 8) throw new CaConfigError(`${f(CA_FILES.caCert)}: chain to the root is longer than 8 certificates`);
    if (issuedBy(current, root)) break;
    const issuer = pool.find((c) => fingerprint(c) !== fingerprint(current) && issuedBy(current, c));
    if (!issuer) {
      throw new CaConfigError(
        `${f(CA_FILES.caCert)} does not chain to ${f(CA_FILES.rootCert)}: no issuer of "${current.issuer}" in ${f(CA_FILES.certChain)}`,
      );
    }
    checkCaCert(issuer, f(CA_FILES.certChain), now);
    intermediates.push(issuer);
    current = issuer;
  }
  return {
    signer: fingerprint(signer) === rootFp ? root : signer,
    key,
    intermediates,
    root,
    mode: "plugged-in",
  };
}

async function loadGenerated(dir: string): Promise<SigningMaterial> {
  const certFile = path.join(dir, CA_FILES.rootCert);
  const keyFile = path.join(dir, CA_FILES.rootKey);
  if (!fileExists(keyFile)) {
    throw new CaConfigError(`${certFile} exists but ${keyFile} does not; restore the key or remove both to generate a new root`);
  }
  // The key is written first; a replica that lost the creation race may briefly see it without the cert.
  const deadline = Date.now() + 10_000;
  while (!fileExists(certFile)) {
    if (Date.now() > deadline) {
      throw new CaConfigError(`${keyFile} exists but ${certFile} does not; restore the certificate or remove both`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const key = await importSigningKey(readPrivateKeyFile(keyFile), keyFile);
  const [root] = readCerts(certFile) as [x509.X509Certificate];
  checkKeyMatches(root, key, certFile, keyFile);
  checkCaCert(root, certFile, new Date());
  return { signer: root, key, intermediates: [], root, mode: "generated" };
}

async function generateRoot(dir: string, trustDomain: string, ttlMs: number): Promise<SigningMaterial> {
  ensurePrivateDir(dir);
  const keys = await generateP256();
  const now = Date.now();
  const root = await x509.X509CertificateGenerator.createSelfSigned(
    {
      serialNumber: randomSerial(),
      name: `O=${trustDomain}, CN=vmpilot root CA`,
      notBefore: new Date(now - MAX_BACKDATE_MS),
      notAfter: new Date(now + ttlMs),
      keys,
      signingAlgorithm: ECDSA_SHA256,
      extensions: [
        new x509.BasicConstraintsExtension(true, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, webcrypto),
      ],
    },
    webcrypto,
  );
  const keyFile = path.join(dir, CA_FILES.rootKey);
  if (!writeFileOnce(keyFile, await privateKeyToPem(keys.privateKey))) {
    // Another replica created the root between our existence check and now: use theirs.
    return loadGenerated(dir);
  }
  writeFileOnce(path.join(dir, CA_FILES.rootCert), pem(root), 0o644);
  return { signer: root, key: await importSigningKey(readPrivateKeyFile(keyFile), keyFile), intermediates: [], root, mode: "generated" };
}

export { KeyFileError };
