// Bootstrap tokens: an ES256 JWT that lets one new workload obtain its first certificate for exactly one
// identity. After that, the workload renews with its certificate, so the token's expiry never stops rotation.
//
// The signing key lives in `STATE_DIR/tokens/signing-key.pem` (0600), created once; replicas that share the
// state dir (or have the file distributed to them) verify each other's tokens.
import crypto from "node:crypto";
import path from "node:path";
import * as jose from "jose";
import { parseSpiffeId, spiffeId } from "@vmpilot/registry";
import { ensurePrivateDir, fileExists, readPrivateKeyFile, writeFileOnce } from "./keys.js";

export const TOKEN_ISSUER = "vmpilot";
export const TOKEN_AUDIENCE = "vmpilot-ca";
export const TOKEN_ALG = "ES256";
export const DEFAULT_TOKEN_TTL_MS = 24 * 3600_000;
/** Tolerated clock difference between the host that minted a token and the one verifying it. */
export const DEFAULT_CLOCK_TOLERANCE_S = 5;
export const SIGNING_KEY_FILE = path.join("tokens", "signing-key.pem");

export class TokenError extends Error {
  override name = "TokenError";
}

export interface TokenClaims {
  /** The SPIFFE id the token is for (`sub`). */
  spiffeId: string;
  trustDomain: string;
  namespace: string;
  serviceAccount: string;
  jti: string;
  issuedAt: Date;
  expiresAt: Date;
}

export interface TokenAuthorityOptions {
  stateDir: string;
  /** Verification leeway on exp/iat, in seconds. Default DEFAULT_CLOCK_TOLERANCE_S. */
  clockToleranceS?: number;
}

export class TokenAuthority {
  private constructor(
    private readonly privateKey: crypto.KeyObject,
    private readonly publicKey: crypto.KeyObject,
    /** RFC 7638 thumbprint of the public key, sent as `kid` so a wrong-key token is named as such. */
    readonly keyId: string,
    private readonly clockToleranceS: number,
  ) {}

  /** Loads `STATE_DIR/tokens/signing-key.pem`, creating it on first use. */
  static async load(opts: TokenAuthorityOptions): Promise<TokenAuthority> {
    const file = path.join(opts.stateDir, SIGNING_KEY_FILE);
    if (!fileExists(file)) {
      ensurePrivateDir(path.dirname(file));
      const { privateKey } = await jose.generateKeyPair(TOKEN_ALG, { extractable: true });
      // Losing a creation race to a replica is fine: everybody then reads the winner's key below.
      writeFileOnce(file, await jose.exportPKCS8(privateKey));
    }
    const pem = readPrivateKeyFile(file);
    let privateKey: crypto.KeyObject;
    try {
      privateKey = crypto.createPrivateKey(pem);
    } catch (e) {
      throw new TokenError(`${file}: not a PEM private key (${(e as Error).message})`);
    }
    if (privateKey.asymmetricKeyType !== "ec" || privateKey.asymmetricKeyDetails?.namedCurve !== "prime256v1") {
      throw new TokenError(`${file}: the token signing key must be ECDSA P-256 (ES256)`);
    }
    const publicKey = crypto.createPublicKey(privateKey);
    const keyId = await jose.calculateJwkThumbprint(await jose.exportJWK(publicKey));
    return new TokenAuthority(privateKey, publicKey, keyId, opts.clockToleranceS ?? DEFAULT_CLOCK_TOLERANCE_S);
  }

  /** Mints a token for `spiffe://trustDomain/ns/namespace/sa/serviceAccount`. */
  async create(opts: { trustDomain: string; namespace: string; serviceAccount: string; ttlMs?: number }): Promise<string> {
    const sub = spiffeId(opts.trustDomain, opts.namespace, opts.serviceAccount);
    if (!parseSpiffeId(sub)) {
      throw new TokenError(`"${sub}" is not a valid identity (namespace and service account: letters, digits, . _ -)`);
    }
    const ttlMs = opts.ttlMs ?? DEFAULT_TOKEN_TTL_MS;
    if (!(ttlMs >= 1000)) throw new TokenError(`token lifetime must be at least 1s`);
    const now = Math.floor(Date.now() / 1000);
    return new jose.SignJWT({ ns: opts.namespace, sa: opts.serviceAccount })
      .setProtectedHeader({ alg: TOKEN_ALG, typ: "JWT", kid: this.keyId })
      .setIssuer(TOKEN_ISSUER)
      .setAudience(TOKEN_AUDIENCE)
      .setSubject(sub)
      .setIssuedAt(now)
      .setExpirationTime(now + Math.ceil(ttlMs / 1000))
      .setJti(crypto.randomUUID())
      .sign(this.privateKey);
  }

  /** Verifies signature, algorithm, issuer, audience, expiry and the identity claims; throws TokenError saying why. */
  async verify(token: string, trustDomain: string): Promise<TokenClaims> {
    let kid: string | undefined;
    try {
      kid = jose.decodeProtectedHeader(token).kid;
    } catch {
      throw new TokenError("token is not a JWT");
    }
    let payload: jose.JWTPayload;
    try {
      ({ payload } = await jose.jwtVerify(token, this.publicKey, {
        algorithms: [TOKEN_ALG],
        issuer: TOKEN_ISSUER,
        audience: TOKEN_AUDIENCE,
        clockTolerance: this.clockToleranceS,
        requiredClaims: ["sub", "exp", "iat", "jti"],
      }));
    } catch (e) {
      throw new TokenError(this.explain(e, kid));
    }
    const { sub, ns, sa, jti, iat, exp } = payload as jose.JWTPayload & { ns?: unknown; sa?: unknown };
    const id = typeof sub === "string" ? parseSpiffeId(sub) : undefined;
    if (!id) throw new TokenError(`token subject ${JSON.stringify(sub)} is not a SPIFFE id`);
    if (id.namespace !== ns || id.serviceAccount !== sa) {
      throw new TokenError(`token claims ns=${String(ns)} sa=${String(sa)} do not match its subject ${sub}`);
    }
    if (id.trustDomain !== trustDomain) {
      throw new TokenError(`token is for trust domain ${id.trustDomain}, this CA serves ${trustDomain}`);
    }
    return {
      spiffeId: sub!,
      trustDomain: id.trustDomain,
      namespace: id.namespace,
      serviceAccount: id.serviceAccount,
      jti: String(jti),
      issuedAt: new Date(iat! * 1000),
      expiresAt: new Date(exp! * 1000),
    };
  }

  private explain(e: unknown, kid: string | undefined): string {
    if (e instanceof jose.errors.JWTExpired) {
      const exp = (e.payload as jose.JWTPayload).exp;
      return `token expired${exp ? ` at ${new Date(exp * 1000).toISOString()}` : ""}`;
    }
    if (e instanceof jose.errors.JWSSignatureVerificationFailed) {
      return kid && kid !== this.keyId
        ? `token signature does not verify: signed by another key (kid ${kid}, this control plane's key is ${this.keyId})`
        : "token signature does not verify (tampered or forged token)";
    }
    if (e instanceof jose.errors.JOSEAlgNotAllowed) return `token algorithm not allowed (only ${TOKEN_ALG})`;
    if (e instanceof jose.errors.JWTClaimValidationFailed) return `token claim "${e.claim}" invalid: ${e.message}`;
    if (e instanceof jose.errors.JOSEError) return `token is malformed: ${e.message}`;
    return `token cannot be verified: ${(e as Error).message}`;
  }
}
