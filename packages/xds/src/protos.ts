// The Envoy v3 API, loaded from the protos that ship inside @grpc/grpc-js-xds (deps/), never from copies.
// One protobufjs Root for the whole process: loading is ~0.5 s, so it happens once, lazily.
import { createRequire } from "node:module";
import fs from "node:fs";
import path from "node:path";
import protobuf from "protobufjs";

const require = createRequire(import.meta.url);

/** Directory of the protos bundled with @grpc/grpc-js-xds. */
export function envoyProtoDepsDir(): string {
  return path.join(path.dirname(require.resolve("@grpc/grpc-js-xds/package.json")), "deps");
}

export function envoyProtoIncludeDirs(): string[] {
  const deps = envoyProtoDepsDir();
  return ["envoy-api", "xds", "googleapis", "protoc-gen-validate"].map((d) => path.join(deps, d));
}

/**
 * Entry points: every message type a generator, the server, a bootstrap or a test may name, plus the typed
 * extensions that appear inside `Any` (a `@type` must resolve to be encoded). Imports load transitively.
 */
const ENTRY_PROTOS = [
  "envoy/service/discovery/v3/ads.proto",
  "envoy/service/discovery/v3/discovery.proto",
  "envoy/service/status/v3/csds.proto",
  "envoy/config/bootstrap/v3/bootstrap.proto",
  "envoy/config/cluster/v3/cluster.proto",
  "envoy/config/endpoint/v3/endpoint.proto",
  "envoy/config/listener/v3/listener.proto",
  "envoy/config/route/v3/route.proto",
  "envoy/extensions/transport_sockets/tls/v3/tls.proto",
  "envoy/extensions/transport_sockets/tls/v3/secret.proto",
  "envoy/extensions/transport_sockets/raw_buffer/v3/raw_buffer.proto",
  "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto",
  "envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.proto",
  "envoy/extensions/filters/network/sni_dynamic_forward_proxy/v3/sni_dynamic_forward_proxy.proto",
  "envoy/extensions/filters/http/router/v3/router.proto",
  "envoy/extensions/filters/http/fault/v3/fault.proto",
  "envoy/extensions/filters/http/health_check/v3/health_check.proto",
  "envoy/extensions/filters/http/dynamic_forward_proxy/v3/dynamic_forward_proxy.proto",
  "envoy/extensions/filters/listener/original_dst/v3/original_dst.proto",
  "envoy/extensions/filters/listener/tls_inspector/v3/tls_inspector.proto",
  "envoy/extensions/filters/listener/http_inspector/v3/http_inspector.proto",
  "envoy/extensions/clusters/aggregate/v3/cluster.proto",
  "envoy/extensions/clusters/dynamic_forward_proxy/v3/cluster.proto",
  "envoy/extensions/common/dynamic_forward_proxy/v3/dns_cache.proto",
  "envoy/extensions/upstreams/http/v3/http_protocol_options.proto",
  "envoy/extensions/access_loggers/file/v3/file.proto",
  "envoy/extensions/access_loggers/stream/v3/stream.proto",
  "envoy/extensions/load_balancing_policies/round_robin/v3/round_robin.proto",
  "envoy/extensions/load_balancing_policies/ring_hash/v3/ring_hash.proto",
  "envoy/extensions/load_balancing_policies/least_request/v3/least_request.proto",
  "envoy/extensions/load_balancing_policies/wrr_locality/v3/wrr_locality.proto",
  "envoy/extensions/load_balancing_policies/client_side_weighted_round_robin/v3/client_side_weighted_round_robin.proto",
  "envoy/extensions/load_balancing_policies/pick_first/v3/pick_first.proto",
  "envoy/extensions/retry/host/previous_hosts/v3/previous_hosts.proto",
  "envoy/extensions/network/dns_resolver/cares/v3/cares_dns_resolver.proto",
  "envoy/extensions/filters/http/rbac/v3/rbac.proto",
  "envoy/extensions/filters/network/rbac/v3/rbac.proto",
  "xds/type/v3/typed_struct.proto",
  "udpa/type/v1/typed_struct.proto",
];

let rootPromise: protobuf.Root | undefined;

/** The shared Root with every type above resolved. Field names keep their proto (snake_case) spelling. */
export function envoyRoot(): protobuf.Root {
  if (rootPromise) return rootPromise;
  // descriptor.proto is not in deps/; protobufjs ships it, and the validate/udpa annotations extend it.
  protobuf.common("descriptor", require("protobufjs/google/protobuf/descriptor.json").nested.google.nested.protobuf.nested);
  const includes = envoyProtoIncludeDirs();
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => {
    if (path.isAbsolute(target) || target.startsWith("google/protobuf/")) return target;
    for (const dir of includes) {
      const candidate = path.join(dir, target);
      if (fs.existsSync(candidate)) return candidate;
    }
    return target;
  };
  root.loadSync(ENTRY_PROTOS, { keepCase: true });
  root.resolveAll();
  rootPromise = root;
  return root;
}

export function lookupType(fullName: string): protobuf.Type {
  return envoyRoot().lookupType(fullName.replace(/^\./, ""));
}

export const TYPE_PREFIX = "type.googleapis.com/";

/** Type URLs of the xDS resource types, as on the wire. */
export const TypeUrl = {
  Listener: `${TYPE_PREFIX}envoy.config.listener.v3.Listener`,
  RouteConfiguration: `${TYPE_PREFIX}envoy.config.route.v3.RouteConfiguration`,
  Cluster: `${TYPE_PREFIX}envoy.config.cluster.v3.Cluster`,
  ClusterLoadAssignment: `${TYPE_PREFIX}envoy.config.endpoint.v3.ClusterLoadAssignment`,
  Secret: `${TYPE_PREFIX}envoy.extensions.transport_sockets.tls.v3.Secret`,
} as const;
export type XdsTypeUrl = (typeof TypeUrl)[keyof typeof TypeUrl];

export function typeNameOfUrl(typeUrl: string): string {
  const slash = typeUrl.lastIndexOf("/");
  return slash >= 0 ? typeUrl.slice(slash + 1) : typeUrl;
}
