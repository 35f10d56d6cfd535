// Parser: documents, kinds, structure, positions, and the ServiceEntry rules (Istio's reference shapes, written
// with our own names and documentation addresses).
import { expect } from "chai";
import { parseDocuments, type ConfigObject } from "@vmpilot/registry";
import { clean, errors, expectOne, head, loc, parse, warnings } from "./fixtures/parse-helpers.js";

const SE = (spec: string, meta = "") => head("ServiceEntry", "t", meta) + spec;

const HTTPS_API = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: partner-apis
spec:
  hosts:
  - api.partner-one.example
  - api.partner-two.example
  location: MESH_EXTERNAL
  ports:
  - number: 443
    name: https
    protocol: TLS
  resolution: DNS
`;

describe("parseDocuments: documents and object envelope", () => {
  it("accepts v1, v1beta1 and v1alpha3 and records the document start as origin", () => {
    for (const v of ["v1", "v1beta1", "v1alpha3"]) {
      const text = `# leading comment\n${HTTPS_API.replace("networking.istio.io/v1", `networking.istio.io/${v}`)}`;
      const r = clean(text);
      expect(r.objects).to.have.length(1);
      expect(r.objects[0]!.apiVersion).to.equal(`networking.istio.io/${v}`);
      expect(r.objects[0]!.origin).to.deep.equal({ type: "file", file: "test.yaml", line: 2, column: 1 });
    }
  });

  it("applies Istio's defaults: namespace default, location MESH_EXTERNAL, resolution NONE; leaves exportTo and targetPort alone", () => {
    const r = clean(SE(`  hosts: [web.example.com]\n  ports:\n  - {number: 80, name: http, protocol: HTTP}\n`));
    const se = r.objects[0] as ConfigObject<"ServiceEntry">;
    expect(se.metadata.namespace).to.equal("default");
    expect(se.spec.location).to.equal("MESH_EXTERNAL");
    expect(se.spec.resolution).to.equal("NONE");
    expect(se.spec).to.not.have.property("exportTo");
    expect(se.spec.ports![0]).to.deep.equal({ number: 80, name: "http", protocol: "HTTP" });
  });

  it("rejects another apiVersion of a known kind, at the apiVersion value", () => {
    const text = HTTPS_API.replace("networking.istio.io/v1", "networking.istio.io/v2");
    expectOne(text, "error", /apiVersion 'networking.istio.io\/v2' is not supported for ServiceEntry.*v1alpha3/, "networking.istio.io/v2");
  });

  it("skips unknown kinds with a warning at the kind value, keeping the other documents", () => {
    const text = `apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata: {}\n---\n${HTTPS_API}`;
    const r = parse(text);
    expect(errors(r)).to.deep.equal([]);
    expect(warnings(r)).to.have.length(1);
    expect(warnings(r)[0]!.message).to.match(/unknown kind 'ConfigMap'.*skipped/);
    expect({ line: warnings(r)[0]!.line, column: warnings(r)[0]!.column }).to.deep.equal(loc(text, "ConfigMap"));
    expect(r.objects.map((o) => o.metadata.name)).to.deep.equal(["partner-apis"]);
  });

  it("treats a kind one typo away from a known kind as an error, not a skip", () => {
    const text = HTTPS_API.replace("kind: ServiceEntry", "kind: ServiceEntri");
    expectOne(text, "error", /unknown kind 'ServiceEntri'; did you mean 'ServiceEntry'\?/, "ServiceEntri");
  });

  it("reports unknown fields at the key and suggests the known one", () => {
    const text = HTTPS_API + `  subjectAltName:\n  - spiffe://cluster.local/ns/a/sa/b\n`;
    const p = expectOne(text, "error", /unknown field 'subjectAltName' in spec; did you mean 'subjectAltNames'\?/, "subjectAltName");
    expect(p.field).to.equal("spec.subjectAltName");
    expect(p.kind).to.equal("ServiceEntry");
    expect(p.name).to.equal("partner-apis");
  });

  it("reports unknown fields deep in the tree, without a suggestion when nothing is close", () => {
    const text = HTTPS_API.replace("    protocol: TLS\n", "    protocol: TLS\n    color: blue\n");
    const p = expectOne(text, "error", /^unknown field 'color' in spec\.ports\[0\]$/, "color");
    expect(p.field).to.equal("spec.ports[0].color");
  });

  it("reports a missing required field at the parent mapping", () => {
    const text = SE(`  ports:\n  - number: 80\n    name: http\n    protocol: HTTP\n`);
    expectOne(text, "error", /spec: missing required field 'hosts'/, "ports");
    const text2 = SE(`  hosts: [a.example.com]\n  ports:\n  - number: 80\n    protocol: HTTP\n`);
    expectOne(text2, "error", /spec\.ports\[0\]: missing required field 'name'/, "number: 80");
    const text3 = `apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nspec:\n  hosts: [a.example.com]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n`;
    expectOne(text3, "error", /document: missing required field 'metadata'/, "apiVersion");
    expectOne(SE(`  hosts:\n  ports: [{number: 80, name: http, protocol: HTTP}]\n`), "error", /^spec\.hosts: required field has no value$/, "hosts");
  });

  it("reports wrong types at the value, with a hint", () => {
    expectOne(HTTPS_API.replace("number: 443", 'number: "443"'), "error", /spec\.ports\[0\]\.number: expected an integer.*remove the quotes/, '"443"');
    expectOne(HTTPS_API.replace("  hosts:\n  - api.partner-one.example\n  - api.partner-two.example\n", "  hosts: api.partner-one.example\n"), "error", /spec\.hosts: expected a list, got string/, "api.partner-one.example");
    const labels = HTTPS_API.replace("  name: partner-apis\n", "  name: partner-apis\n  labels:\n    version: 2\n");
    expectOne(labels, "error", /metadata\.labels\.version: expected a string, got integer \(quote it: "2"\)/, "2\n");
  });

  it("lists the allowed values of an enum, and normalises protocol case", () => {
    expectOne(HTTPS_API.replace("resolution: DNS", "resolution: DSN"), "error", /spec\.resolution: invalid value 'DSN' \(did you mean 'DNS'\?\); allowed: NONE, STATIC, DNS, DNS_ROUND_ROBIN, DYNAMIC_DNS/, "DSN");
    expectOne(HTTPS_API.replace("protocol: TLS", "protocol: QUIC"), "error", /allowed: HTTP, HTTPS, GRPC, HTTP2, MONGO, TCP, TLS, UDP/, "QUIC");
    const r = clean(HTTPS_API.replace("protocol: TLS", "protocol: tls"));
    expect((r.objects[0] as ConfigObject<"ServiceEntry">).spec.ports![0]!.protocol).to.equal("TLS");
  });

  it("requires names and namespaces to be DNS-1123 labels", () => {
    expectOne(HTTPS_API.replace("name: partner-apis", "name: Partner_APIs"), "error", /metadata\.name: 'Partner_APIs' is not a DNS-1123 label/, "Partner_APIs");
    expectOne(HTTPS_API.replace("name: partner-apis", "name: partner-apis\n  namespace: egress.prod"), "error", /metadata\.namespace: 'egress.prod' is not a DNS-1123 label/, "egress.prod");
    expectOne(HTTPS_API.replace("name: partner-apis", `name: ${"a".repeat(64)}`), "error", /longer than 63/, "a".repeat(64));
  });

  it("reports YAML syntax errors with their own position and keeps other documents", () => {
    const bad = `apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: broken\nspec:\n  hosts: [a.example.com\n`;
    const text = `${HTTPS_API}---\n${bad}`;
    const r = parse(text);
    expect(errors(r).length).to.be.greaterThan(0);
    for (const e of errors(r)) {
      expect(e.message).to.match(/^YAML: /);
      expect(e.line).to.be.at.least(loc(text, "broken").line);
    }
    expect(r.objects.map((o) => o.metadata.name)).to.deep.equal(["partner-apis"]);
  });

  it("reports duplicate keys as an error at the duplicate", () => {
    const text = HTTPS_API.replace("  resolution: DNS\n", "  resolution: DNS\n  resolution: STATIC\n");
    const r = parse(text);
    expect(errors(r)).to.have.length(1);
    expect(errors(r)[0]!.message).to.match(/unique/);
    expect(errors(r)[0]!.line).to.equal(loc(text, "resolution: STATIC").line);
    expect(r.objects).to.deep.equal([]);
  });

  it("drops every object of a document with an error, but keeps other documents and warnings' objects", () => {
    const list = `apiVersion: v1\nkind: List\nitems:\n- ${HTTPS_API.trimEnd().replace(/\n/g, "\n  ")}\n- ${HTTPS_API.replace("partner-apis", "second").replace("number: 443", "number: 0").trimEnd().replace(/\n/g, "\n  ")}\n`;
    const r = parse(list);
    expect(errors(r)).to.have.length(1);
    expect(errors(r)[0]!.message).to.match(/items\[1\]\.spec\.ports\[0\]\.number: 0 is out of range 1\.\.65535/);
    expect({ line: errors(r)[0]!.line, column: errors(r)[0]!.column }).to.deep.equal(loc(list, "0\n"));
    expect(r.objects).to.deep.equal([]);
  });

  it("reads a v1 List and a JSON array, with positions inside JSON", () => {
    const list = `apiVersion: v1\nkind: List\nitems:\n- ${HTTPS_API.trimEnd().replace(/\n/g, "\n  ")}\n`;
    expect(clean(list).objects).to.have.length(1);
    const json = JSON.stringify(
      [
        { apiVersion: "networking.istio.io/v1", kind: "ServiceEntry", metadata: { name: "a" }, spec: { hosts: ["a.example.com"], ports: [{ number: 80, name: "http", protocol: "HTTP" }], resolution: "DNS" } },
        { apiVersion: "networking.istio.io/v1", kind: "ServiceEntry", metadata: { name: "b" }, spec: { hosts: ["b.example.com"], ports: [{ number: 80, name: "http", protocol: "HTTP" }], resolution: "DSN" } },
      ],
      null,
      2,
    );
    const r = parseDocuments("svc.json", json);
    expect(errors(r)).to.have.length(1);
    expect({ line: errors(r)[0]!.line, column: errors(r)[0]!.column }).to.deep.equal(loc(json, '"DSN"'));
    expect(r.objects).to.deep.equal([]);
    const ok = parseDocuments("svc.json", JSON.stringify(JSON.parse(json).slice(0, 1)));
    expect(ok.problems).to.deep.equal([]);
    expect(ok.objects[0]!.origin).to.deep.equal({ type: "file", file: "svc.json", line: 1, column: 2 });
  });

  it("ignores empty documents and a Kubernetes status, and rejects a scalar document", () => {
    const r = clean(`---\n# nothing\n---\n${HTTPS_API}status:\n  conditions: []\n---\n`);
    expect(r.objects).to.have.length(1);
    expectOne(`just a string\n`, "error", /expected an object with apiVersion, kind, metadata and spec/, "just");
  });

  it("expands YAML merge keys (own keys win) and reports merged values where they were written", () => {
    const text = `apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: web-1
  labels: &common
    team: shop
    tier: web
spec:
  address: 192.0.2.1
  labels:
    <<: *common
    tier: frontend
  ports: &ports
    http: 8080
`;
    const we = clean(text).objects[0] as ConfigObject<"WorkloadEntry">;
    expect(we.spec.labels).to.deep.equal({ team: "shop", tier: "frontend" });
    const bad = text.replace("team: shop", "team: -shop-");
    const r = parse(bad);
    expect(errors(r).map((e) => [e.line, e.column, e.field])).to.deep.equal([
      [loc(bad, "-shop-").line, loc(bad, "-shop-").column, "metadata.labels.team"],
      [loc(bad, "-shop-").line, loc(bad, "-shop-").column, "spec.labels.team"],
    ]);
    expectOne(text.replace("    <<: *common\n", "    <<: [a, b]\n"), "error", /merge key '<<' needs a mapping or a list of mappings/, "[a, b]");
  });

  it("reports an alias to an anchor of another document at the alias", () => {
    const text = `${HTTPS_API.replace("  hosts:\n", "  hosts: &h\n")}---\n${HTTPS_API.replace("partner-apis", "other").replace("  hosts:\n  - api.partner-one.example\n  - api.partner-two.example\n", "  hosts: *h\n")}`;
    const r = parse(text);
    expect(r.objects.map((o) => o.metadata.name)).to.deep.equal(["partner-apis"]);
    expect(errors(r)).to.have.length(1);
    expect(errors(r)[0]!.message).to.match(/unresolved alias \*h \(anchors belong to one document/);
    expect({ line: errors(r)[0]!.line, column: errors(r)[0]!.column }).to.deep.equal(loc(text, "*h"));
  });

  it("without a kind, reports the missing kind only (no spec noise)", () => {
    expectOne(HTTPS_API.replace("kind: ServiceEntry\n", ""), "error", /^document: missing required field 'kind'$/, "apiVersion");
  });

  it("reports independent mistakes of one object together", () => {
    const text = HTTPS_API.replace("api.partner-two.example", '"*"').replace("number: 443", "number: 0");
    const r = parse(text);
    expect(errors(r).map((e) => [e.line, e.column])).to.deep.equal([loc(text, '"*"'), loc(text, "0\n")].map((p) => [p.line, p.column]));
  });

  it("rejects a file over the size limit without parsing it", () => {
    const r = parseDocuments("big.yaml", `# ${"x".repeat(5 * 1024 * 1024)}\n`);
    expect(errors(r)[0]!.message).to.match(/larger than 4 MiB/);
  });
});

