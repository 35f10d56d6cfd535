// The agent's configuration: one YAML file (documented sample in config/agent.yaml) plus VMPILOT_AGENT_*
// environment overrides (systemd drop-ins, cloud-init), validated as a whole with file:line errors, then
// defaulted into a fully-resolved AgentConfig that the rest of the agent reads without further checks.
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { LineCounter, parseDocument } from "yaml";
import { spiffeId } from "@vmpilot/registry/spiffe";
import { parseUpstream } from "./dns/upstreams.js";
import { AgentConfigError, checkScalar, envSuffix, leaves, readDocument, type FieldSchema, type ObjectSchema, type Problem } from "./schema.js";

export { AgentConfigError, type Problem } from "./schema.js";

export type ProxyKindConfig = "envoy" | "grpc" | "both" | "gateway";
export type XdsTransport = "GRPC" | "DELTA_GRPC";
export type InterceptionMode = "REDIRECT" | "NONE";

export interface InboundPort {
  name: string;
  port: number;
  protocol: string;
  /** Where the application listens; defaults to `port`. */
  targetPort: number;
}

/** A readiness probe as in Istio's WorkloadGroup `probe` (Kubernetes probe fields). Times in milliseconds. */
export interface ProbeConfig {
  httpGet?: { path: string; port: number; host: string; scheme: "HTTP" | "HTTPS"; httpHeaders: { name: string; value: string }[] };
  tcpSocket?: { port: number; host: string };
  exec?: { command: string[] };
  initialDelayMs: number;
  periodMs: number;
  timeoutMs: number;
  successThreshold: number;
  failureThreshold: number;
}

export interface AgentConfig {
  /** The file it came from (for messages); undefined when built from the environment alone. */
  source?: string;
  name: string;
  namespace: string;
  serviceAccount: string;
  labels: Record<string, string>;
  /** The instance IP other workloads reach this VM on. */
  address: string;
  ports: InboundPort[];
  trustDomain: string;
  /** spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT: the identity the agent asks the CA for. */
  identity: string;
  controlPlane: {
    host: string;
    port: number;
    /** The SPIFFE URI SAN the control plane's serving certificate must carry. */
    san: string;
    tokenFile: string;
    /** Mesh root (PEM), distributed out of band; trusted for the control plane's serving certificate. */
    rootCertFile: string;
  };
  output: {
    dir: string;
    keyFile: string;
    certChainFile: string;
    rootCertFile: string;
    envoyBootstrapFile: string;
    grpcBootstrapFile: string;
    /** File-based SDS resources (one Secret each) that Envoy watches. */
    sdsDefaultFile: string;
    sdsRootFile: string;
    /** Where Envoy writes its admin address (--admin-address-path); the agent reads it to ask Envoy if it is ready. */
    envoyAdminAddressFile: string;
    /** Gateways: the private (0700) directory of the SDS socket serving gateway.credentialsDir (bootstrap/envoy.ts credentialSdsSocket). */
    credentialSdsDir: string;
  };
  proxy: {
    kind: ProxyKindConfig;
    xdsTransport: XdsTransport;
    envoyBinary: string;
    drainMs: number;
    parentShutdownMs: number;
    logLevel: string;
    concurrency?: number;
    /** Envoy's admin port on 127.0.0.1 (15000). 0 lets Envoy pick one; the agent learns it from --admin-address-path. */
    adminPort: number;
  };
  /** What the proxyless gRPC bootstrap points at (see bootstrap/grpc.ts). */
  grpc: {
    xdsServerUri: string;
    channelCreds: "insecure" | "google_default";
    certRefreshMs: number;
    /** Run the local xDS proxy (xds-proxy.ts) on xdsServerUri. Default: on, unless xdsServerUri is configured. */
    xdsProxy: boolean;
  };
  interception: {
    mode: InterceptionMode;
    proxyUid: number;
    proxyGid?: number;
    /** `*` or CIDRs. */
    includeOutboundCidrs: string[];
    excludeOutboundCidrs: string[];
    /** `*` or port numbers; defaults to the inbound ports' targetPorts. */
    includeInboundPorts: string[];
    excludeInboundPorts: number[];
    excludeOutboundPorts: number[];
  };
  /** The DNS proxy (Istio's DNS proxying): mesh names from the control plane, the rest upstream. */
  dns: {
    enabled: boolean;
    address: string;
    /** 0 lets the OS choose (tests); capture needs a fixed port. */
    port: number;
    /** Where unknown names go; undefined = the nameservers of /etc/resolv.conf, read at start. */
    upstreams?: string[];
    /** Redirect the VM's DNS traffic (port 53, UDP and TCP) to the proxy with iptables. */
    capture: boolean;
    /** Which resolvers' traffic is captured: `*` (any destination) or IPs; undefined = resolv.conf's nameservers. */
    captureServers?: string[];
  };
  /** Gateways (proxy.kind gateway): TLS credentials for Gateway servers' credentialName, served over the agent's SDS socket. */
  gateway: {
    /** Holds NAME/cert.pem, NAME/key.pem and optionally NAME/ca.pem for each credentialName. */
    credentialsDir: string;
  };
  probe?: ProbeConfig;
  autoRegisterGroup?: string;
  certificates: { ttlMs?: number; minRetryMs: number; maxRetryMs: number };
  status: { host: string; port: number; readinessHost: string; readinessPort: number };
}

