// Gateway (servers of an ingress/egress gateway) and Sidecar (a proxy's own listeners and egress scope).
import type { GatewaySpec, Server, SidecarSpec } from "../../api.js";
import { bool, list, obj, req, str, type RuleContext } from "../schema.js";
import * as syn from "../syntax.js";
import { labels, namespacedHost, port, workloadSelector } from "./common.js";

const serverTls = () =>
  obj(
    {
      httpsRedirect: bool(),
      mode: str({ enum: ["PASSTHROUGH", "SIMPLE", "MUTUAL", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL", "OPTIONAL_MUTUAL"] }),
      serverCertificate: str({ nonEmpty: true }),
      privateKey: str({ nonEmpty: true }),
      caCertificates: str({ nonEmpty: true }),
      credentialName: str({ nonEmpty: true }),
      subjectAltNames: list(str({ nonEmpty: true })),
      minProtocolVersion: str({ enum: ["TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3"] }),
      maxProtocolVersion: str({ enum: ["TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3"] }),
    },
    {
      unsupported: ["cipherSuites", "verifyCertificateSpki", "verifyCertificateHash"],
      rule: (t, r) => {
        if ((t.mode === "SIMPLE" || t.mode === "MUTUAL" || t.mode === "OPTIONAL_MUTUAL") && t.credentialName === undefined) {
          if (t.serverCertificate === undefined || t.privateKey === undefined) {
            r.error(t, "mode", `tls mode ${t.mode} needs serverCertificate and privateKey (or credentialName)`);
          }
        }
        if ((t.mode === "MUTUAL" || t.mode === "OPTIONAL_MUTUAL") && t.credentialName === undefined && t.caCertificates === undefined) {
          r.error(t, "mode", `tls mode ${t.mode} needs caCertificates (or credentialName) to verify clients`);
        }
      },
    },
  );

const server = () =>
  obj(
    {
      port: req(port()),
      bind: str({ check: (s) => (s.startsWith("unix://") ? syn.unixAddress(s) : syn.ipAddress(s)) }),
      hosts: req(list(str({ check: (s) => namespacedHost(s, { requireNamespace: false, allowTilde: false }) }), { nonEmpty: true })),
      tls: serverTls(),
      name: str({ check: syn.dns1123Label }),
    },
    {
      rule: (raw, r) => {
        const s = raw as Server;
        const p = s.port.protocol;
        if ((p === "HTTPS" || p === "TLS") && !s.tls) r.error(s, undefined, `server on ${p} port ${s.port.number} needs 'tls' settings`);
        if (s.tls?.httpsRedirect && p !== "HTTP") r.error(s.tls, "httpsRedirect", "tls.httpsRedirect only applies to HTTP servers", { key: true });
      },
    },
  );

export const gatewaySpec = () =>
  obj(
    { servers: req(list(server(), { nonEmpty: true })), selector: labels() },
    { rule: (spec, r) => checkGateway(spec as GatewaySpec, r) },
  );

function checkGateway(g: GatewaySpec, r: RuleContext): void {
  const names = new Map<string, number>();
  g.servers.forEach((s, i) => {
    if (s.name === undefined) return;
    const first = names.get(s.name);
    if (first !== undefined) r.error(s, "name", `spec.servers[${i}].name: '${s.name}' is already used by spec.servers[${first}]`);
    else names.set(s.name, i);
  });
}

const captureMode = () => str({ enum: ["DEFAULT", "IPTABLES", "NONE"] });

export const sidecarSpec = () =>
  obj(
    {
      workloadSelector: workloadSelector(),
      ingress: list(
        obj({
          port: req(port()),
          bind: str({ check: syn.ipAddress }),
          captureMode: captureMode(),
          defaultEndpoint: str({
            check: (s) =>
              /^(127\.0\.0\.1|0\.0\.0\.0|\[::1\]|\[::\]):\d{1,5}$/.test(s) || /^unix:\/\/.+/.test(s)
                ? undefined
                : `defaultEndpoint '${s}' must be 127.0.0.1:PORT, 0.0.0.0:PORT or unix:///path`,
          }),
        }, { unsupported: ["tls", "connectionPool"] }),
      ),
      egress: list(
        obj({
          port: port(),
          bind: str({ check: (s) => (s.startsWith("unix://") ? syn.unixAddress(s) : syn.ipAddress(s)) }),
          captureMode: captureMode(),
          hosts: req(list(str({ check: (s) => namespacedHost(s, { requireNamespace: true, allowTilde: true }) }), { nonEmpty: true })),
        }),
      ),
      outboundTrafficPolicy: obj({ mode: req(str({ enum: ["REGISTRY_ONLY", "ALLOW_ANY"] })) }, { unsupported: ["egressProxy"] }),
    },
    { rule: (spec, r) => checkSidecar(spec as SidecarSpec, r) },
  );

function checkSidecar(s: SidecarSpec, r: RuleContext): void {
  const catchAll = (s.egress ?? []).map((e, i) => [e, i] as const).filter(([e]) => e.port === undefined);
  if (catchAll.length > 1) r.error(s.egress!, catchAll[1]![1], "spec.egress: only one egress listener may omit 'port' (the catch-all)");
  const ports = new Map<number, number>();
  (s.ingress ?? []).forEach((l, i) => {
    const first = ports.get(l.port.number);
    if (first !== undefined) r.error(l.port, "number", `spec.ingress[${i}]: port ${l.port.number} is already used by spec.ingress[${first}]`);
    else ports.set(l.port.number, i);
  });
}
