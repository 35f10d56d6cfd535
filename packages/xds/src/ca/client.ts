// The agent's side of CreateCertificate: one call over TLS that verifies the control plane by its SPIFFE id
// (not by host name: agents dial it by IP or by whatever name the operator's DNS or load balancer gives it).
import type { PeerCertificate } from "node:tls";
import * as grpc from "@grpc/grpc-js";
import * as x509 from "@peculiar/x509";
import "./keys.js"; // sets @peculiar/x509's crypto provider
import { caServiceConstructor, type CreateCertificateRequest, type CreateCertificateResponse } from "./proto.js";

export interface RequestCertificateOptions {
  /** `HOST:PORT` of the secure port. */
  address: string;
  /** Bootstrap token (first certificate). */
  token?: string;
  /** Current key and certificate chain (renewals): presented as the TLS client certificate. */
  clientKeyCert?: { keyPem: string; certChainPem: string };
  csrPem: string;
  /** Mesh root(s) the control plane's certificate must chain to. */
  rootCaPem: string;
  /** The SPIFFE id (URI SAN) the control plane must present, e.g. spiffe://cluster.local/ns/vmpilot-system/sa/vmpilot. */
  expectedServerSan: string;
  validitySeconds?: number;
  /** Default 30 s. */
  deadlineMs?: number;
}

/** A TLS `checkServerIdentity` that accepts exactly the peers whose certificate carries `expectedUri` as a URI SAN. */
export function checkServerSpiffeId(expectedUri: string): (hostname: string, cert: PeerCertificate) => Error | undefined {
  return (_hostname, cert) => {
    let uris: string[] = [];
    try {
      const san = new x509.X509Certificate(cert.raw).getExtension(x509.SubjectAlternativeNameExtension);
      uris = (san?.names.items ?? []).filter((n) => n.type === "url").map((n) => n.value);
    } catch (e) {
      return new Error(`control plane certificate does not parse: ${(e as Error).message}`);
    }
    if (uris.includes(expectedUri)) return undefined;
    return new Error(
      `control plane certificate has URI SANs [${uris.join(", ")}], expected ${expectedUri}`,
    );
  };
}

/** TLS channel credentials for the secure port (also what an ADS client on the secure port uses). */
export function securePortChannelCredentials(opts: {
  rootCaPem: string;
  expectedServerSan: string;
  clientKeyCert?: { keyPem: string; certChainPem: string } | undefined;
}): grpc.ChannelCredentials {
  return grpc.credentials.createSsl(
    Buffer.from(opts.rootCaPem),
    opts.clientKeyCert ? Buffer.from(opts.clientKeyCert.keyPem) : null,
    opts.clientKeyCert ? Buffer.from(opts.clientKeyCert.certChainPem) : null,
    { checkServerIdentity: checkServerSpiffeId(opts.expectedServerSan) },
  );
}

/**
 * Channel options for the secure port. The server is authenticated by its SPIFFE id, so the TLS server name
 * (SNI) only has to be a valid DNS name: agents often dial an IP, which RFC 6066 forbids as SNI.
 */
export const SECURE_PORT_CHANNEL_OPTIONS: grpc.ChannelOptions = {
  "grpc.ssl_target_name_override": "vmpilot.vmpilot-system.svc",
};

/**
 * A channel to the secure port presenting a workload certificate: the agent's xds.sock proxy and its health
 * reports dial with this, so both get the SNI override above (Node warns, DEP0123, when an IP is sent as SNI).
 */
export function securePortClient(address: string, opts: { rootCaPem: string; expectedServerSan: string; clientKeyCert: { keyPem: string; certChainPem: string } }): grpc.Client {
  return new grpc.Client(address, securePortChannelCredentials(opts), SECURE_PORT_CHANNEL_OPTIONS);
}

/** Error of a refused or failed request; `code` is the gRPC status. */
export class CertificateRequestError extends Error {
  override name = "CertificateRequestError";
  constructor(
    readonly code: grpc.status,
    readonly details: string,
  ) {
    super(`${grpc.status[code] ?? code}: ${details}`);
  }
}

/** Sends the CSR; resolves with the PEM chain (leaf first, root last). */
export async function requestCertificate(opts: RequestCertificateOptions): Promise<string[]> {
  const Client = caServiceConstructor();
  const client = new Client(opts.address, securePortChannelCredentials(opts), SECURE_PORT_CHANNEL_OPTIONS);
  try {
    const md = new grpc.Metadata();
    if (opts.token) md.set("authorization", `Bearer ${opts.token}`);
    const req: CreateCertificateRequest = { csr: opts.csrPem, validity_seconds: opts.validitySeconds ?? 0 };
    const res = await new Promise<CreateCertificateResponse>((resolve, reject) => {
      (client as unknown as {
        CreateCertificate: (
          r: CreateCertificateRequest,
          m: grpc.Metadata,
          o: grpc.CallOptions,
          cb: (e: grpc.ServiceError | null, r?: CreateCertificateResponse) => void,
        ) => void;
      }).CreateCertificate(req, md, { deadline: Date.now() + (opts.deadlineMs ?? 30_000) }, (err, r) => {
        if (err) reject(new CertificateRequestError(err.code, err.details));
        else resolve(r!);
      });
    });
    if (!res.cert_chain || res.cert_chain.length === 0) {
      throw new CertificateRequestError(grpc.status.INTERNAL, "the CA answered with an empty certificate chain");
    }
    return res.cert_chain;
  } finally {
    client.close();
  }
}
