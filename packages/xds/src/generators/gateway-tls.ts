// Downstream TLS of a gateway server (Gateway `servers[].tls`): the certificate it presents and how it verifies
// clients. Credentials come from files on the gateway VM (serverCertificate/privateKey/caCertificates) or by
// SDS under Istio's names: the secret `credentialName` and, for client verification, the secret
// `credentialName-cacert`.
//
// A gateway whose agent announced CREDENTIAL_SDS_CLUSTER gets those secrets from the agent's SDS server (gRPC
// on a unix socket, reached through that bootstrap cluster: Istio's `sds-grpc`), never from file-based SDS.
// The reason is failure isolation. Envoy loads a `path_config_source` when the listener is built and rejects the
// whole LDS update if the file is missing, so one Gateway naming a credential that is not (yet) on the VM would
// freeze every listener of that gateway (NACK). A gRPC SDS subscription to a name the agent does not have simply
// gets no answer: on a running Envoy only the listener using it waits (warming), the update is accepted and the
// others keep serving, and the agent pushes the secret when its files appear. At Envoy's start every listener
// waits for all to initialise, so there the wait is bounded by initial_fetch_timeout (15 s by default). Without the announcement the secrets are requested over ADS, for operators who run an SDS of their own
// behind the control plane.
//
// ISTIO_MUTUAL uses the mesh identity (`default`, `ROOTCA`) from the agent's files when the proxy announced
// SDS_PATHS, as for upstream mTLS: those files exist before Envoy starts, so the file source cannot fail there.
import type { ServerTLSSettings } from "@vmpilot/registry";
import type { Scope } from "./context.js";
import { SDS_CERT_SECRET, SDS_ROOT_SECRET } from "./tls.js";

type Json = Record<string, unknown>;

const DOWNSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";
const ADS_SOURCE = { ads: {}, resource_api_version: "V3" };
/** Istio's suffix for the CA secret that goes with a credentialName. */
export const CA_SECRET_SUFFIX = "-cacert";

/** Modes that terminate TLS at the gateway (PASSTHROUGH and AUTO_PASSTHROUGH do not). */
export function terminatesTls(tls: ServerTLSSettings | undefined): boolean {
  const mode = tls?.mode ?? "SIMPLE";
  return mode === "SIMPLE" || mode === "MUTUAL" || mode === "OPTIONAL_MUTUAL" || mode === "ISTIO_MUTUAL";
}

const TLS_VERSIONS: Record<string, string> = { TLS_AUTO: "TLS_AUTO", TLSV1_0: "TLSv1_0", TLSV1_1: "TLSv1_1", TLSV1_2: "TLSv1_2", TLSV1_3: "TLSv1_3" };

function sdsSource(path: string | undefined): Json {
  return path ? { path_config_source: { path }, resource_api_version: "V3" } : ADS_SOURCE;
}

/**
 * The agent's SDS server through the bootstrap cluster `cluster`, as Istio's gateways reference `sds-grpc`. Envoy
 * keys SDS subscriptions by name and config source, so this shape must be the same for every reference to a secret.
 */
function grpcSdsSource(cluster: string): Json {
  return {
    api_config_source: {
      api_type: "GRPC",
      transport_api_version: "V3",
      grpc_services: [{ envoy_grpc: { cluster_name: cluster } }],
      // The agent serves secrets by name only; the node (hundreds of bytes of metadata) once per stream is enough.
      set_node_on_first_message_only: true,
    },
    resource_api_version: "V3",
  };
}

/** Where the secrets of a credentialName (NAME, NAME-cacert) come from for this gateway. */
function credentialSource(scope: Scope): Json {
  return scope.credentialSdsCluster ? grpcSdsSource(scope.credentialSdsCluster) : ADS_SOURCE;
}

/** Typed SAN matchers (the untyped field is deprecated in Envoy): URI for SPIFFE ids and other URIs, DNS otherwise. */
function sanMatchers(sans: readonly string[] | undefined): Json {
  return sans?.length ? { match_typed_subject_alt_names: sans.map((s) => ({ san_type: s.includes("://") ? "URI" : "DNS", matcher: { exact: s } })) } : {};
}

/** The validation part of the common TLS context for modes that verify clients. */
function clientValidation(tls: ServerTLSSettings, scope: Scope): Json {
  if (tls.mode === "ISTIO_MUTUAL") {
    return {
      combined_validation_context: {
        default_validation_context: sanMatchers(tls.subjectAltNames),
        validation_context_sds_secret_config: { name: SDS_ROOT_SECRET, sds_config: sdsSource(scope.sdsPaths?.ROOTCA) },
      },
    };
  }
  if (tls.caCertificates) return { validation_context: { trusted_ca: { filename: tls.caCertificates }, ...sanMatchers(tls.subjectAltNames) } };
  // The parser requires caCertificates or credentialName for MUTUAL/OPTIONAL_MUTUAL.
  return {
    combined_validation_context: {
      default_validation_context: sanMatchers(tls.subjectAltNames),
      validation_context_sds_secret_config: { name: `${tls.credentialName}${CA_SECRET_SUFFIX}`, sds_config: credentialSource(scope) },
    },
  };
}

function certificate(tls: ServerTLSSettings, scope: Scope): Json {
  if (tls.mode === "ISTIO_MUTUAL") return { tls_certificate_sds_secret_configs: [{ name: SDS_CERT_SECRET, sds_config: sdsSource(scope.sdsPaths?.default) }] };
  // credentialName wins over files, as in Istio.
  if (tls.credentialName) return { tls_certificate_sds_secret_configs: [{ name: tls.credentialName, sds_config: credentialSource(scope) }] };
  return { tls_certificates: [{ certificate_chain: { filename: tls.serverCertificate }, private_key: { filename: tls.privateKey } }] };
}

/**
 * The `envoy.transport_sockets.tls` socket terminating TLS for a server. `http` servers advertise h2 and
 * http/1.1 by ALPN; TLS-terminated TCP servers advertise nothing.
 */
export function downstreamTlsSocket(tls: ServerTLSSettings, scope: Scope, http: boolean): Json {
  const mode = tls.mode ?? "SIMPLE";
  const common: Json = { ...certificate(tls, scope) };
  const verify = mode === "MUTUAL" || mode === "OPTIONAL_MUTUAL" || mode === "ISTIO_MUTUAL";
  if (verify) Object.assign(common, clientValidation({ ...tls, mode }, scope));
  if (http) common.alpn_protocols = ["h2", "http/1.1"];
  // Istio's gateway default floor is TLS 1.2.
  const params: Json = { tls_minimum_protocol_version: TLS_VERSIONS[tls.minProtocolVersion ?? "TLSV1_2"] };
  if (tls.maxProtocolVersion) params.tls_maximum_protocol_version = TLS_VERSIONS[tls.maxProtocolVersion];
  common.tls_params = params;
  const ctx: Json = { common_tls_context: common };
  if (mode === "MUTUAL" || mode === "ISTIO_MUTUAL") ctx.require_client_certificate = true;
  return { name: "envoy.transport_sockets.tls", typed_config: { "@type": DOWNSTREAM_TLS, ...ctx } };
}
