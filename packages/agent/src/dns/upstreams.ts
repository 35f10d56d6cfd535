// Upstream resolvers: where names that are not in the mesh's name table go. By default the VM's own
// resolvers from /etc/resolv.conf, read once at start (as Istio's agent does).
import fs from "node:fs";
import { isIP } from "node:net";

export interface Upstream {
  host: string;
  port: number;
}

/** `1.2.3.4`, `1.2.3.4:5353`, `::1`, `[::1]:5353`. */
export function parseUpstream(text: string): Upstream {
  const t = text.trim();
  let host: string;
  let port = 53;
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(t);
  if (bracketed) {
    host = bracketed[1]!;
    if (bracketed[2]) port = Number(bracketed[2]);
  } else if (isIP(t) === 6) {
    host = t;
  } else {
    const m = /^([^:]+)(?::(\d+))?$/.exec(t);
    if (!m) throw new Error(`invalid DNS upstream '${text}' (want IP or IP:PORT)`);
    host = m[1]!;
    if (m[2]) port = Number(m[2]);
  }
  if (isIP(host) === 0) throw new Error(`invalid DNS upstream '${text}': '${host}' is not an IP address`);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`invalid DNS upstream '${text}': bad port`);
  return { host, port };
}

export function formatUpstream(u: Upstream): string {
  return isIP(u.host) === 6 ? `[${u.host}]:${u.port}` : `${u.host}:${u.port}`;
}

/** The `nameserver` lines of a resolv.conf, in order. */
export function parseResolvConf(text: string): Upstream[] {
  const out: Upstream[] = [];
  for (const raw of text.split("\n")) {
    const line = raw.replace(/[#;].*$/, "").trim();
    const m = /^nameserver\s+(\S+)/.exec(line);
    if (!m) continue;
    // A link-local server needs its zone (`fe80::1%eth0`) to be reachable at all: keep it as written.
    const host = m[1]!;
    if (isIP(host) !== 0) out.push({ host, port: 53 });
  }
  return out;
}

/** The VM's resolvers; none when the file is missing or lists none (the proxy then refuses unknown names). */
export function systemUpstreams(file = "/etc/resolv.conf"): Upstream[] {
  try {
    return parseResolvConf(fs.readFileSync(file, "utf8"));
  } catch {
    return [];
  }
}