describe("parseDocuments: ServiceEntry shapes of the Istio reference", () => {
  const shapes: Record<string, string> = {
    "external HTTPS APIs routed on SNI (TLS, DNS)": HTTPS_API,
    "database VMs with VIPs and static endpoints": SE(`  hosts:
  - orders-db.example.internal
  addresses:
  - 192.0.2.0/24
  ports:
  - number: 27018
    name: mongodb
    protocol: MONGO
  location: MESH_INTERNAL
  resolution: STATIC
  endpoints:
  - address: 198.51.100.2
  - address: 198.51.100.3
`),
    "wildcard hosts with resolution NONE over HTTP": SE(`  hosts:
  - "*.cdn.example.org"
  location: MESH_EXTERNAL
  ports:
  - number: 80
    name: http
    protocol: HTTP
  resolution: NONE
`),
    "namespace-private external service (exportTo .)": SE(`  hosts:
  - billing.example.com
  exportTo:
  - "."
  location: MESH_EXTERNAL
  ports:
  - number: 80
    name: http
    protocol: HTTP
  resolution: DNS
`, "  namespace: egress\n"),
    "unix domain socket on the client's host": SE(`  hosts:
  - "agent.unix.local"
  location: MESH_EXTERNAL
  ports:
  - number: 80
    name: http
    protocol: HTTP
  resolution: STATIC
  endpoints:
  - address: unix:///var/run/agent/api.sock
`),
    "DNS endpoints given by host name with per-endpoint ports": SE(`  hosts:
  - mirror.example.com
  location: MESH_EXTERNAL
  ports:
  - number: 80
    name: http
    protocol: HTTP
  resolution: DNS
  endpoints:
  - address: eu.mirror.example.com
    ports:
      http: 8080
  - address: us.mirror.example.com
    ports:
      http: 9080
`),
    "SPIFFE subjectAltNames on a mesh-internal service": SE(`  hosts:
  - inventory.example.com
  location: MESH_INTERNAL
  ports:
  - number: 80
    name: http
    protocol: HTTP
  resolution: STATIC
  endpoints:
  - address: 203.0.113.7
  - address: 203.0.113.8
  subjectAltNames:
  - "spiffe://cluster.local/ns/inventory/sa/inventory-sa"
`, "  namespace: inventory\n"),
    "VM workloads selected by labels": SE(`  hosts:
  - reviews.example.internal
  location: MESH_INTERNAL
  ports:
  - number: 80
    name: http
    protocol: HTTP
  resolution: STATIC
  workloadSelector:
    labels:
      app: reviews
`),
  };
  for (const [name, text] of Object.entries(shapes)) {
    it(`accepts ${name}`, () => {
      const r = clean(text);
      expect(r.objects).to.have.length(1);
      expect(r.objects[0]!.kind).to.equal("ServiceEntry");
    });
  }

  it("accepts the reference's WorkloadEntries for VMs", () => {
    const text = `${head("WorkloadEntry", "reviews-vm-1")}  serviceAccount: reviews\n  address: 198.51.100.21\n  labels:\n    app: reviews\n    instance-id: vm1\n---\n${head("WorkloadEntry", "reviews-vm-2")}  serviceAccount: reviews\n  address: 198.51.100.22\n  labels:\n    app: reviews\n    instance-id: vm2\n`;
    expect(clean(text).objects.map((o) => o.metadata.name)).to.deep.equal(["reviews-vm-1", "reviews-vm-2"]);
  });

  it("rejects the reference's own typo: endpoint ports naming an undeclared port", () => {
    const text = SE(`  hosts: [mirror.example.com]\n  ports:\n  - number: 80\n    name: http\n    protocol: HTTP\n  resolution: DNS\n  endpoints:\n  - address: eu.mirror.example.com\n    ports:\n      https: 8080\n`);
    expectOne(text, "error", /spec\.endpoints\[0\]\.ports: 'https' is not the name of a declared port \(did you mean 'http'\?\)/, "https");
  });
});

