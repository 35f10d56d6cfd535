// The mesh CA, bootstrap tokens and the secure port's identity checks. `loadMeshCa` is the one call the server
// needs; the pieces are exported for the agent (client, CSR) and for tests.
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "@vmpilot/registry/logger";
import { CertificateAuthority } from "./authority.js";
import { SecurePortCredentials } from "./secure-credentials.js";
import { addCaService } from "./service.js";
import { TokenAuthority } from "./tokens.js";

export * from "./authority.js";
export * from "./client.js";
export * from "./csr.js";
export * from "./identity.js";
export { KeyFileError } from "./keys.js";
export * from "./proto.js";
export * from "./secure-credentials.js";
export * from "./service.js";
export * from "./tokens.js";

export interface MeshCaOptions {
  stateDir: string;
  trustDomain: string;
  /** CA files directory; default STATE_DIR/ca. */
  caDir?: string;
  /** Default and maximum workload certificate lifetime. Default 24 h. */
  leafTtlMs?: number;
  /** SANs of the secure port's own certificate besides its SPIFFE id. */
  dnsNames?: readonly string[];
  ipAddresses?: readonly string[];
  /** Lifetime of the secure port's own certificate (renewed at half of it). Default: leafTtlMs. */
  servingTtlMs?: number;
  /** Leeway when checking a token's exp/iat. Default DEFAULT_CLOCK_TOLERANCE_S. */
  tokenClockToleranceS?: number;
  logger?: Logger;
}

export interface MeshCa {
  authority: CertificateAuthority;
  tokens: TokenAuthority;
  /** Credentials to bind the secure port with: `server.bindAsync(addr, ca.secure.credentials, cb)`. */
  secure: SecurePortCredentials;
  trustDomain: string;
  /** Registers CreateCertificate on the secure port's server. */
  addTo(server: grpc.Server): void;
  close(): void;
}

/** Loads (or on first start creates) the CA and token key from the state dir and the secure port's credentials. */
export async function loadMeshCa(opts: MeshCaOptions): Promise<MeshCa> {
  const logger = opts.logger;
  const authority = await CertificateAuthority.load({
    dir: opts.caDir ?? path.join(opts.stateDir, "ca"),
    trustDomain: opts.trustDomain,
    ...(opts.leafTtlMs !== undefined ? { leafTtlMs: opts.leafTtlMs } : {}),
    ...(logger ? { logger } : {}),
  });
  const tokens = await TokenAuthority.load({
    stateDir: opts.stateDir,
    ...(opts.tokenClockToleranceS !== undefined ? { clockToleranceS: opts.tokenClockToleranceS } : {}),
  });
  const secure = await SecurePortCredentials.create({
    authority,
    ...(opts.dnsNames ? { dnsNames: opts.dnsNames } : {}),
    ...(opts.ipAddresses ? { ipAddresses: opts.ipAddresses } : {}),
    ...(opts.servingTtlMs !== undefined ? { ttlMs: opts.servingTtlMs } : {}),
    ...(logger ? { logger } : {}),
  });
  return {
    authority,
    tokens,
    secure,
    trustDomain: opts.trustDomain,
    addTo: (server) => addCaService(server, { authority, tokens, ...(logger ? { logger } : {}) }),
    close: () => secure.close(),
  };
}