// ---- schema ----

const str: FieldSchema = { type: "string", nonEmpty: true };
const port: FieldSchema = { type: "int", min: 1, max: 65535 };
const portOrZero: FieldSchema = { type: "int", min: 0, max: 65535 };
const seconds: FieldSchema = { type: "int", min: 0, max: 86400 };

export const AGENT_SCHEMA: ObjectSchema = {
  type: "object",
  fields: {
    name: str,
    namespace: str,
    serviceAccount: str,
    labels: { type: "stringMap" },
    address: str,
    ports: {
      type: "list",
      of: { type: "object", fields: { name: str, port, protocol: str, targetPort: port } },
    },
    trustDomain: str,
    controlPlane: { type: "object", fields: { address: str, san: str, tokenFile: str, rootCertFile: str } },
    output: {
      type: "object",
      fields: { dir: str, keyFile: str, certChainFile: str, rootCertFile: str, envoyBootstrapFile: str, grpcBootstrapFile: str },
    },
    proxy: {
      type: "object",
      fields: {
        kind: { type: "enum", values: ["envoy", "grpc", "both", "gateway"] },
        xdsTransport: { type: "enum", values: ["GRPC", "DELTA_GRPC"] },
        envoyBinary: str,
        drainDuration: { type: "duration" },
        parentShutdownDuration: { type: "duration" },
        logLevel: { type: "enum", values: ["trace", "debug", "info", "warning", "warn", "error", "critical", "off"] },
        concurrency: { type: "int", min: 0, max: 1024 },
        adminPort: portOrZero,
      },
    },
    grpc: {
      type: "object",
      fields: {
        xdsServerUri: str,
        channelCreds: { type: "enum", values: ["insecure", "google_default"] },
        certRefreshInterval: { type: "duration" },
        xdsProxy: { type: "bool" },
      },
    },
    interception: {
      type: "object",
      fields: {
        mode: { type: "enum", values: ["REDIRECT", "NONE"] },
        proxyUid: { type: "int", min: 0, max: 4294967294 },
        proxyGid: { type: "int", min: 0, max: 4294967294 },
        includeOutboundCidrs: { type: "stringList" },
        excludeOutboundCidrs: { type: "stringList" },
        includeInboundPorts: { type: "stringList" },
        excludeInboundPorts: { type: "intList", min: 1, max: 65535 },
        excludeOutboundPorts: { type: "intList", min: 1, max: 65535 },
      },
    },
    dns: {
      type: "object",
      fields: {
        enabled: { type: "bool" },
        address: str,
        port: portOrZero,
        upstreams: { type: "stringList" },
        capture: { type: "bool" },
        captureServers: { type: "stringList" },
      },
    },
    gateway: { type: "object", fields: { credentialsDir: str } },
    probe: {
      type: "object",
      fields: {
        httpGet: {
          type: "object",
          fields: {
            path: str,
            port,
            host: str,
            scheme: { type: "enum", values: ["HTTP", "HTTPS"] },
            httpHeaders: { type: "list", of: { type: "object", fields: { name: str, value: { type: "string" } } } },
          },
        },
        tcpSocket: { type: "object", fields: { port, host: str } },
        exec: { type: "object", fields: { command: { type: "stringList" } } },
        initialDelaySeconds: seconds,
        periodSeconds: { type: "int", min: 1, max: 86400 },
        timeoutSeconds: { type: "int", min: 1, max: 86400 },
        successThreshold: { type: "int", min: 1, max: 1000 },
        failureThreshold: { type: "int", min: 1, max: 1000 },
      },
    },
    autoRegisterGroup: str,
    certificates: { type: "object", fields: { ttl: { type: "duration" }, minRetry: { type: "duration" }, maxRetry: { type: "duration" } } },
    status: { type: "object", fields: { address: str, readinessAddress: str } },
  },
};

