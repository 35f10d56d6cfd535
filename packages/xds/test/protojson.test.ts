import { expect } from "chai";
import { canonicalJson, decodeToJson, encodeJson, ProtoJsonError } from "../src/protojson.js";
import { envoyRoot, TypeUrl } from "../src/protos.js";

const CLUSTER = "envoy.config.cluster.v3.Cluster";

const cluster = {
  name: "outbound|8080||reviews.shop.svc",
  type: "EDS",
  eds_cluster_config: { eds_config: { ads: {}, resource_api_version: "V3" }, service_name: "outbound|8080||reviews.shop.svc" },
  connect_timeout: "10s",
  lb_policy: "RING_HASH",
  circuit_breakers: { thresholds: [{ max_connections: 100, max_requests: 1000 }] },
  per_connection_buffer_limit_bytes: 32768,
  outlier_detection: { consecutive_5xx: 5, interval: "0.500s", base_ejection_time: "30s", max_ejection_percent: 50 },
  metadata: { filter_metadata: { istio: { services: [{ host: "reviews", namespace: "shop" }] } } },
  transport_socket: {
    name: "envoy.transport_sockets.tls",
    typed_config: {
      "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
      common_tls_context: {
        tls_certificate_sds_secret_configs: [{ name: "default", sds_config: { ads: {}, resource_api_version: "V3" } }],
        combined_validation_context: {
          default_validation_context: { match_typed_subject_alt_names: [{ san_type: "URI", matcher: { exact: "spiffe://cluster.local/ns/shop/sa/reviews" } }] },
          validation_context_sds_secret_config: { name: "ROOTCA", sds_config: { ads: {}, resource_api_version: "V3" } },
        },
        alpn_protocols: ["istio-peer-exchange", "istio"],
      },
      sni: "outbound_.8080_._.reviews.shop.svc",
    },
  },
};

describe("protojson: strict proto3 JSON over the real Envoy protos", () => {
  it("loads the Envoy v3 API from @grpc/grpc-js-xds's bundled protos", () => {
    expect(envoyRoot().lookupType("envoy.config.listener.v3.Listener").fields.filter_chains).to.exist;
    for (const url of Object.values(TypeUrl)) expect(() => envoyRoot().lookupType(url.split("/")[1]!)).not.to.throw();
  });

  it("round-trips a cluster with Any, durations, wrappers and Struct losslessly", () => {
    const bytes = encodeJson(CLUSTER, cluster);
    const back = decodeToJson(CLUSTER, bytes);
    expect(back).to.deep.equal(cluster);
    expect(Buffer.from(encodeJson(CLUSTER, back)).equals(Buffer.from(bytes))).to.equal(true);
  });

  it("canonicalises durations and camelCase names", () => {
    expect(canonicalJson(CLUSTER, { name: "a", connectTimeout: "1.5s" })).to.deep.equal({ name: "a", connect_timeout: "1.500s" });
  });

  const bad: [string, unknown, RegExp][] = [
    ["unknown field", { name: "a", lb_polcy: "ROUND_ROBIN" }, /^lb_polcy: unknown field/],
    ["bad enum", { name: "a", lb_policy: "ROUND_ROBBIN" }, /^lb_policy: unknown LbPolicy value/],
    ["wrapper given as object", { name: "a", per_connection_buffer_limit_bytes: { value: 3 } }, /per_connection_buffer_limit_bytes: expected an integer/],
    ["uint32 out of range", { name: "a", circuit_breakers: { thresholds: [{ max_connections: -1 }] } }, /thresholds\[0\]\.max_connections: -1 is out of range/],
    ["two members of a oneof", { name: "a", type: "EDS", cluster_type: { name: "x" } }, /both set but belong to oneof/],
    ["duration as number", { name: "a", connect_timeout: 5 }, /connect_timeout: expected a duration string/],
    ["unknown @type", { name: "a", transport_socket: { name: "t", typed_config: { "@type": "type.googleapis.com/no.Such" } } }, /unknown type/],
    ["unknown field inside Any", { name: "a", transport_socket: { name: "t", typed_config: { "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext", snii: "x" } } }, /typed_config\.snii: unknown field/],
  ];
  for (const [what, json, re] of bad) {
    it(`rejects ${what} with its path`, () => {
      expect(() => encodeJson(CLUSTER, json)).to.throw(ProtoJsonError, re);
    });
  }
});
