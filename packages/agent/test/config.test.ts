import { fileURLToPath } from "node:url";
import { expect } from "chai";
import { AgentConfigError, environmentOverrides, loadAgentConfig, parseAgentConfig } from "../src/config.js";
import { BASE_YAML, config } from "./fixtures.js";

function problemsOf(text: string, env: NodeJS.ProcessEnv = {}): string[] {
  try {
    parseAgentConfig(text, "agent.yaml", env);
  } catch (e) {
    expect(e).to.be.instanceOf(AgentConfigError);
    return (e as Error).message.split("\n");
  }
  throw new Error("expected the config to be rejected");
}

describe("agent config", () => {
  it("resolves defaults: identity, SAN of the control plane, output paths, ports, interception", () => {
    const c = config();
    expect(c.identity).to.equal("spiffe://cluster.local/ns/shop/sa/reviews");
    expect(c.controlPlane).to.deep.include({ host: "cp.mesh.internal", port: 15012, san: "spiffe://cluster.local/ns/vmpilot-system/sa/vmpilot" });
    expect(c.output.keyFile).to.equal("/var/lib/vmpilot/agent/key.pem");
    expect(c.output.sdsDefaultFile).to.equal("/var/lib/vmpilot/agent/default.sds.yaml");
    expect(c.ports).to.deep.equal([
      { name: "http", port: 9080, protocol: "HTTP", targetPort: 8080 },
      { name: "grpc", port: 9090, protocol: "GRPC", targetPort: 9090 },
    ]);
    expect(c.proxy).to.deep.include({ kind: "envoy", xdsTransport: "GRPC", envoyBinary: "envoy" });
    expect(c.interception).to.deep.include({ mode: "REDIRECT", proxyUid: 1337, includeInboundPorts: ["8080", "9090"] });
    expect(c.status).to.deep.equal({ host: "0.0.0.0", port: 15020, readinessHost: "0.0.0.0", readinessPort: 15021 });
    expect(c.grpc).to.deep.include({ xdsServerUri: "unix:///var/lib/vmpilot/agent/xds.sock", xdsProxy: true });
  });

  it("follows the trust domain into identity and the default control-plane SAN", () => {
    const c = config("trustDomain: example.org\n");
    expect(c.identity).to.equal("spiffe://example.org/ns/shop/sa/reviews");
    expect(c.controlPlane.san).to.equal("spiffe://example.org/ns/vmpilot-system/sa/vmpilot");
  });

  it("reads a WorkloadGroup-style probe with Kubernetes defaults", () => {
    const c = config("probe:\n  httpGet:\n    path: /ready\n    port: 8080\n  periodSeconds: 5\n");
    expect(c.probe).to.deep.equal({
      httpGet: { path: "/ready", port: 8080, host: "127.0.0.1", scheme: "HTTP", httpHeaders: [] },
      initialDelayMs: 0,
      periodMs: 5000,
      timeoutMs: 1000,
      successThreshold: 1,
      failureThreshold: 3,
    });
  });

  it("rejects unknown keys with file:line:column, at every depth", () => {
    const lines = problemsOf(BASE_YAML + "proxy:\n  kind: envoy\n  envoyBinry: /usr/bin/envoy\nnamspace: x\n");
    const base = BASE_YAML.split("\n").length; // line number of the first appended line
    expect(lines).to.include.members([
      `agent.yaml:${base + 2}:3: error: unknown field "proxy.envoyBinry" (known here: kind, xdsTransport, envoyBinary, drainDuration, parentShutdownDuration, logLevel, concurrency, adminPort)`,
    ]);
    expect(lines.some((l) => l.startsWith(`agent.yaml:${base + 3}:1: error: unknown field "namspace"`))).to.equal(true);
  });

  it("reports wrong types and values where they are", () => {
    const lines = problemsOf(BASE_YAML + "proxy:\n  kind: sidecar\n  drainDuration: soon\ninterception:\n  excludeInboundPorts: [22, 70000]\n");
    const base = BASE_YAML.split("\n").length; // line number of the first appended line
    expect(lines).to.include(`agent.yaml:${base + 1}:9: error: proxy.kind: expected one of envoy, grpc, both, gateway, got "sidecar"`);
    expect(lines).to.include(`agent.yaml:${base + 2}:18: error: proxy.drainDuration: expected a duration like "30s" or "24h", got "soon"`);
    expect(lines.some((l) => l.includes("interception.excludeInboundPorts[1]: 70000 is above the maximum 65535"))).to.equal(true);
  });

  it("checks cross-field rules: required identity, IP address, probe handler count, CIDRs, REDIRECT without Envoy", () => {
    const lines = problemsOf(
      "name: vm\nnamespace: Shop\naddress: vm.example\ncontrolPlane:\n  address: cp\nproxy:\n  kind: grpc\ninterception:\n  mode: REDIRECT\n  excludeOutboundCidrs: [10.0.0.0/33]\nprobe:\n  tcpSocket: {port: 1}\n  exec: {command: [true]}\n",
    );
    const text = lines.join("\n");
    expect(text).to.include("serviceAccount is required (or set VMPILOT_AGENT_SERVICE_ACCOUNT)");
    expect(text).to.include('agent.yaml:2:1: error: namespace "Shop" must be a DNS label');
    expect(text).to.include('address "vm.example" must be an IP literal');
    expect(text).to.include('controlPlane.address "cp" must be host:port');
    expect(text).to.include("controlPlane.tokenFile is required");
    expect(text).to.include("interception.mode REDIRECT needs a sidecar Envoy");
    expect(text).to.include('"10.0.0.0/33" is not a CIDR');
    expect(text).to.include("probe: set exactly one of httpGet, tcpSocket, exec (found tcpSocket, exec)");
  });

  it("checks inbound ports: unique numbers and names, Istio protocols", () => {
    const yaml = BASE_YAML.replace("protocol: GRPC", "protocol: QUIC").replace("controlPlane:", "  - {name: http, port: 9091}\n  - {name: other, port: 9080}\ncontrolPlane:");
    const text = problemsOf(yaml).join("\n");
    expect(text).to.include('ports[1].protocol: "QUIC" is not one of HTTP, HTTPS, GRPC');
    expect(text).to.include('ports[2].name: "http" is used by another port');
    expect(text).to.include("ports[3].port: 9080 is listed twice");
    expect(text).to.match(/agent\.yaml:\d+:\d+: error: ports\[3\]\.port/);
  });

  it("applies VMPILOT_AGENT_* overrides over the file, with lists and maps", () => {
    const c = config("", {
      VMPILOT_AGENT_NAMESPACE: "payments",
      VMPILOT_AGENT_LABELS: "app=pay,tier=backend",
      VMPILOT_AGENT_CONTROL_PLANE_ADDRESS: "10.1.1.1:15012",
      VMPILOT_AGENT_PROXY_XDS_TRANSPORT: "DELTA_GRPC",
      VMPILOT_AGENT_INTERCEPTION_EXCLUDE_OUTBOUND_PORTS: "5432, 6379",
      VMPILOT_AGENT_AUTO_REGISTER_GROUP: "reviews",
      PATH: "/usr/bin",
    });
    expect(c.namespace).to.equal("payments");
    expect(c.identity).to.equal("spiffe://cluster.local/ns/payments/sa/reviews");
    expect(c.labels).to.deep.equal({ app: "pay", tier: "backend" });
    expect(c.controlPlane).to.deep.include({ host: "10.1.1.1", port: 15012 });
    expect(c.proxy.xdsTransport).to.equal("DELTA_GRPC");
    expect(c.interception.excludeOutboundPorts).to.deep.equal([5432, 6379]);
    expect(c.autoRegisterGroup).to.equal("reviews");
  });

  it("rejects unknown or malformed overrides, naming the variable", () => {
    const lines = problemsOf(BASE_YAML, { VMPILOT_AGENT_NAMESPCE: "x", VMPILOT_AGENT_PROXY_KIND: "nginx" });
    expect(lines.some((l) => l.startsWith("$VMPILOT_AGENT_NAMESPCE:1:1: error: unknown environment override VMPILOT_AGENT_NAMESPCE"))).to.equal(true);
    expect(lines).to.include('$VMPILOT_AGENT_PROXY_KIND:1:1: error: VMPILOT_AGENT_PROXY_KIND: proxy.kind: expected one of envoy, grpc, both, gateway, got "nginx"');
  });

  it("derives override names from the schema", () => {
    const names = [...environmentOverrides().keys()];
    expect(names).to.include.members(["VMPILOT_AGENT_NAMESPACE", "VMPILOT_AGENT_SERVICE_ACCOUNT", "VMPILOT_AGENT_CONTROL_PLANE_SAN", "VMPILOT_AGENT_OUTPUT_DIR", "VMPILOT_AGENT_PROXY_ENVOY_BINARY"]);
  });

  it("accepts the documented sample config/agent.yaml", () => {
    const sample = fileURLToPath(new URL("../../../config/agent.yaml", import.meta.url));
    const c = loadAgentConfig(sample, {});
    expect(c.identity).to.equal("spiffe://cluster.local/ns/shop/sa/reviews");
    expect(c.probe?.httpGet?.path).to.equal("/health");
    expect(c.interception.excludeOutboundCidrs).to.deep.equal(["169.254.169.254/32"]);
  });

  it("resolves DNS proxy defaults: off; when on, capture follows REDIRECT interception (as Istio's DNS capture)", () => {
    expect(config().dns).to.deep.equal({ enabled: false, address: "127.0.0.1", port: 15053, capture: false });
    expect(config("dns:\n  enabled: true\n").dns).to.deep.equal({ enabled: true, address: "127.0.0.1", port: 15053, capture: true });
    expect(config("interception:\n  mode: NONE\ndns:\n  enabled: true\n").dns.capture).to.equal(false);
    const c = config("", { VMPILOT_AGENT_DNS_ENABLED: "true", VMPILOT_AGENT_DNS_UPSTREAMS: "10.0.0.2,[fd00::53]:5353", VMPILOT_AGENT_DNS_CAPTURE: "false" });
    expect(c.dns).to.deep.equal({ enabled: true, address: "127.0.0.1", port: 15053, upstreams: ["10.0.0.2", "[fd00::53]:5353"], capture: false });
  });

  it("checks the DNS settings where they are written", () => {
    const base = BASE_YAML.split("\n").length;
    const text = problemsOf(BASE_YAML + "dns:\n  enabled: true\n  address: 10.0.0.5\n  upstreams: [8.8.8.8, dns.example]\n  captureServers: [resolver]\n").join("\n");
    expect(text).to.include(`agent.yaml:${base + 2}:3: error: dns.address 10.0.0.5: with dns.capture the proxy must listen on 127.0.0.1 (or 0.0.0.0), where iptables REDIRECT delivers`);
    expect(text).to.include(`agent.yaml:${base + 3}:24: error: dns.upstreams[1]: invalid DNS upstream 'dns.example': 'dns.example' is not an IP address`);
    expect(text).to.include('dns.captureServers[0]: "resolver" is neither "*" nor an IP address');
    expect(problemsOf(BASE_YAML + "dns:\n  capture: true\n").join("\n")).to.include("dns.capture redirects port 53 to the agent's DNS proxy, which is off: set dns.enabled: true");
    expect(problemsOf(BASE_YAML + "dns:\n  enabled: true\n  port: 0\n").join("\n")).to.include("dns.port 0 (any port) cannot be the target of the capture rules");
    expect(problemsOf(BASE_YAML + "interception:\n  excludeOutboundPorts: [53]\ndns:\n  enabled: true\n").join("\n")).to.include("interception.excludeOutboundPorts lists 53 while dns.capture is on");
    // Without capture the proxy may listen anywhere, on any port.
    expect(config("dns:\n  enabled: true\n  capture: false\n  address: 127.0.0.46\n  port: 0\n").dns).to.deep.include({ address: "127.0.0.46", port: 0 });
  });

  it("reports YAML syntax errors with their position", () => {
    const lines = problemsOf("name: [unclosed\n");
    expect(lines[0]).to.match(/^agent\.yaml:\d+:\d+: error: /);
  });
});
