// Parser: VirtualService, DestinationRule, Gateway, Sidecar, WorkloadEntry and WorkloadGroup rules, each
// asserted at the line and column it is reported.
import { expect } from "chai";
import type { ConfigObject } from "@vmpilot/registry";
import { clean, expectOne, head } from "./fixtures/parse-helpers.js";

const VS = (spec: string) => head("VirtualService", "reviews") + spec;
const DR = (spec: string) => head("DestinationRule", "reviews") + spec;

/** A VirtualService with one HTTP route whose body is `route` (indented as an http[] item's fields). */
const httpRoute = (route: string) => VS(`  hosts:\n  - reviews.shop.internal\n  http:\n${route}`);
const ROUTE_V1 = `    route:\n    - destination:\n        host: reviews.shop.internal\n        subset: v1\n`;

describe("parseDocuments: VirtualService", () => {
  it("accepts the traffic-management shapes: split, header match, timeouts, retries, faults, TLS and TCP routes", () => {
    const text = VS(`  hosts:
  - reviews
  - reviews.shop.internal
  gateways:
  - mesh
  - edge/public-gateway
  http:
  - name: jason
    match:
    - headers:
        end-user:
          exact: jason
      sourceLabels:
        app: productpage
      uri:
        prefix: /api/v1
    - uri:
        regex: "^/reviews/[0-9]+$"
      ignoreUriCase: true
    fault:
      delay:
        percentage:
          value: 10
        fixedDelay: 5s
      abort:
        percentage:
          value: 0.5
        httpStatus: 400
    route:
    - destination:
        host: reviews
        subset: v2
  - timeout: 10s
    retries:
      attempts: 3
      perTryTimeout: 2s
      retryOn: 5xx,connect-failure,503,unavailable
    mirror:
      host: reviews-shadow.shop.internal
    mirrorPercentage:
      value: 5
    route:
    - destination:
        host: reviews
        subset: v1
        port:
          number: 9080
      weight: 75
    - destination:
        host: reviews
        subset: v3
      weight: 25
  tls:
  - match:
    - sniHosts:
      - reviews.shop.internal
      port: 443
    route:
    - destination:
        host: reviews-tls.shop.internal
  tcp:
  - match:
    - port: 27017
      destinationSubnets: [192.0.2.0/24]
    route:
    - destination:
        host: mongo.shop.internal
`);
    const vs = clean(text).objects[0] as ConfigObject<"VirtualService">;
    expect(vs.spec.http![1]!.route!.map((r) => r.weight)).to.deep.equal([75, 25]);
  });

  it("hosts are required and '*' only when bound to gateways", () => {
    expectOne(VS(`  http:\n  - route:\n    - destination:\n        host: a.example.com\n`), "error", /spec: missing required field 'hosts'/, "http:");
    expectOne(VS(`  hosts: ["*"]\n  http:\n  - route:\n    - destination:\n        host: a.example.com\n`), "error", /'\*' is only allowed in a VirtualService bound to gateways/, '"*"');
    clean(VS(`  hosts: ["*"]\n  gateways: [edge-gateway]\n  http:\n  - route:\n    - destination:\n        host: a.example.com\n`));
    expectOne(VS(`  hosts: [a.example.com]\n`), "error", /needs at least one of 'http', 'tls' or 'tcp'/, "hosts");
    expectOne(VS(`  hosts: [a.example.com]\n  gateways: [Edge/Gw]\n  http:\n  - route:\n    - destination:\n        host: a.example.com\n`), "error", /invalid gateway reference/, "Edge/Gw");
  });

  it("match: exactly one of exact, prefix, regex; regexes must be RE2-compatible", () => {
    const m = (match: string) => httpRoute(`  - match:\n    - ${match}\n${ROUTE_V1}`);
    expectOne(m(`uri: {exact: /a, prefix: /b}`), "error", /exactly one of exact, prefix or regex may be set \(found exact, prefix\)/, "prefix");
    expectOne(m(`uri: {}`), "error", /one of exact, prefix or regex is required/, "{}");
    expectOne(m(`uri: {regex: "^/(?!admin)"}`), "error", /lookaround, which RE2/, '"^/(?!admin)"');
    expectOne(m(`uri: {regex: "(a)\\\\1"}`), "error", /backreference/, '"(a)');
    expectOne(m(`uri: {regex: "[a-"}`), "error", /invalid regex '\[a-'/, '"[a-"');
    expectOne(m(`method: {regex: "a++"}`), "error", /possessive quantifier/, '"a++"');
    expectOne(m(`authority: {prefix: 3}`), "error", /authority\.prefix: expected a string, got integer/, "3}");
    expectOne(m(`port: 0`), "error", /match\[0\]\.port: 0 is out of range/, "0\n");
    expectOne(m(`sourceLabels: {app: "has space"}`), "error", /invalid label value 'has space'/, '"has space"');
    clean(m(`uri: {regex: "(?i)^/Reviews/(?P<id>[0-9]+)$"}`));
    clean(m(`headers: {x-debug: {}}`));
  });

  it("route destinations: host required, subset a DNS label, port number in range", () => {
    expectOne(httpRoute(`  - route:\n    - destination:\n        subset: v1\n`), "error", /destination: missing required field 'host'/, "subset");
    expectOne(httpRoute(`  - route:\n    - destination:\n        host: a.example.com\n        subset: V_1\n`), "error", /'V_1' is not a DNS-1123 label/, "V_1");
    expectOne(httpRoute(`  - route:\n    - destination:\n        host: a.example.com\n        port:\n          number: 65536\n`), "error", /65536 is out of range 1\.\.65535/, "65536");
    expectOne(httpRoute(`  - route:\n    - destination:\n        host: a.example.com\n        port: 80\n`), "error", /destination\.port: expected a mapping/, "80");
  });

  it("weights: 0..100, adding up to 100 when there is more than one destination or any weight", () => {
    const two = (a: number, b: number) => httpRoute(`  - route:\n    - destination: {host: a.example.com, subset: v1}\n      weight: ${a}\n    - destination: {host: a.example.com, subset: v2}\n      weight: ${b}\n`);
    expectOne(two(80, 30), "error", /destination weights must add up to 100 \(they add up to 110\)/, "route");
    expectOne(two(101, 0), "error", /101 is out of range 0\.\.100/, "101");
    expectOne(httpRoute(`  - route:\n    - destination: {host: a.example.com}\n      weight: 50\n`), "error", /add up to 100 \(they add up to 50\)/, "route");
    expectOne(httpRoute(`  - route:\n    - destination: {host: a.example.com, subset: v1}\n    - destination: {host: a.example.com, subset: v2}\n`), "error", /add up to 100 \(they add up to 0\)/, "route");
    clean(two(100, 0));
    clean(two(80, 20));
  });

  it("timeouts, retries and retryOn policies", () => {
    expectOne(httpRoute(`  - timeout: 3\n${ROUTE_V1}`), "error", /timeout: expected a duration.*write a unit, e\.g\. "3s"/, "3\n");
    expectOne(httpRoute(`  - timeout: 3 seconds\n${ROUTE_V1}`), "error", /invalid duration '3 seconds'/, "3 seconds");
    expectOne(httpRoute(`  - timeout: 1.0005s\n${ROUTE_V1}`), "error", /finer than millisecond precision/, "1.0005s");
    expectOne(httpRoute(`  - retries:\n      attempts: -1\n${ROUTE_V1}`), "error", /attempts: -1 is out of range/, "-1");
    expectOne(httpRoute(`  - retries:\n      perTryTimeout: 2s\n${ROUTE_V1}`), "error", /retries: missing required field 'attempts'/, "perTryTimeout");
    expectOne(httpRoute(`  - retries:\n      attempts: 2\n      retryOn: 5xx,conect-failure\n${ROUTE_V1}`), "error", /unknown retry policy 'conect-failure' \(did you mean 'connect-failure'\?\)/, "5xx,conect-failure");
    expectOne(httpRoute(`  - retries:\n      attempts: 2\n      perTryTimeout: 0s\n${ROUTE_V1}`), "error", /perTryTimeout: must be at least 1ms/, "0s");
  });

  it("faults: delay needs fixedDelay, percentages 0..100, abort exactly one status", () => {
    expectOne(httpRoute(`  - fault:\n      delay:\n        percentage: {value: 10}\n${ROUTE_V1}`), "error", /delay: missing required field 'fixedDelay'/, "percentage");
    expectOne(httpRoute(`  - fault:\n      delay:\n        fixedDelay: 5s\n        percentage: {value: 150}\n${ROUTE_V1}`), "error", /value: 150 is out of range 0\.\.100/, "150");
    expectOne(httpRoute(`  - fault:\n      abort:\n        httpStatus: 600\n${ROUTE_V1}`), "error", /httpStatus: 600 is out of range 200\.\.599/, "600");
    expectOne(httpRoute(`  - fault:\n      abort:\n        httpStatus: 503\n        grpcStatus: UNAVAILABLE\n${ROUTE_V1}`), "error", /exactly one of httpStatus or grpcStatus/, "grpcStatus");
    expectOne(httpRoute(`  - fault:\n      abort:\n        grpcStatus: UNAVAILBLE\n${ROUTE_V1}`), "error", /did you mean 'UNAVAILABLE'/, "UNAVAILBLE");
    expectOne(httpRoute(`  - fault: {}\n${ROUTE_V1}`), "error", /fault: needs a delay or an abort/, "{}");
    expectOne(httpRoute(`  - fault:\n      delay:\n        fixedDelay: 5s\n        percent: 10\n${ROUTE_V1}`), "warning", /percent is deprecated; use percentage\.value/, "10\n");
  });

  it("actions: route, redirect and directResponse are exclusive; rewrite not with redirect; mirrorPercentage needs mirror", () => {
    expectOne(httpRoute(`  - redirect:\n      uri: /v2\n${ROUTE_V1}`), "error", /only one of 'route', 'redirect' or 'directResponse' may be set \(found route, redirect\)/, "route:");
    expectOne(httpRoute(`  - name: nothing\n`), "error", /needs one of 'route', 'redirect' or 'directResponse'/, "name: nothing");
    expectOne(httpRoute(`  - redirect:\n      uri: /v2\n    rewrite:\n      uri: /v3\n`), "error", /'rewrite' cannot be combined with 'redirect'/, "rewrite");
    expectOne(httpRoute(`  - redirect:\n      scheme: ftp\n`), "error", /invalid value 'ftp'.*allowed: http, https/, "ftp");
    expectOne(httpRoute(`  - directResponse:\n      status: 700\n`), "error", /status: 700 is out of range 200\.\.599/, "700");
    expectOne(httpRoute(`  - mirrorPercentage: {value: 5}\n${ROUTE_V1}`), "error", /'mirrorPercentage' needs 'mirror'/, "mirrorPercentage");
    expectOne(httpRoute(`  - corsPolicy: {}\n${ROUTE_V1}`), "error", /field 'corsPolicy' is not supported by vmpilot/, "corsPolicy");
    clean(httpRoute(`  - directResponse:\n      status: 503\n      body:\n        string: "down for maintenance"\n`));
    clean(httpRoute(`  - rewrite:\n      uriRegexRewrite:\n        match: ^/old/(.*)$\n        rewrite: /new/\\1\n${ROUTE_V1}`));
  });

  it("tls routes need sniHosts; tcp routes need a route", () => {
    expectOne(VS(`  hosts: [a.example.com]\n  tls:\n  - match:\n    - port: 443\n    route:\n    - destination: {host: a.example.com}\n`), "error", /match\[0\]: missing required field 'sniHosts'/, "port: 443");
    expectOne(VS(`  hosts: [a.example.com]\n  tls:\n  - match:\n    - sniHosts: []\n    route:\n    - destination: {host: a.example.com}\n`), "error", /sniHosts: must not be empty/, "[]");
    expectOne(VS(`  hosts: [a.example.com]\n  tcp:\n  - match:\n    - port: 5432\n`), "error", /tcp\[0\]: missing required field 'route'/, "match");
  });
});

