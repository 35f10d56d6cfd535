// Upstream TLS: DestinationRule TLS modes and Istio's automatic mTLS, for Envoy (SDS over ADS) and for gRPC
// clients (certificate provider instances from the bootstrap, the only form @grpc/grpc-js-xds accepts).
import type { ClientTLSSettings, Endpoint, Service } from "@vmpilot/registry";
import { istioMutualSni } from "./names.js";

type Json = Record<string, unknown>;

/** SDS secret names served for ISTIO_MUTUAL (Istio's): the workload certificate and the mesh root. */
export const SDS_CERT_SECRET = "default";
export const SDS_ROOT_SECRET = "ROOTCA";
/** The certificate provider instance a gRPC bootstrap declares (the agent writes it). */
export const GRPC_CERT_PROVIDER_INSTANCE = "default";

const UPSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";
const ADS_SOURCE = { ads: {}, resource_api_version: "V3" };

/**
 * Where an Envoy finds its SDS secrets. The control plane never holds a workload's private key, so the agent
 * writes both secrets as files and announces their paths in node metadata SDS_PATHS; clusters must reference
 * the secrets with exactly that config source (Envoy keys SDS subscriptions by name and source). Without
 * SDS_PATHS the secrets are requested over ADS (Istio's form, for a control plane or agent that serves them).
 */
export interface SdsPaths {
  default: string;
  ROOTCA: string;
}

function sdsSource(path: string | undefined): Json {
  return path ? { path_config_source: { path }, resource_api_version: "V3" } : ADS_SOURCE;
}
/** Istio's ALPN for sidecar-to-sidecar mTLS. */
const ISTIO_ALPN = ["istio-peer-exchange", "istio"];

/** Automatic mTLS (Istio): mesh-internal services whose endpoints run with an identity. Never MESH_EXTERNAL. */
export function wantsAutoMtls(service: Service, endpoints: readonly Endpoint[]): boolean {
  return service.location === "MESH_INTERNAL" && endpoints.some((e) => e.serviceAccount);
}

/** SANs to verify: the ServiceEntry's subjectAltNames plus each selected workload's SPIFFE id, sorted, distinct. */
export function meshSans(service: Service, endpoints: readonly Endpoint[]): string[] {
  const sans = new Set(service.subjectAltNames);
  for (const e of endpoints) if (e.spiffeId) sans.add(e.spiffeId);
  return [...sans].sort();
}

/** Envoy: typed SAN matchers (URI for SPIFFE ids and other URIs, DNS otherwise). */
function typedSanMatchers(sans: readonly string[]): Json[] {
  return sans.map((s) => ({ san_type: s.includes("://") ? "URI" : "DNS", matcher: { exact: s } }));
}

/** gRPC reads only the older, untyped `match_subject_alt_names` (deprecated in Envoy, required by grpc-js-xds). */
function sanMatchers(sans: readonly string[]): Json[] {
  return sans.map((s) => ({ exact: s }));
}

function tlsSocket(ctx: Json): Json {
  return { name: "envoy.transport_sockets.tls", typed_config: { "@type": UPSTREAM_TLS, ...ctx } };
}

export function istioMutualSocket(port: number, subset: string | undefined, host: string, sans: readonly string[], sds?: SdsPaths): Json {
  const defaultValidation: Json = {};
  if (sans.length > 0) defaultValidation.match_typed_subject_alt_names = typedSanMatchers(sans);
  return tlsSocket({
    common_tls_context: {
      tls_certificate_sds_secret_configs: [{ name: SDS_CERT_SECRET, sds_config: sdsSource(sds?.default) }],
      combined_validation_context: {
        default_validation_context: defaultValidation,
        validation_context_sds_secret_config: { name: SDS_ROOT_SECRET, sds_config: sdsSource(sds?.ROOTCA) },
      },
      alpn_protocols: ISTIO_ALPN,
    },
    sni: istioMutualSni(port, subset, host),
  });
}

/** SIMPLE / MUTUAL with files on the VM (credentialName needs gateway SDS: issue 8). */
export function fileTlsSocket(tls: ClientTLSSettings, host: string): Json {
  const common: Json = {};
  if (tls.mode === "MUTUAL" && tls.clientCertificate && tls.privateKey) {
    common.tls_certificates = [{ certificate_chain: { filename: tls.clientCertificate }, private_key: { filename: tls.privateKey } }];
  }
  if (tls.caCertificates && !tls.insecureSkipVerify) {
    const v: Json = { trusted_ca: { filename: tls.caCertificates } };
    if (tls.subjectAltNames?.length) v.match_typed_subject_alt_names = typedSanMatchers(tls.subjectAltNames);
    common.validation_context = v;
  }
  // Istio's default SNI for SIMPLE/MUTUAL is the destination host (wildcards cannot be an SNI).
  const sni = tls.sni ?? (host.startsWith("*") ? undefined : host);
  return tlsSocket({ common_tls_context: common, ...(sni ? { sni } : {}) });
}

/** gRPC's form of ISTIO_MUTUAL: gRFC A29 certificate provider instances plus SAN matchers. */
export function grpcMutualSocket(sans: readonly string[]): Json {
  const validation: Json = { ca_certificate_provider_instance: { instance_name: GRPC_CERT_PROVIDER_INSTANCE, certificate_name: "ROOTCA" } };
  if (sans.length > 0) validation.match_subject_alt_names = sanMatchers(sans);
  return tlsSocket({
    common_tls_context: {
      tls_certificate_provider_instance: { instance_name: GRPC_CERT_PROVIDER_INSTANCE, certificate_name: "default" },
      validation_context: validation,
    },
  });
}

/** Istio's transport socket matches: endpoints labelled tlsMode=istio get mTLS, the rest plaintext. */
export function autoMtlsSocketMatches(mtls: Json): Json[] {
  return [
    { name: "tlsMode-istio", match: { tlsMode: "istio" }, transport_socket: mtls },
    {
      name: "tlsMode-disabled",
      match: {},
      transport_socket: { name: "envoy.transport_sockets.raw_buffer", typed_config: { "@type": "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer" } },
    },
  ];
}

/** Endpoint metadata that selects the tlsMode-istio transport socket match. */
export const TLS_MODE_ISTIO_METADATA = { filter_metadata: { "envoy.transport_socket_match": { tlsMode: "istio" } } };
