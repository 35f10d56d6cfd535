// CreateCertificate: signs a workload's CSR for the identity the caller proves.
//
// Proof is EITHER the caller's verified client certificate for that same identity (renewal; works for as long
// as the workload keeps renewing, whatever happened to its bootstrap token) OR a valid bootstrap token for it.
// An agent may keep sending its (long expired) token on renewals: a usable certificate wins, so that never
// breaks rotation. Every refusal is logged with the peer and the reason, and the client gets the same reason.
import * as grpc from "@grpc/grpc-js";
import { createLogger, type Logger } from "@vmpilot/registry/logger";
import type { CertificateAuthority } from "./authority.js";
import { CsrError, parseCsr } from "./csr.js";
import { peerIdentity, type CallWithAuthContext } from "./identity.js";
import { caServiceConstructor, type CreateCertificateRequest, type CreateCertificateResponse } from "./proto.js";
import { TokenError, type TokenAuthority } from "./tokens.js";

export interface CaServiceOptions {
  authority: CertificateAuthority;
  tokens: TokenAuthority;
  logger?: Logger;
}

export class CaRefusal extends Error {
  override name = "CaRefusal";
  constructor(
    readonly code: grpc.status,
    message: string,
  ) {
    super(message);
  }
}

/** How the caller proved the identity it asked for. */
export type CaCredential = "client-certificate" | "token";

/** Extracts the JWT from `authorization: Bearer <jwt>`; undefined when absent, CaRefusal when malformed. */
function bearerToken(metadata: grpc.Metadata): string | undefined {
  const values = metadata.get("authorization");
  if (values.length === 0) return undefined;
  if (values.length > 1) throw new CaRefusal(grpc.status.UNAUTHENTICATED, "more than one authorization header");
  const m = /^Bearer\s+(\S+)\s*$/i.exec(String(values[0]));
  if (!m) throw new CaRefusal(grpc.status.UNAUTHENTICATED, 'authorization metadata must be "Bearer <token>"');
  return m[1];
}

/**
 * Decides whether the caller may have a certificate for `requested`. Returns the credential that proved it;
 * throws CaRefusal (UNAUTHENTICATED: nothing usable; PERMISSION_DENIED: proof of another identity).
 */
export async function authorizeCertificateRequest(
  call: CallWithAuthContext & { metadata: grpc.Metadata },
  requested: string,
  trustDomain: string,
  tokens: TokenAuthority,
): Promise<CaCredential> {
  const peer = peerIdentity(call, trustDomain);
  if (peer.ok && peer.spiffeId === requested) return "client-certificate";

  const token = bearerToken(call.metadata);
  let tokenProblem: string | undefined;
  if (token !== undefined) {
    try {
      const claims = await tokens.verify(token, trustDomain);
      if (claims.spiffeId === requested) return "token";
      throw new CaRefusal(
        grpc.status.PERMISSION_DENIED,
        `token is for ${claims.spiffeId} but the CSR asks for ${requested}`,
      );
    } catch (e) {
      if (!(e instanceof TokenError)) throw e;
      tokenProblem = `bearer token rejected: ${e.message}`;
    }
  }
  if (peer.ok) {
    throw new CaRefusal(
      grpc.status.PERMISSION_DENIED,
      `client certificate identity ${peer.spiffeId} does not match the CSR identity ${requested}` +
        (tokenProblem ? `; ${tokenProblem}` : ""),
    );
  }
  if (tokenProblem) throw new CaRefusal(grpc.status.UNAUTHENTICATED, tokenProblem);
  throw new CaRefusal(
    grpc.status.UNAUTHENTICATED,
    `no credentials: send "authorization: Bearer <token>" metadata or connect with a client certificate ` +
      `issued by this CA (${peer.reason})`,
  );
}

/** Validates the CSR, authorizes the caller for its identity, signs; logs the outcome. Throws CaRefusal to refuse. */
export async function handleCreateCertificate(
  call: CallWithAuthContext & { metadata: grpc.Metadata; request: CreateCertificateRequest; getPeer(): string },
  opts: CaServiceOptions,
  log: Logger,
): Promise<CreateCertificateResponse> {
  const { authority, tokens } = opts;
  const peer = call.getPeer();
  let requested: string | undefined;
  try {
    let csr;
    try {
      csr = await parseCsr(call.request.csr);
    } catch (e) {
      if (e instanceof CsrError) throw new CaRefusal(grpc.status.INVALID_ARGUMENT, e.message);
      throw e;
    }
    requested = csr.spiffeId;
    if (csr.identity.trustDomain !== authority.trustDomain) {
      throw new CaRefusal(
        grpc.status.PERMISSION_DENIED,
        `CSR asks for trust domain ${csr.identity.trustDomain}, this CA serves ${authority.trustDomain}`,
      );
    }
    const validity = Number(call.request.validity_seconds ?? 0);
    if (!Number.isFinite(validity) || validity < 0) {
      throw new CaRefusal(grpc.status.INVALID_ARGUMENT, `validity_seconds must be >= 0 (got ${call.request.validity_seconds})`);
    }
    const via = await authorizeCertificateRequest(call, csr.spiffeId, authority.trustDomain, tokens);
    const issued = await authority.issue({ publicKey: csr.publicKey, spiffeId: csr.spiffeId, ttlMs: validity * 1000 });
    log.info("issued certificate", {
      identity: csr.spiffeId,
      via,
      peer,
      serial: issued.serialNumber,
      notAfter: issued.notAfter.toISOString(),
    });
    return { cert_chain: issued.chainPem };
  } catch (e) {
    if (e instanceof CaRefusal) {
      log.warn("refused certificate request", {
        peer,
        identity: requested,
        code: grpc.status[e.code],
        reason: e.message,
      });
    }
    throw e;
  }
}

/** The CertificateAuthority service implementation for `server.addService(caServiceDefinition(), ...)`. */
export function caServiceImplementation(opts: CaServiceOptions): grpc.UntypedServiceImplementation {
  const log = opts.logger ?? createLogger("ca");
  return {
    CreateCertificate(
      call: grpc.ServerUnaryCall<CreateCertificateRequest, CreateCertificateResponse>,
      callback: grpc.sendUnaryData<CreateCertificateResponse>,
    ) {
      handleCreateCertificate(call, opts, log).then(
        (res) => callback(null, res),
        (e: unknown) => {
          if (e instanceof CaRefusal) {
            callback({ code: e.code, details: e.message, metadata: new grpc.Metadata() });
            return;
          }
          log.error("certificate request failed", { peer: call.getPeer(), error: (e as Error).stack ?? String(e) });
          callback({ code: grpc.status.INTERNAL, details: "internal error while signing; see the control plane log" });
        },
      );
    },
  };
}

export function caServiceDefinition(): grpc.ServiceDefinition {
  return caServiceConstructor().service;
}

/** Registers the CA on `server` (the secure port's gRPC server). */
export function addCaService(server: grpc.Server, opts: CaServiceOptions): void {
  server.addService(caServiceDefinition(), caServiceImplementation(opts));
}
