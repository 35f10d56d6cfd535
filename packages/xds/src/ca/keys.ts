// Private key files and their conversion to WebCrypto keys (what @peculiar/x509 signs with).
//
// Key files are the mesh's crown jewels: created 0600 in 0700 directories, never overwritten, and refused when
// another user could read them (a copied key is a forged identity for every workload in the mesh).
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import * as x509 from "@peculiar/x509";

// WebCrypto types come from node:crypto: the packages compile without the DOM lib.
type CryptoKey = crypto.webcrypto.CryptoKey;
type CryptoKeyPair = crypto.webcrypto.CryptoKeyPair;
type Algorithm = crypto.webcrypto.Algorithm;
type EcdsaParams = crypto.webcrypto.EcdsaParams;
export type { CryptoKey, CryptoKeyPair };

x509.cryptoProvider.set(crypto.webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

export const webcrypto = crypto.webcrypto;

/** Signing algorithm for ECDSA P-256, the only key type vmpilot generates. */
export const P256: crypto.webcrypto.EcKeyGenParams = { name: "ECDSA", namedCurve: "P-256" };
export const ECDSA_SHA256: EcdsaParams = { name: "ECDSA", hash: "SHA-256" };

export class KeyFileError extends Error {
  override name = "KeyFileError";
}

/** A private key ready to sign certificates with, plus the algorithm to sign with. */
export interface SigningKey {
  privateKey: CryptoKey;
  signingAlgorithm: Algorithm | EcdsaParams;
  /** The same key as a Node KeyObject, for checks against certificates. */
  keyObject: crypto.KeyObject;
}

export async function generateP256(): Promise<CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(P256, true, ["sign", "verify"])) as CryptoKeyPair;
}

export async function privateKeyToPem(key: CryptoKey): Promise<string> {
  const der = await webcrypto.subtle.exportKey("pkcs8", key);
  return x509.PemConverter.encode(der, "PRIVATE KEY") + "\n";
}

/**
 * Imports a PEM private key in any form operators bring (PKCS#8, SEC1 "EC PRIVATE KEY", PKCS#1 RSA) for signing.
 * EC P-256/P-384 sign with ECDSA-SHA256/384, RSA with PKCS#1 v1.5 SHA-256 (what Istio's plugged-in CAs use).
 */
export async function importSigningKey(pem: string, file: string): Promise<SigningKey> {
  let keyObject: crypto.KeyObject;
  try {
    keyObject = crypto.createPrivateKey(pem);
  } catch (e) {
    throw new KeyFileError(`${file}: not a PEM private key (${(e as Error).message})`);
  }
  const der = keyObject.export({ type: "pkcs8", format: "der" });
  const type = keyObject.asymmetricKeyType;
  if (type === "ec") {
    const curve = keyObject.asymmetricKeyDetails?.namedCurve;
    const named = curve === "prime256v1" ? "P-256" : curve === "secp384r1" ? "P-384" : undefined;
    if (!named) throw new KeyFileError(`${file}: EC curve ${curve ?? "unknown"} is not supported (use P-256 or P-384)`);
    const privateKey = await webcrypto.subtle.importKey("pkcs8", der, { name: "ECDSA", namedCurve: named }, false, ["sign"]);
    return { privateKey, keyObject, signingAlgorithm: { name: "ECDSA", hash: named === "P-256" ? "SHA-256" : "SHA-384" } };
  }
  if (type === "rsa") {
    const alg = { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" };
    const privateKey = await webcrypto.subtle.importKey("pkcs8", der, alg, false, ["sign"]);
    return { privateKey, keyObject, signingAlgorithm: alg };
  }
  throw new KeyFileError(`${file}: ${type ?? "unknown"} keys are not supported (use ECDSA P-256 or RSA)`);
}

/** Creates `dir` (and parents) with mode 0700 if missing. An existing directory is left as the operator made it. */
export function ensurePrivateDir(dir: string): void {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
}

/** Reads a private key file, refusing one that group or others can read or write. */
export function readPrivateKeyFile(file: string): string {
  const st = fs.statSync(file);
  if ((st.mode & 0o077) !== 0) {
    const mode = (st.mode & 0o777).toString(8).padStart(4, "0");
    throw new KeyFileError(
      `${file} has mode ${mode}: a private key must not be accessible to group or others; run chmod 600 ${file}`,
    );
  }
  return fs.readFileSync(file, "utf8");
}

/**
 * Writes `data` to `file` (mode 0600 unless told otherwise) unless the file already exists, atomically: readers never see a
 * half-written file, and of two processes racing (replicas sharing a state dir) exactly one wins.
 * Returns false when the file already existed (the caller then reads the winner's file).
 */
export function writeFileOnce(file: string, data: string, mode = 0o600): boolean {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${crypto.randomBytes(4).toString("hex")}`);
  fs.writeFileSync(tmp, data, { mode, flag: "wx" });
  try {
    fs.linkSync(tmp, file);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "EEXIST") return false;
    throw e;
  } finally {
    fs.rmSync(tmp, { force: true });
  }
}

export function fileExists(file: string): boolean {
  return fs.existsSync(file);
}
