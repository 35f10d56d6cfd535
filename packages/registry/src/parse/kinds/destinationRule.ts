// DestinationRule: subsets and traffic policy (load balancing, connection pools, outlier detection, client TLS).
import type { ClientTLSSettings, DestinationRuleSpec, TrafficPolicy } from "../../api.js";
import { bool, duration, int, INT32_MAX, list, obj, req, str, UINT32_MAX, type ObjectSchema, type RuleContext } from "../schema.js";
import { extraKey } from "../locate.js";
import * as syn from "../syntax.js";
import { checkExportTo, exportTo, labels, portNumber, workloadSelector } from "./common.js";

const count = () => int(0, INT32_MAX);

const loadBalancer = () =>
  obj(
    {
      simple: str({ enum: ["UNSPECIFIED", "LEAST_CONN", "RANDOM", "PASSTHROUGH", "ROUND_ROBIN", "LEAST_REQUEST"] }),
      consistentHash: obj(
        {
          httpHeaderName: str({ nonEmpty: true }),
          httpCookie: obj({ name: req(str({ nonEmpty: true })), path: str(), ttl: duration(0) }),
          useSourceIp: bool(),
          httpQueryParameterName: str({ nonEmpty: true }),
          ringHash: obj({ minimumRingSize: int(0, UINT32_MAX) }),
          maglev: obj({ tableSize: int(0, UINT32_MAX) }),
          minimumRingSize: int(0, UINT32_MAX, { deprecated: "consistentHash.minimumRingSize is deprecated; use ringHash.minimumRingSize" }),
        },
        {
          rule: (c, r) => {
            const keys = ["httpHeaderName", "httpCookie", "useSourceIp", "httpQueryParameterName"].filter((k) => c[k] !== undefined);
            if (keys.length !== 1) {
              r.error(c, extraKey(c, keys), `consistentHash: exactly one hash key (httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName) must be set${keys.length ? ` (found ${keys.join(", ")})` : ""}`, { key: true });
            }
            const algos = ["ringHash", "maglev", "minimumRingSize"].filter((k) => c[k] !== undefined);
            if (algos.length > 1) r.error(c, extraKey(c, algos), `consistentHash: only one of ${algos.join(", ")} may be set`, { key: true });
          },
        },
      ),
      warmupDurationSecs: duration(0),
    },
    {
      unsupported: ["localityLbSetting"],
      rule: (lb, r) => {
        if (lb.simple !== undefined && lb.consistentHash !== undefined) r.error(lb, "consistentHash", "loadBalancer: only one of 'simple' or 'consistentHash' may be set", { key: true });
      },
    },
  );

const connectionPool = () =>
  obj({
    tcp: obj({
      maxConnections: count(),
      connectTimeout: duration(1),
      tcpKeepalive: obj({ probes: int(0, UINT32_MAX), time: duration(1), interval: duration(1) }),
      maxConnectionDuration: duration(1),
      idleTimeout: duration(0),
    }),
    http: obj({
      http1MaxPendingRequests: count(),
      http2MaxRequests: count(),
      maxRequestsPerConnection: count(),
      maxRetries: count(),
      idleTimeout: duration(1),
      h2UpgradePolicy: str({ enum: ["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"] }),
      useClientProtocol: bool(),
      maxConcurrentStreams: count(),
    }),
  });

const outlierDetection = () =>
  obj({
    consecutiveErrors: count(),
    consecutive5xxErrors: int(0, UINT32_MAX),
    consecutiveGatewayErrors: int(0, UINT32_MAX),
    consecutiveLocalOriginFailures: int(0, UINT32_MAX),
    splitExternalLocalOriginErrors: bool(),
    interval: duration(1),
    baseEjectionTime: duration(1),
    maxEjectionPercent: int(0, 100),
    minHealthPercent: int(0, 100),
  }, {
    rule: (o, r) => {
      if (o.consecutiveErrors !== undefined) r.warning(o, "consecutiveErrors", "outlierDetection.consecutiveErrors is deprecated; use consecutive5xxErrors", { key: true });
      if (o.consecutiveLocalOriginFailures !== undefined && o.splitExternalLocalOriginErrors !== true) {
        r.error(o, "consecutiveLocalOriginFailures", "outlierDetection.consecutiveLocalOriginFailures needs splitExternalLocalOriginErrors: true", { key: true });
      }
    },
  });

const clientTls = () =>
  obj(
    {
      mode: req(str({ enum: ["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"] })),
      clientCertificate: str({ nonEmpty: true }),
      privateKey: str({ nonEmpty: true }),
      caCertificates: str({ nonEmpty: true }),
      credentialName: str({ nonEmpty: true }),
      subjectAltNames: list(str({ nonEmpty: true })),
      sni: str({ nonEmpty: true }),
      insecureSkipVerify: bool(),
    },
    { rule: (t, r) => checkClientTls(t as ClientTLSSettings, r) },
  );

function checkClientTls(t: ClientTLSSettings, r: RuleContext): void {
  if (t.mode === "MUTUAL" && t.credentialName === undefined) {
    if (t.clientCertificate === undefined || t.privateKey === undefined) {
      r.error(t, "mode", "tls mode MUTUAL needs clientCertificate and privateKey (or credentialName)");
    }
  }
  if (t.mode === "ISTIO_MUTUAL") {
    const own = ["clientCertificate", "privateKey", "caCertificates", "credentialName"].filter((k) => (t as unknown as Record<string, unknown>)[k] !== undefined);
    if (own.length) r.error(t, own[0], `tls mode ISTIO_MUTUAL uses the mesh certificates; remove ${own.join(", ")}`, { key: true });
  }
  if (t.credentialName !== undefined && (t.clientCertificate !== undefined || t.privateKey !== undefined)) {
    r.error(t, "credentialName", "tls: set either credentialName or clientCertificate/privateKey, not both", { key: true });
  }
}

const policyFields = () => ({
  loadBalancer: loadBalancer(),
  connectionPool: connectionPool(),
  outlierDetection: outlierDetection(),
  tls: clientTls(),
});

export const trafficPolicy = (): ObjectSchema =>
  obj(
    {
      ...policyFields(),
      portLevelSettings: list(obj({ port: req(obj({ number: req(portNumber()) })), ...policyFields() })),
    },
    {
      unsupported: ["tunnel", "proxyProtocol"],
      rule: (p, r) => {
        const seen = new Map<number, number>();
        ((p as TrafficPolicy).portLevelSettings ?? []).forEach((s, i) => {
          const first = seen.get(s.port.number);
          if (first !== undefined) r.error(s.port, "number", `portLevelSettings[${i}]: port ${s.port.number} already has settings in portLevelSettings[${first}]`);
          else seen.set(s.port.number, i);
        });
      },
    },
  );

export const destinationRuleSpec = () =>
  obj(
    {
      host: req(str({ check: (s) => syn.wildcardHost(s) })),
      trafficPolicy: trafficPolicy(),
      subsets: list(obj({ name: req(str({ check: syn.dns1123Label })), labels: labels(), trafficPolicy: trafficPolicy() })),
      exportTo: exportTo(),
      workloadSelector: workloadSelector(),
    },
    {
      rule: (spec, r) => {
        const dr = spec as DestinationRuleSpec;
        const seen = new Map<string, number>();
        (dr.subsets ?? []).forEach((s, i) => {
          const first = seen.get(s.name);
          if (first !== undefined) r.error(s, "name", `spec.subsets[${i}].name: subset '${s.name}' is already defined by spec.subsets[${first}]`);
          else seen.set(s.name, i);
        });
        checkExportTo(dr, r);
      },
    },
  );

