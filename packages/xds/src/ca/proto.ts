// vmpilot.ca.v1, our own service definition (proto/vmpilot/ca/v1/ca.proto in this package).
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

/** Resolved relative to this module: src/ca/ (tsx) and dist/ca/ (built) are both two levels below the package. */
export const CA_PROTO_FILE = fileURLToPath(new URL("../../proto/vmpilot/ca/v1/ca.proto", import.meta.url));

export const CA_SERVICE_NAME = "vmpilot.ca.v1.CertificateAuthority";

export interface CreateCertificateRequest {
  csr: string;
  validity_seconds: number;
}

export interface CreateCertificateResponse {
  cert_chain: string[];
}

let cached: grpc.ServiceClientConstructor | undefined;

/** The generated client constructor; its `.service` is the server-side definition. */
export function caServiceConstructor(): grpc.ServiceClientConstructor {
  if (cached) return cached;
  const def = protoLoader.loadSync(CA_PROTO_FILE, { keepCase: true, longs: Number, defaults: true });
  const pkg = grpc.loadPackageDefinition(def) as unknown as {
    vmpilot: { ca: { v1: { CertificateAuthority: grpc.ServiceClientConstructor } } };
  };
  cached = pkg.vmpilot.ca.v1.CertificateAuthority;
  return cached;
}
