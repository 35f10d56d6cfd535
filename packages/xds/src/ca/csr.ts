// Certificate signing requests: what the CA accepts, and the one way vmpilot's agent makes them.
//
// A CSR asks for exactly one identity, its single SPIFFE URI SAN. Everything else a CSR may carry (subject,
// key usages, basic constraints, other SANs) is never copied into a certificate; SANs other than the one URI
// are refused rather than dropped so that a misconfigured client learns why, instead of getting a certificate
// that silently lacks the DNS name it asked for.
import * as x509 from "@peculiar/x509";
import { parseSpiffeId, type SpiffeIdentity } from "@vmpilot/registry";
import { ECDSA_SHA256, generateP256, privateKeyToPem, webcrypto } from "./keys.js";

export class CsrError extends Error {
  override name = "CsrError";
}

export interface ValidCsr {
  /** The requested SPIFFE id, as written in the CSR. */
  spiffeId: string;
  identity: SpiffeIdentity;
  publicKey: x509.PublicKey;
}

const PEM_CSR = /-----BEGIN (?:NEW )?CERTIFICATE REQUEST-----[\s\S]+?-----END (?:NEW )?CERTIFICATE REQUEST-----/g;

/** Parses and checks a PEM CSR; throws CsrError with the reason a client can act on. */
export async function parseCsr(pem: string): Promise<ValidCsr> {
  if (typeof pem !== "string" || pem.trim() === "") throw new CsrError("the request carries no CSR");
  const blocks = pem.match(PEM_CSR) ?? [];
  if (blocks.length !== 1) {
    throw new CsrError(`expected one PEM "CERTIFICATE REQUEST" block, found ${blocks.length}`);
  }
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(blocks[0]!);
  } catch (e) {
    throw new CsrError(`CSR does not parse: ${(e as Error).message}`);
  }

  const alg = csr.publicKey.algorithm as { name?: string; namedCurve?: string };
  if (alg.name !== "ECDSA" || alg.namedCurve !== "P-256") {
    const what = alg.name === "ECDSA" ? `ECDSA ${alg.namedCurve}` : (alg.name ?? "unknown");
    throw new CsrError(`CSR key is ${what}; only ECDSA P-256 keys are accepted`);
  }
  let signatureOk = false;
  try {
    signatureOk = await csr.verify();
  } catch (e) {
    throw new CsrError(`CSR signature cannot be checked: ${(e as Error).message}`);
  }
  if (!signatureOk) throw new CsrError("CSR signature does not verify against its own public key");

  let sanExtensions: x509.SubjectAlternativeNameExtension[];
  try {
    sanExtensions = csr.extensions.filter(
      (e): e is x509.SubjectAlternativeNameExtension => e instanceof x509.SubjectAlternativeNameExtension,
    );
  } catch (e) {
    // @peculiar/x509 throws on SAN kinds it does not model (otherName, x400Address, ...).
    throw new CsrError(`CSR subjectAltName does not parse (only one URI SAN is allowed): ${(e as Error).message}`);
  }
  const names = sanExtensions.flatMap((e) => e.names.items);
  const uris = names.filter((n) => n.type === "url").map((n) => n.value);
  const others = names.filter((n) => n.type !== "url").map((n) => `${n.type.toUpperCase()}:${n.value}`);
  if (others.length > 0) {
    throw new CsrError(`CSR has SANs other than the SPIFFE URI (${others.join(", ")}); only one URI SAN is allowed`);
  }
  if (uris.length !== 1) {
    throw new CsrError(
      uris.length === 0
        ? "CSR has no URI SAN; it must ask for exactly one spiffe://TRUST_DOMAIN/ns/NS/sa/SA"
        : `CSR has ${uris.length} URI SANs (${uris.join(", ")}); exactly one is allowed`,
    );
  }
  const spiffeId = uris[0]!;
  const identity = parseSpiffeId(spiffeId);
  if (!identity) throw new CsrError(`CSR URI SAN ${spiffeId} is not of the form spiffe://TRUST_DOMAIN/ns/NS/sa/SA`);
  return { spiffeId, identity, publicKey: csr.publicKey };
}

/** A fresh ECDSA P-256 key and a CSR for `spiffeId` (the agent's and the tests' way of asking). */
export async function generateKeyAndCsr(spiffeId: string): Promise<{ keyPem: string; csrPem: string }> {
  const keys = await generateP256();
  const csr = await x509.Pkcs10CertificateRequestGenerator.create(
    {
      keys,
      signingAlgorithm: ECDSA_SHA256,
      extensions: [new x509.SubjectAlternativeNameExtension([{ type: "url", value: spiffeId }])],
    },
    webcrypto,
  );
  return { keyPem: await privateKeyToPem(keys.privateKey), csrPem: csr.toString("pem") + "\n" };
}