export const ENV_PREFIX = "VMPILOT_AGENT_";

/** Every supported environment override: VMPILOT_AGENT_<PATH> -> dotted config path. */
export function environmentOverrides(): Map<string, { path: string; schema: FieldSchema }> {
  const m = new Map<string, { path: string; schema: FieldSchema }>();
  for (const leaf of leaves(AGENT_SCHEMA)) m.set(ENV_PREFIX + envSuffix(leaf.path), leaf);
  return m;
}

function setPath(obj: Record<string, unknown>, dotted: string, value: unknown): void {
  const segs = dotted.split(".");
  let cur = obj;
  for (const s of segs.slice(0, -1)) {
    if (typeof cur[s] !== "object" || cur[s] === null) cur[s] = {};
    cur = cur[s] as Record<string, unknown>;
  }
  cur[segs.at(-1)!] = value;
}

/** Applies VMPILOT_AGENT_* variables; lists are comma-separated, maps `k=v,k=v`. Unknown names are errors. */
function applyEnvironment(raw: Record<string, unknown>, env: NodeJS.ProcessEnv, problems: Problem[]): void {
  const table = environmentOverrides();
  for (const [name, value] of Object.entries(env)) {
    if (!name.startsWith(ENV_PREFIX) || value === undefined) continue;
    const leaf = table.get(name);
    const where = { file: `$${name}`, line: 1, column: 1 };
    if (!leaf) {
      problems.push({ ...where, field: name, message: `unknown environment override ${name} (known: ${[...table.keys()].join(", ")})` });
      continue;
    }
    const parts = value.split(",").map((s) => s.trim()).filter(Boolean);
    if (leaf.schema.type === "stringList") setPath(raw, leaf.path, parts);
    else if (leaf.schema.type === "intList") {
      const ints = parts.map((p) => checkScalar({ type: "int", min: 1, max: 65535 }, p, leaf.path));
      const bad = ints.find((r) => r.error);
      if (bad) problems.push({ ...where, field: leaf.path, message: `${name}: ${bad.error}` });
      else setPath(raw, leaf.path, ints.map((r) => r.value));
    } else if (leaf.schema.type === "stringMap") {
      const map: Record<string, string> = {};
      for (const p of parts) {
        const eq = p.indexOf("=");
        if (eq <= 0) problems.push({ ...where, field: leaf.path, message: `${name}: expected k=v,k=v, got ${JSON.stringify(p)}` });
        else map[p.slice(0, eq)] = p.slice(eq + 1);
      }
      setPath(raw, leaf.path, map);
    } else {
      const r = checkScalar(leaf.schema, value, leaf.path);
      if (r.error) problems.push({ ...where, field: leaf.path, message: `${name}: ${r.error}` });
      else setPath(raw, leaf.path, r.value);
    }
  }
}

// ---- resolution: defaults and cross-field rules ----