describe("parseDocuments: DestinationRule", () => {
  it("accepts subsets with a traffic policy, consistent hashing, port-level settings and mutual TLS", () => {
    clean(DR(`  host: reviews.shop.internal
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpCookie: {name: session, ttl: 0s}
        ringHash: {minimumRingSize: 1024}
    connectionPool:
      tcp: {maxConnections: 100, connectTimeout: 30ms, tcpKeepalive: {time: 7200s, interval: 75s}}
      http: {http2MaxRequests: 1000, maxRequestsPerConnection: 10, h2UpgradePolicy: UPGRADE}
    outlierDetection:
      consecutive5xxErrors: 7
      interval: 5m
      baseEjectionTime: 15m
      maxEjectionPercent: 100
    portLevelSettings:
    - port: {number: 80}
      loadBalancer: {simple: LEAST_REQUEST}
    - port: {number: 9080}
      tls:
        mode: MUTUAL
        clientCertificate: /etc/certs/client.pem
        privateKey: /etc/certs/client-key.pem
        caCertificates: /etc/certs/ca.pem
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      loadBalancer: {simple: ROUND_ROBIN}
`));
  });

  it("host required; subset names unique", () => {
    expectOne(DR(`  subsets:\n  - name: v1\n`), "error", /spec: missing required field 'host'/, "subsets");
    expectOne(DR(`  host: a.example.com\n  subsets:\n  - name: v1\n  - name: v1\n`), "error", /subset 'v1' is already defined by spec\.subsets\[0\]/, "v1", 2);
  });

  it("loadBalancer: simple enum; simple and consistentHash exclusive; consistentHash exactly one key", () => {
    const lb = (body: string) => DR(`  host: a.example.com\n  trafficPolicy:\n    loadBalancer:\n${body}`);
    expectOne(lb(`      simple: ROUNDROBIN\n`), "error", /invalid value 'ROUNDROBIN' \(did you mean 'ROUND_ROBIN'\?\)/, "ROUNDROBIN");
    expectOne(lb(`      simple: RANDOM\n      consistentHash: {useSourceIp: true}\n`), "error", /only one of 'simple' or 'consistentHash'/, "consistentHash");
    expectOne(lb(`      consistentHash: {useSourceIp: true, httpHeaderName: x-user}\n`), "error", /exactly one hash key.*\(found httpHeaderName, useSourceIp\)/, "httpHeaderName", 0);
    expectOne(lb(`      consistentHash: {}\n`), "error", /exactly one hash key/, "{}");
  });

  it("connection pool and outlier detection: durations and percents", () => {
    const tp = (body: string) => DR(`  host: a.example.com\n  trafficPolicy:\n${body}`);
    expectOne(tp(`    connectionPool:\n      tcp:\n        connectTimeout: 0s\n`), "error", /connectTimeout: must be at least 1ms/, "0s");
    expectOne(tp(`    outlierDetection:\n      maxEjectionPercent: 101\n`), "error", /maxEjectionPercent: 101 is out of range 0\.\.100/, "101");
    expectOne(tp(`    outlierDetection:\n      interval: 10\n`), "error", /interval: expected a duration/, "10");
    expectOne(tp(`    connectionPool:\n      http:\n        h2UpgradePolicy: ALWAYS\n`), "error", /allowed: DEFAULT, DO_NOT_UPGRADE, UPGRADE/, "ALWAYS");
    expectOne(tp(`    outlierDetection:\n      consecutiveErrors: 5\n`), "warning", /consecutiveErrors is deprecated/, "consecutiveErrors");
  });

  it("tls: mode enum; MUTUAL needs a certificate and key or credentialName; ISTIO_MUTUAL brings its own", () => {
    const tls = (body: string) => DR(`  host: a.example.com\n  trafficPolicy:\n    tls:\n${body}`);
    expectOne(tls(`      mode: MUTUAL\n      clientCertificate: /etc/c.pem\n`), "error", /MUTUAL needs clientCertificate and privateKey \(or credentialName\)/, "MUTUAL");
    expectOne(tls(`      mode: ISTIO_MUTUAL\n      privateKey: /etc/k.pem\n`), "error", /ISTIO_MUTUAL uses the mesh certificates; remove privateKey/, "privateKey");
    expectOne(tls(`      mode: STRICT\n`), "error", /allowed: DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL/, "STRICT");
    expectOne(tls(`      sni: a.example.com\n`), "error", /tls: missing required field 'mode'/, "sni");
    clean(tls(`      mode: MUTUAL\n      credentialName: client-cert\n`));
  });

  it("exportTo is checked as on ServiceEntries", () => {
    expectOne(DR(`  host: a.example.com\n  exportTo: ["*", "."]\n`), "error", /'\*' already exports to every namespace/, '"*"');
  });

  it("portLevelSettings: port.number required and unique", () => {
    const pls = (body: string) => DR(`  host: a.example.com\n  trafficPolicy:\n    portLevelSettings:\n${body}`);
    expectOne(pls(`    - port: {number: 80}\n    - port: {number: 80}\n`), "error", /port 80 already has settings in portLevelSettings\[0\]/, "80", 1);
    expectOne(pls(`    - loadBalancer: {simple: RANDOM}\n`), "error", /missing required field 'port'/, "loadBalancer");
  });
});

