// Who is on the other end of a call on the secure port: the SPIFFE id of its verified client certificate.
//
// The port requests client certificates but does not require them at the handshake (a brand-new workload has
// none yet and must reach CreateCertificate with a token), so every handler decides: ADS streams need a
// certificate whose identity matches the node metadata; CreateCertificate takes a certificate or a token.
// grpc-js exposes a peer certificate only when the TLS stack verified it against the port's CA bundle
// (`socket.authorized`), so a certificate from another CA is the same as none here.
import * as grpc from "@grpc/grpc-js";
import * as x509 from "@peculiar/x509";
import { parseSpiffeId, type SpiffeIdentity } from "@vmpilot/registry";
import type { ProxyView } from "../proxy-view.js";
import "./keys.js"; // sets @peculiar/x509's crypto provider

export type PeerIdentity =
  | ({ ok: true; spiffeId: string; notAfter: Date } & SpiffeIdentity)
  | { ok: false; reason: string };

/** Any server call: unary, streaming or duplex all expose getAuthContext(). */
export interface CallWithAuthContext {
  getAuthContext(): ReturnType<grpc.ServerUnaryCall<unknown, unknown>["getAuthContext"]>;
}

export const NO_CLIENT_CERTIFICATE =
  "no verified client certificate (none presented, or not issued by this mesh's CA)";

/** The verified client certificate's identity, or why there is none usable. */
export function peerIdentity(call: CallWithAuthContext, trustDomain: string, now = new Date()): PeerIdentity {
  const peer = call.getAuthContext().sslPeerCertificate;
  if (!peer?.raw) return { ok: false, reason: NO_CLIENT_CERTIFICATE };
  let cert: x509.X509Certificate;
  try {
    cert = new x509.X509Certificate(peer.raw);
  } catch (e) {
    return { ok: false, reason: `client certificate does not parse: ${(e as Error).message}` };
  }
  // The handshake checked validity, but a connection may outlive its certificate.
  if (cert.notAfter <= now) return { ok: false, reason: `client certificate expired at ${cert.notAfter.toISOString()}` };
  let uris: string[];
  try {
    const san = cert.getExtension(x509.SubjectAlternativeNameExtension);
    uris = (san?.names.items ?? []).filter((n) => n.type === "url").map((n) => n.value);
  } catch (e) {
    return { ok: false, reason: `client certificate subjectAltName does not parse: ${(e as Error).message}` };
  }
  const spiffe = uris.filter((u) => u.startsWith("spiffe://"));
  if (spiffe.length !== 1) {
    return { ok: false, reason: `client certificate must carry exactly one SPIFFE URI SAN, found ${spiffe.length}` };
  }
  const id = parseSpiffeId(spiffe[0]!);
  if (!id) return { ok: false, reason: `client certificate SAN ${spiffe[0]} is not spiffe://TRUST_DOMAIN/ns/NS/sa/SA` };
  if (id.trustDomain !== trustDomain) {
    return { ok: false, reason: `client certificate is for trust domain ${id.trustDomain}, this control plane serves ${trustDomain}` };
  }
  return { ok: true, spiffeId: spiffe[0]!, notAfter: cert.notAfter, ...id };
}

export interface StreamRefusal {
  /** UNAUTHENTICATED without a usable certificate, PERMISSION_DENIED when it names someone else. */
  code: grpc.status;
  message: string;
}

/**
 * The check an ADS stream on the secure port passes before its first response: a verified client certificate
 * whose identity is the proxy's node metadata NAMESPACE and SERVICE_ACCOUNT. Undefined when allowed.
 */
export function checkStreamIdentity(
  call: CallWithAuthContext,
  view: Pick<ProxyView, "namespace" | "serviceAccount" | "id">,
  trustDomain: string,
): StreamRefusal | undefined {
  const peer = peerIdentity(call, trustDomain);
  if (!peer.ok) {
    return { code: grpc.status.UNAUTHENTICATED, message: `client certificate required: ${peer.reason}` };
  }
  if (peer.namespace !== view.namespace || peer.serviceAccount !== view.serviceAccount) {
    return {
      code: grpc.status.PERMISSION_DENIED,
      message:
        `certificate identity ${peer.spiffeId} does not match node metadata ` +
        `NAMESPACE=${view.namespace} SERVICE_ACCOUNT=${view.serviceAccount ?? "(unset)"} (node ${view.id})`,
    };
  }
  return undefined;
}

/** `checkStreamIdentity` as just the refusal reason (undefined = allowed). */
export function authorizeStream(
  call: CallWithAuthContext,
  view: Pick<ProxyView, "namespace" | "serviceAccount" | "id">,
  trustDomain: string,
): string | undefined {
  return checkStreamIdentity(call, view, trustDomain)?.message;
}