describe("parseDocuments: ServiceEntry rules", () => {
  const base = (extra: string, ports = `  ports:\n  - number: 443\n    name: https\n    protocol: TLS\n`) => SE(`  hosts:\n  - api.example.com\n${ports}${extra}`);

  it("hosts: non-empty, FQDN or '*.' prefix only; a bare '*' is an error", () => {
    expectOne(base("  resolution: DNS\n").replace("  - api.example.com\n", "  - api.example.com\n  - \"*\"\n"), "error", /spec\.hosts\[1\]: the bare wildcard '\*' is not allowed/, '"*"');
    expectOne(base("  resolution: NONE\n  addresses: [192.0.2.1]\n").replace("api.example.com", "api.*.example.com"), "error", /only allowed as a leading '\*\.'/, "api.*.example.com");
    expectOne(base("  resolution: DNS\n").replace("api.example.com", "api..example.com"), "error", /not a valid host name \(empty label\)/, "api..example.com");
    expectOne(base("  resolution: DNS\n").replace("  hosts:\n  - api.example.com\n", "  hosts: []\n"), "error", /spec\.hosts: must not be empty/, "[]");
    expectOne(base("  resolution: DNS\n").replace("  - api.example.com\n", "  - api.example.com\n  - API.example.com\n"), "error", /duplicate host 'API.example.com'/, "API.example.com");
  });

  it("addresses: IPs or CIDRs, never unix sockets", () => {
    expectOne(base("  resolution: STATIC\n  addresses:\n  - 192.0.2.10/33\n"), "error", /prefix length must be at most 32/, "192.0.2.10/33");
    expectOne(base("  resolution: STATIC\n  addresses:\n  - unix:///tmp/x.sock\n"), "error", /unix domain socket addresses are not allowed/, "unix:///tmp/x.sock");
    expectOne(base("  resolution: STATIC\n  addresses:\n  - not-an-ip\n"), "error", /'not-an-ip' is not an IP address or CIDR/, "not-an-ip");
    clean(base("  resolution: STATIC\n  addresses:\n  - 2001:db8::/32\n  - 198.51.100.4\n"));
  });

  it("ports: numbers unique and in range, names unique, DNS-1123 and required, targetPort in range", () => {
    const two = (a: string, b: string) => `  ports:\n  - ${a}\n  - ${b}\n`;
    expectOne(base("  resolution: DNS\n", two("{number: 443, name: a, protocol: TLS}", "{number: 443, name: b, protocol: TLS}")), "error", /port 443 is already declared by spec\.ports\[0\]/, "443", 1);
    expectOne(base("  resolution: DNS\n", two("{number: 443, name: a, protocol: TLS}", "{number: 8443, name: a, protocol: TLS}")), "error", /port name 'a' is already used/, "a, protocol", 1);
    expectOne(base("  resolution: DNS\n", two("{number: 443, name: a, protocol: TLS}", "{number: 70000, name: b, protocol: TLS}")), "error", /70000 is out of range 1\.\.65535/, "70000");
    expectOne(base("  resolution: DNS\n", two("{number: 443, name: a, protocol: TLS}", "{number: 444, name: B_2, protocol: TLS}")), "error", /'B_2' is not a DNS-1123 label/, "B_2");
    expectOne(base("  resolution: DNS\n", two("{number: 443, name: a, protocol: TLS, targetPort: 0}", "{number: 444, name: b, protocol: TLS}")), "error", /targetPort: 0 is out of range/, "0}");
    expectOne(base("  resolution: DNS\n", "  ports: []\n"), "error", /needs at least one port/, "ports: []");
  });

  it("endpoints and workloadSelector are mutually exclusive; workloadSelector only for MESH_INTERNAL", () => {
    expectOne(base("  location: MESH_INTERNAL\n  resolution: STATIC\n  endpoints:\n  - address: 192.0.2.1\n  workloadSelector:\n    labels: {app: x}\n"), "error", /only one of 'endpoints' or 'workloadSelector'/, "workloadSelector");
    expectOne(base("  resolution: STATIC\n  workloadSelector:\n    labels: {app: x}\n"), "error", /only applies to MESH_INTERNAL/, "workloadSelector");
  });

  it("unix socket endpoints need resolution STATIC and exactly one port", () => {
    const http = `  ports:\n  - number: 80\n    name: http\n    protocol: HTTP\n`;
    expectOne(base("  resolution: DNS\n  endpoints:\n  - address: unix:///var/run/a.sock\n", http), "error", /unix socket endpoints need resolution STATIC \(resolution is DNS\)/, "unix:///var/run/a.sock");
    expectOne(base("  resolution: DNS_ROUND_ROBIN\n  endpoints:\n  - address: unix:///var/run/a.sock\n", http), "error", /need resolution STATIC \(resolution is DNS_ROUND_ROBIN\)/, "unix:///var/run/a.sock");
    expectOne(base("  resolution: STATIC\n  endpoints:\n  - address: unix:///var/run/a.sock\n", `${http}  - number: 81\n    name: admin\n    protocol: HTTP\n`), "error", /exactly one port \(it declares 2\)/, "ports");
    expectOne(base("  resolution: STATIC\n  endpoints:\n  - address: unix://relative.sock\n", http), "error", /needs an absolute path/, "unix://relative.sock");
  });

  it("STATIC endpoints need IP addresses; DNS_ROUND_ROBIN takes at most one endpoint; NONE takes none", () => {
    expectOne(base("  resolution: STATIC\n  endpoints:\n  - address: 192.0.2.1\n  - address: backend.example.com\n"), "error", /resolution STATIC needs an IP address or unix socket, not host name 'backend.example.com'/, "backend.example.com");
    expectOne(base("  resolution: DNS_ROUND_ROBIN\n  endpoints:\n  - address: a.example.com\n  - address: b.example.com\n"), "error", /DNS_ROUND_ROBIN takes at most one endpoint \(found 2\)/, "endpoints");
    expectOne(base("  resolution: NONE\n  addresses: [192.0.2.0/24]\n  endpoints:\n  - address: 192.0.2.1\n"), "error", /resolution NONE takes no endpoints/, "endpoints");
    clean(base("  resolution: DNS_ROUND_ROBIN\n  endpoints:\n  - address: a.example.com\n"));
  });

  it("DNS without endpoints cannot resolve a wildcard host; DYNAMIC_DNS requires wildcard hosts", () => {
    expectOne(base("  resolution: DNS\n").replace("api.example.com", '"*.example.com"'), "error", /cannot be a wildcard/, '"*.example.com"');
    expectOne(base("  resolution: DYNAMIC_DNS\n"), "error", /DYNAMIC_DNS requires wildcard hosts/, "api.example.com");
    clean(base("  resolution: DYNAMIC_DNS\n").replace("api.example.com", '"*.example.com"'));
  });

  it("warns that DYNAMIC_DNS cannot serve a port without Host header or SNI", () => {
    const ports = `  ports:\n  - number: 80\n    name: http\n    protocol: HTTP\n  - number: 9000\n    name: raw\n    protocol: TCP\n`;
    const p = expectOne(base("  resolution: DYNAMIC_DNS\n", ports).replace("api.example.com", '"*.example.com"'), "warning", /DYNAMIC_DNS resolves each request's Host header \(HTTP\) or TLS SNI; TCP port 9000 carries neither/, "TCP");
    expect(p.field).to.equal("spec.ports[1].protocol");
    clean(base("  resolution: DYNAMIC_DNS\n", `  ports:\n  - number: 8443\n    name: https\n    protocol: HTTPS\n  - number: 8080\n    name: grpc\n    protocol: GRPC\n`).replace("api.example.com", '"*.example.com"'));
  });

  it("warns that resolution NONE on an L4 port without addresses opens the port to any IP", () => {
    const tcp = `  ports:\n  - number: 5432\n    name: pg\n    protocol: TCP\n`;
    const p = expectOne(base("  resolution: NONE\n", tcp), "warning", /resolution NONE on TCP port 5432 without 'addresses' opens port 5432 to any IP/, "5432");
    expect(p.field).to.equal("spec.ports[0].number");
    expectOne(base("  resolution: NONE\n"), "warning", /on TLS port 443/, "443");
    clean(base("  resolution: NONE\n  addresses: [192.0.2.0/24]\n", tcp));
    clean(base("  resolution: NONE\n", `  ports:\n  - number: 80\n    name: http\n    protocol: HTTP\n`));
  });

  it("endpoint ports, weights, localities, labels, service accounts", () => {
    const ep = (fields: string) => base(`  location: MESH_INTERNAL\n  resolution: STATIC\n  endpoints:\n  - address: 192.0.2.1\n${fields}`);
    expectOne(ep("    ports:\n      https: 0\n"), "error", /spec\.endpoints\[0\]\.ports\.https: 0 is out of range 1\.\.65535/, "0\n");
    expectOne(ep("    weight: -1\n"), "error", /weight: -1 is out of range 0\.\.4294967295/, "-1");
    expectOne(ep("    weight: 1.5\n"), "error", /weight: expected an integer/, "1.5");
    expectOne(ep("    weight: 0\n"), "warning", /weight 0 means the default weight \(1\)/, "0\n");
    expectOne(ep("    weight: 4294967295\n  - address: 192.0.2.2\n    weight: 1\n"), "error", /add up to more than 4294967295/, "address: 192.0.2.2");
    expectOne(ep("    locality: eu//a\n"), "error", /invalid locality 'eu\/\/a'/, "eu//a");
    expectOne(ep("    locality: eu/a/b/c\n"), "error", /invalid locality/, "eu/a/b/c");
    expectOne(ep("    labels:\n      app: -bad-\n"), "error", /invalid label value '-bad-'/, "-bad-");
    expectOne(ep("    labels:\n      Bad Key: x\n"), "error", /invalid label key 'Bad Key'/, "Bad Key");
    expectOne(ep("    serviceAccount: Web_SA\n"), "error", /'Web_SA' is not a DNS-1123 subdomain/, "Web_SA");
    expectOne(base("  location: MESH_INTERNAL\n  resolution: STATIC\n  endpoints:\n  - labels: {app: x}\n"), "error", /endpoint needs an 'address'/, "labels");
    clean(base("  location: MESH_INTERNAL\n  resolution: STATIC\n  endpoints:\n  - network: dc2\n    labels: {app: x}\n"));
    clean(ep("    locality: eu-west/eu-west-1a/rack7\n    weight: 3\n    serviceAccount: web\n    labels:\n      app.kubernetes.io/name: web\n"));
  });

  it("subjectAltNames are non-empty strings; exportTo is '.', '*' or namespaces, '*' alone", () => {
    expectOne(base('  resolution: DNS\n  subjectAltNames:\n  - ""\n'), "error", /spec\.subjectAltNames\[0\]: must not be empty/, '""');
    expectOne(base("  resolution: DNS\n  exportTo:\n  - Prod\n"), "error", /invalid exportTo entry.*'Prod'/, "Prod");
    expectOne(base('  resolution: DNS\n  exportTo:\n  - "*"\n  - shop\n'), "error", /'\*' already exports to every namespace/, '"*"');
    expectOne(base('  resolution: DNS\n  exportTo:\n  - shop\n  - shop\n'), "error", /duplicate value 'shop'/, "shop", 1);
    clean(base('  resolution: DNS\n  exportTo:\n  - "."\n  - shop\n'));
  });
});