export const DEFAULT_CONTROL_PLANE_SAN = (trustDomain: string): string => spiffeId(trustDomain, "vmpilot-system", "vmpilot");
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const SA_NAME = /^[A-Za-z0-9._-]+$/;
/** Istio's port protocols (case-insensitive, as Istio accepts them). */
const PROTOCOLS = ["HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "MONGO", "REDIS", "MYSQL", "TCP", "TLS", "UDP"];

/** "host:port" or "[v6]:port" -> parts; undefined if malformed. */
export function splitHostPort(s: string): { host: string; port: number } | undefined {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(s) ?? /^([^:[\]]+):(\d+)$/.exec(s);
  if (!m) return undefined;
  const p = Number(m[2]);
  if (!Number.isInteger(p) || p < 0 || p > 65535) return undefined;
  return { host: m[1]!, port: p };
}

export function isCidr(s: string): boolean {
  const [ip, bits, extra] = s.split("/");
  if (extra !== undefined || ip === undefined) return false;
  const family = net.isIP(ip);
  if (family === 0) return false;
  if (bits === undefined) return true;
  if (!/^\d+$/.test(bits)) return false;
  return Number(bits) <= (family === 4 ? 32 : 128);
}

type Raw = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

function resolve(raw: Raw, source: string | undefined, problems: Problem[], positions: Map<string, { line: number; column: number }>): AgentConfig | undefined {
  const file = source ?? "<environment>";
  const problem = (field: string, message: string) => {
    const pos = positions.get(field) ?? { line: 1, column: 1 };
    problems.push({ file, ...pos, field, message });
  };
  for (const req of ["name", "namespace", "serviceAccount", "address"] as const) {
    if (raw[req] === undefined) problem(req, `${req} is required (or set ${ENV_PREFIX}${envSuffix(req)})`);
  }
  if (raw.name !== undefined && !DNS_SUBDOMAIN.test(raw.name)) problem("name", `name ${JSON.stringify(raw.name)} must be a DNS subdomain (lowercase letters, digits, '-', '.')`);
  if (raw.namespace !== undefined && !DNS_LABEL.test(raw.namespace)) problem("namespace", `namespace ${JSON.stringify(raw.namespace)} must be a DNS label`);
  if (raw.serviceAccount !== undefined && !SA_NAME.test(raw.serviceAccount)) problem("serviceAccount", `serviceAccount ${JSON.stringify(raw.serviceAccount)} may only contain letters, digits, '.', '_', '-'`);
  if (raw.address !== undefined && net.isIP(raw.address) === 0) problem("address", `address ${JSON.stringify(raw.address)} must be an IP literal (the instance IP other workloads reach)`);
  const trustDomain: string = raw.trustDomain ?? "cluster.local";
  if (!DNS_SUBDOMAIN.test(trustDomain)) problem("trustDomain", `trustDomain ${JSON.stringify(trustDomain)} must be a DNS name`);

  const cp: Raw = raw.controlPlane ?? {};
  const cpAddr = cp.address === undefined ? undefined : splitHostPort(cp.address);
  if (cp.address === undefined) problem("controlPlane", `controlPlane.address is required (host:port of the control plane's secure port, usually 15012)`);
  else if (!cpAddr || cpAddr.port === 0) problem("controlPlane.address", `controlPlane.address ${JSON.stringify(cp.address)} must be host:port`);
  if (cp.tokenFile === undefined) problem("controlPlane", "controlPlane.tokenFile is required (the bootstrap token from `vmpilot token create`)");
  if (cp.rootCertFile === undefined) problem("controlPlane", "controlPlane.rootCertFile is required (the mesh root certificate, distributed out of band)");

  const ports: InboundPort[] = [];
  const seenPorts = new Set<number>();
  const seenNames = new Set<string>();
  (raw.ports as Raw[] | undefined)?.forEach((p, i) => {
    const field = `ports[${i}]`;
    if (p.name === undefined || p.port === undefined) problem(field, `${field}: name and port are required`);
    else if (seenPorts.has(p.port)) problem(`${field}.port`, `${field}.port: ${p.port} is listed twice`);
    else if (seenNames.has(p.name)) problem(`${field}.name`, `${field}.name: ${JSON.stringify(p.name)} is used by another port`);
    else if (p.protocol !== undefined && !PROTOCOLS.includes(p.protocol.toUpperCase())) problem(`${field}.protocol`, `${field}.protocol: ${JSON.stringify(p.protocol)} is not one of ${PROTOCOLS.join(", ")}`);
    else {
      seenPorts.add(p.port);
      seenNames.add(p.name);
      ports.push({ name: p.name, port: p.port, protocol: (p.protocol ?? "TCP").toUpperCase(), targetPort: p.targetPort ?? p.port });
    }
  });

  const proxy: Raw = raw.proxy ?? {};
  const kind: ProxyKindConfig = proxy.kind ?? "envoy";
  const out: Raw = raw.output ?? {};
  const dir = path.resolve(out.dir ?? "/var/lib/vmpilot/agent");
  const inDir = (f: string | undefined, def: string) => path.resolve(dir, f ?? def);

  const icp: Raw = raw.interception ?? {};
  const mode: InterceptionMode = icp.mode ?? (kind === "envoy" || kind === "both" ? "REDIRECT" : "NONE");
  if (mode === "REDIRECT" && (kind === "grpc" || kind === "gateway")) problem("interception.mode", `interception.mode REDIRECT needs a sidecar Envoy (proxy.kind envoy or both), not ${kind}`);
  const cidrField = (name: string, list: string[] | undefined, def: string[]): string[] => {
    const v = list ?? def;
    v.forEach((c, i) => {
      if (c !== "*" && !isCidr(c)) problem(`interception.${name}[${i}]`, `interception.${name}[${i}]: ${JSON.stringify(c)} is not a CIDR`);
    });
    return v;
  };
  const includeOutboundCidrs = cidrField("includeOutboundCidrs", icp.includeOutboundCidrs, ["*"]);
  const excludeOutboundCidrs = cidrField("excludeOutboundCidrs", icp.excludeOutboundCidrs, []);
  const includeInbound: string[] = icp.includeInboundPorts ?? ports.map((p) => String(p.targetPort));
  includeInbound.forEach((p, i) => {
    if (p !== "*" && !(/^\d+$/.test(p) && Number(p) >= 1 && Number(p) <= 65535)) problem(`interception.includeInboundPorts[${i}]`, `interception.includeInboundPorts[${i}]: ${JSON.stringify(p)} is neither "*" nor a port`);
  });

  const dnsRaw: Raw = raw.dns ?? {};
  const dnsEnabled: boolean = dnsRaw.enabled ?? false;
  const dnsAddress: string = dnsRaw.address ?? "127.0.0.1";
  const dnsPort: number = dnsRaw.port ?? 15053;
  if (net.isIP(dnsAddress) === 0) problem("dns.address", `dns.address ${JSON.stringify(dnsAddress)} must be an IP literal`);
  (dnsRaw.upstreams as string[] | undefined)?.forEach((u, i) => {
    try {
      parseUpstream(u);
    } catch (e) {
      problem(`dns.upstreams[${i}]`, `dns.upstreams[${i}]: ${(e as Error).message}`);
    }
  });
  (dnsRaw.captureServers as string[] | undefined)?.forEach((a, i) => {
    if (a !== "*" && net.isIP(a) === 0) problem(`dns.captureServers[${i}]`, `dns.captureServers[${i}]: ${JSON.stringify(a)} is neither "*" nor an IP address`);
  });
  // Istio's default: capture DNS whenever the proxy answers it and traffic is captured anyway.
  const dnsCapture: boolean = dnsRaw.capture ?? (dnsEnabled && mode === "REDIRECT");
  if (dnsCapture) {
    const at = dnsRaw.capture !== undefined ? "dns.capture" : "dns";
    if (!dnsEnabled) problem(at, "dns.capture redirects port 53 to the agent's DNS proxy, which is off: set dns.enabled: true");
    // iptables REDIRECT sends locally generated packets to 127.0.0.1 (the loopback address), on a fixed port.
    else if (dnsAddress !== "127.0.0.1" && dnsAddress !== "0.0.0.0") problem("dns.address", `dns.address ${dnsAddress}: with dns.capture the proxy must listen on 127.0.0.1 (or 0.0.0.0), where iptables REDIRECT delivers`);
    else if (dnsPort === 0) problem("dns.port", "dns.port 0 (any port) cannot be the target of the capture rules; pick a port (default 15053)");
    if ((icp.excludeOutboundPorts as number[] | undefined)?.includes(53)) problem("interception.excludeOutboundPorts", "interception.excludeOutboundPorts lists 53 while dns.capture is on: decide whether DNS is captured (set dns.capture: false to let it bypass the agent)");
  }

  let probe: ProbeConfig | undefined;
  if (raw.probe) {
    const p: Raw = raw.probe;
    const handlers = ["httpGet", "tcpSocket", "exec"].filter((k) => p[k] !== undefined);
    if (handlers.length !== 1) problem("probe", `probe: set exactly one of httpGet, tcpSocket, exec (found ${handlers.length ? handlers.join(", ") : "none"})`);
    if (p.httpGet && p.httpGet.port === undefined) problem("probe.httpGet", "probe.httpGet.port is required");
    if (p.tcpSocket && p.tcpSocket.port === undefined) problem("probe.tcpSocket", "probe.tcpSocket.port is required");
    if (p.exec && !(p.exec.command?.length > 0)) problem("probe.exec", "probe.exec.command must list the program and its arguments");
    probe = {
      initialDelayMs: (p.initialDelaySeconds ?? 0) * 1000,
      periodMs: (p.periodSeconds ?? 10) * 1000,
      timeoutMs: (p.timeoutSeconds ?? 1) * 1000,
      successThreshold: p.successThreshold ?? 1,
      failureThreshold: p.failureThreshold ?? 3,
    };
    if (p.httpGet) {
      probe.httpGet = {
        path: p.httpGet.path ?? "/",
        port: p.httpGet.port,
        host: p.httpGet.host ?? "127.0.0.1",
        scheme: p.httpGet.scheme ?? "HTTP",
        httpHeaders: p.httpGet.httpHeaders ?? [],
      };
    }
    if (p.tcpSocket) probe.tcpSocket = { port: p.tcpSocket.port, host: p.tcpSocket.host ?? "127.0.0.1" };
    if (p.exec) probe.exec = { command: p.exec.command ?? [] };
  }

  const st: Raw = raw.status ?? {};
  const statusAddr = splitHostPort(st.address ?? "0.0.0.0:15020");
  const readyAddr = splitHostPort(st.readinessAddress ?? "0.0.0.0:15021");
  if (!statusAddr) problem("status.address", `status.address ${JSON.stringify(st.address)} must be host:port`);
  if (!readyAddr) problem("status.readinessAddress", `status.readinessAddress ${JSON.stringify(st.readinessAddress)} must be host:port`);

  const certs: Raw = raw.certificates ?? {};
  const grpc: Raw = raw.grpc ?? {};
  if (problems.length > 0 || !cpAddr || !statusAddr || !readyAddr) return undefined;

  const cfg: AgentConfig = {
    name: raw.name,
    namespace: raw.namespace,
    serviceAccount: raw.serviceAccount,
    labels: raw.labels ?? {},
    address: raw.address,
    ports,
    trustDomain,
    identity: spiffeId(trustDomain, raw.namespace, raw.serviceAccount),
    controlPlane: {
      host: cpAddr.host,
      port: cpAddr.port,
      san: cp.san ?? DEFAULT_CONTROL_PLANE_SAN(trustDomain),
      tokenFile: path.resolve(cp.tokenFile),
      rootCertFile: path.resolve(cp.rootCertFile),
    },
    output: {
      dir,
      keyFile: inDir(out.keyFile, "key.pem"),
      certChainFile: inDir(out.certChainFile, "cert-chain.pem"),
      rootCertFile: inDir(out.rootCertFile, "root-cert.pem"),
      envoyBootstrapFile: inDir(out.envoyBootstrapFile, "envoy-bootstrap.json"),
      grpcBootstrapFile: inDir(out.grpcBootstrapFile, "grpc-bootstrap.json"),
      sdsDefaultFile: path.join(dir, "default.sds.yaml"),
      sdsRootFile: path.join(dir, "ROOTCA.sds.yaml"),
      envoyAdminAddressFile: path.join(dir, "envoy-admin-address"),
      credentialSdsDir: path.join(dir, "credentials"),
    },
    proxy: {
      kind,
      xdsTransport: proxy.xdsTransport ?? "GRPC",
      envoyBinary: proxy.envoyBinary ?? "envoy",
      drainMs: proxy.drainDuration ?? 45_000,
      parentShutdownMs: proxy.parentShutdownDuration ?? 60_000,
      logLevel: proxy.logLevel ?? "warning",
      ...(proxy.concurrency !== undefined ? { concurrency: proxy.concurrency } : {}),
      adminPort: proxy.adminPort ?? 15000,
    },
    grpc: {
      xdsServerUri: grpc.xdsServerUri ?? `unix://${path.join(dir, "xds.sock")}`,
      channelCreds: grpc.channelCreds ?? "insecure",
      certRefreshMs: grpc.certRefreshInterval ?? 60_000,
      xdsProxy: grpc.xdsProxy ?? grpc.xdsServerUri === undefined,
    },
    interception: {
      mode,
      proxyUid: icp.proxyUid ?? 1337,
      ...(icp.proxyGid !== undefined ? { proxyGid: icp.proxyGid } : {}),
      includeOutboundCidrs,
      excludeOutboundCidrs,
      includeInboundPorts: includeInbound,
      excludeInboundPorts: icp.excludeInboundPorts ?? [],
      excludeOutboundPorts: icp.excludeOutboundPorts ?? [],
    },
    dns: {
      enabled: dnsEnabled,
      address: dnsAddress,
      port: dnsPort,
      ...(dnsRaw.upstreams !== undefined ? { upstreams: dnsRaw.upstreams } : {}),
      capture: dnsCapture,
      ...(dnsRaw.captureServers !== undefined ? { captureServers: dnsRaw.captureServers } : {}),
    },
    gateway: { credentialsDir: path.resolve(raw.gateway?.credentialsDir ?? "/etc/vmpilot/credentials") },
    ...(probe ? { probe } : {}),
    ...(raw.autoRegisterGroup !== undefined ? { autoRegisterGroup: raw.autoRegisterGroup } : {}),
    certificates: {
      ...(certs.ttl !== undefined ? { ttlMs: certs.ttl } : {}),
      minRetryMs: certs.minRetry ?? 1000,
      maxRetryMs: certs.maxRetry ?? 60_000,
    },
    status: { host: statusAddr.host, port: statusAddr.port, readinessHost: readyAddr.host, readinessPort: readyAddr.port },
  };
  if (source) cfg.source = source;
  return cfg;
}

/** Key path -> position of its key in the YAML, for cross-field messages. */
function keyPositions(text: string): Map<string, { line: number; column: number }> {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines });
  const out = new Map<string, { line: number; column: number }>();
  const visit = (node: unknown, prefix: string) => {
    const n = node as { items?: { key?: { value?: unknown; range?: number[] }; value?: unknown }[] } | null;
    if (!n || !Array.isArray(n.items)) return;
    n.items.forEach((item, i) => {
      const isPair = item && typeof item === "object" && "key" in item;
      const key = isPair ? String(item.key?.value) : `[${i}]`;
      const p = isPair ? (prefix ? `${prefix}.${key}` : key) : `${prefix}${key}`;
      const offset = isPair ? item.key?.range?.[0] : (item as { range?: number[] }).range?.[0];
      if (offset !== undefined) {
        const pos = lines.linePos(offset);
        out.set(p, { line: pos.line, column: pos.col });
      }
      visit(isPair ? item.value : item, p);
    });
  };
  visit(doc.contents, "");
  return out;
}

/** Parses and validates config text; throws AgentConfigError listing every problem. */
export function parseAgentConfig(text: string, file: string, env: NodeJS.ProcessEnv = {}): AgentConfig {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, uniqueKeys: true, prettyErrors: false });
  const { value, problems } = readDocument(doc, lines, file, AGENT_SCHEMA);
  applyEnvironment(value, env, problems);
  if (problems.length > 0) throw new AgentConfigError(problems);
  const cfg = resolve(value, file, problems, keyPositions(text));
  if (!cfg) throw new AgentConfigError(problems);
  return cfg;
}

/** `host:port` (IPv6 in brackets) of the control plane's secure port, as gRPC targets spell it. */
export function controlPlaneTarget(cfg: AgentConfig): string {
  const h = cfg.controlPlane.host;
  return `${h.includes(":") ? `[${h}]` : h}:${cfg.controlPlane.port}`;
}

/** Reads the config file (when given) and applies the process environment. */
export function loadAgentConfig(file: string | undefined, env: NodeJS.ProcessEnv = process.env): AgentConfig {
  const text = file ? fs.readFileSync(file, "utf8") : "";
  return parseAgentConfig(text, file ?? "<environment>", env);
}