describe("parseDocuments: Gateway and Sidecar", () => {
  const GW = (spec: string) => head("Gateway", "edge", "  namespace: edge\n") + spec;
  const SC = (spec: string) => head("Sidecar", "default", "  namespace: shop\n") + spec;

  it("accepts an egress gateway and a TLS ingress server with namespaced hosts", () => {
    clean(GW(`  selector:
    app: edge-gateway
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
    tls: {httpsRedirect: true}
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [shop/www.shop.example, "./*.internal.example"]
    tls:
      mode: SIMPLE
      credentialName: www-cert
`));
  });

  it("servers need port and hosts; TLS servers need tls settings; modes are an enum", () => {
    expectOne(GW(`  servers:\n  - hosts: ["*"]\n`), "error", /servers\[0\]: missing required field 'port'/, "hosts");
    expectOne(GW(`  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: ["*"]\n`), "error", /server on HTTPS port 443 needs 'tls' settings/, "port");
    expectOne(GW(`  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: ["*"]\n    tls: {mode: STRICT}\n`), "error", /allowed: PASSTHROUGH, SIMPLE, MUTUAL/, "STRICT");
    expectOne(GW(`  servers:\n  - port: {number: 443, name: https, protocol: TLS}\n    hosts: ["*"]\n    tls: {mode: SIMPLE}\n`), "error", /SIMPLE needs serverCertificate and privateKey/, "SIMPLE");
    expectOne(GW(`  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: ["Bad_NS/*"]\n`), "error", /namespace part 'Bad_NS'/, '"Bad_NS/*"');
  });

  it("server names are unique; httpsRedirect only on HTTP servers", () => {
    expectOne(GW(`  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: ["*"]\n    name: web\n  - port: {number: 81, name: http2, protocol: HTTP}\n    hosts: ["*"]\n    name: web\n`), "error", /'web' is already used by spec\.servers\[0\]/, "web", 1);
    expectOne(GW(`  servers:\n  - port: {number: 443, name: tls, protocol: TLS}\n    hosts: ["*"]\n    tls: {mode: PASSTHROUGH, httpsRedirect: true}\n`), "error", /httpsRedirect only applies to HTTP servers/, "httpsRedirect");
  });

  it("sidecar egress hosts are 'namespace/host'; outboundTrafficPolicy mode is an enum", () => {
    clean(SC(`  egress:\n  - hosts: ["./*", "egress/*", "~/*", "*/*.example.com"]\n  outboundTrafficPolicy:\n    mode: REGISTRY_ONLY\n`));
    expectOne(SC(`  egress:\n  - hosts: ["api.example.com"]\n`), "error", /must be in 'namespace\/host' form/, '"api.example.com"');
    expectOne(SC(`  outboundTrafficPolicy:\n    mode: DENY\n`), "error", /allowed: REGISTRY_ONLY, ALLOW_ANY/, "DENY");
    expectOne(SC(`  egress:\n  - hosts: ["./*"]\n  - hosts: ["*/*"]\n`), "error", /only one egress listener may omit 'port'/, 'hosts: ["*/*"]');
    expectOne(SC(`  ingress:\n  - port: {number: 8080, name: http, protocol: HTTP}\n    defaultEndpoint: 10.0.0.1:8080\n`), "error", /must be 127\.0\.0\.1:PORT/, "10.0.0.1:8080");
    expectOne(SC(`  ingress:\n  - port: {number: 8080, name: a, protocol: HTTP}\n  - port: {number: 8080, name: b, protocol: HTTP}\n`), "error", /port 8080 is already used by spec\.ingress\[0\]/, "8080", 1);
  });
});

describe("parseDocuments: WorkloadEntry and WorkloadGroup", () => {
  const WE = (spec: string) => head("WorkloadEntry", "vm-1") + spec;
  const WG = (spec: string) => head("WorkloadGroup", "reviews") + spec;

  it("WorkloadEntry: address (IP, host name or unix) required; ports, labels and service account valid", () => {
    clean(WE(`  address: vm-1.dc1.example.internal\n  ports: {http: 8080}\n  serviceAccount: reviews\n  network: dc1\n`));
    clean(WE(`  address: unix:///var/run/app.sock\n`));
    expectOne(WE(`  serviceAccount: reviews\n`), "error", /spec: missing required field 'address'/, "serviceAccount");
    expectOne(WE(`  address: "10.0.0.1:8080"\n`), "error", /not an IP address, host name or 'unix:\/\/\/path'/, '"10.0.0.1:8080"');
    expectOne(WE(`  address: 192.0.2.9\n  ports: {http: 99999}\n`), "error", /ports\.http: 99999 is out of range/, "99999");
    expectOne(WE(`  address: 192.0.2.9\n  ports: {HTTP: 80}\n`), "error", /'HTTP' is not a DNS-1123 label/, "HTTP");
    expectOne(WE(`  address: 192.0.2.9\n  serviceAccount: "reviews sa"\n`), "error", /not a DNS-1123 subdomain/, '"reviews sa"');
    expectOne(WE(`  address: 192.0.2.9\n  labels: {version: v1.0-}\n`), "error", /invalid label value 'v1\.0-'/, "v1.0-");
  });

  it("WorkloadEntry: a unix socket workload has no ports; weight 0 is a warning", () => {
    expectOne(WE(`  address: unix:///var/run/app.sock\n  ports: {http: 80}\n`), "error", /unix socket has no ports/, "{http: 80}");
    expectOne(WE(`  address: 192.0.2.9\n  weight: 0\n`), "warning", /0 means the default weight/, "0\n");
  });

  it("WorkloadGroup: template without address; probe with exactly one of httpGet, tcpSocket, exec", () => {
    clean(WG(`  metadata:\n    labels: {app: reviews}\n  template:\n    serviceAccount: reviews\n    ports: {http: 9080}\n  probe:\n    periodSeconds: 5\n    httpGet: {path: /ready, port: 9080}\n`));
    expectOne(WG(`  template:\n    address: 192.0.2.1\n`), "error", /template has no address/, "address");
    expectOne(WG(`  template: {}\n  probe:\n    tcpSocket: {port: 9080}\n    exec: {command: [/bin/true]}\n`), "error", /exactly one of httpGet, tcpSocket or exec must be set \(found tcpSocket, exec\)/, "exec");
    expectOne(WG(`  template: {}\n  probe:\n    periodSeconds: 5\n`), "error", /exactly one of httpGet, tcpSocket or exec must be set$/, "periodSeconds");
    expectOne(WG(`  template: {}\n  probe:\n    exec: {command: []}\n`), "error", /command: must not be empty/, "[]");
    expectOne(WG(`  probe:\n    exec: {command: [/bin/true]}\n`), "error", /spec: missing required field 'template'/, "probe");
  });
});
