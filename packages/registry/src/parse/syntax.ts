// Lexical checks shared by the kind schemas: DNS names, hosts, IPs, labels, localities, regexes.
// Each returns an error message, or undefined when the value is fine.
import { isIP } from "node:net";

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
// Istio accepts upper case in host names (DNS is case-insensitive); Kubernetes object names it does not.
const HOST_LABEL = /^[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?$/;
const LABEL_NAME = /^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$/;

export function dns1123Label(s: string): string | undefined {
  if (s.length > 63) return `'${s}' is longer than 63 characters`;
  if (!DNS1123_LABEL.test(s)) return `'${s}' is not a DNS-1123 label (lower case letters, digits and '-', starting and ending with a letter or digit)`;
  return undefined;
}

export function dns1123Subdomain(s: string): string | undefined {
  if (s.length > 253) return `'${s}' is longer than 253 characters`;
  if (!s.split(".").every((l) => DNS1123_LABEL.test(l) && l.length <= 63)) {
    return `'${s}' is not a DNS-1123 subdomain (dot-separated lower case labels)`;
  }
  return undefined;
}

/** A DNS name: dot-separated labels, no trailing dot, at most 253 characters. */
export function hostname(s: string): string | undefined {
  if (s.length === 0) return "host must not be empty";
  if (s.length > 253) return `host '${truncate(s)}' is longer than 253 characters`;
  const labels = s.split(".");
  const bad = labels.find((l) => l.length > 63 || !HOST_LABEL.test(l));
  if (bad !== undefined) return `'${truncate(s)}' is not a valid host name${bad === "" ? " (empty label)" : ` (bad label '${truncate(bad)}')`}`;
  return undefined;
}

/** A host name, optionally with a `*.` wildcard prefix; a bare `*` only when `allowStar`. */
export function wildcardHost(s: string, allowStar = false): string | undefined {
  if (s === "*") return allowStar ? undefined : "the bare wildcard '*' is not allowed here; use a '*.domain' suffix wildcard";
  if (s.startsWith("*.")) return hostname(s.slice(2));
  if (s.includes("*")) return `'${truncate(s)}': a wildcard is only allowed as a leading '*.' (e.g. '*.example.com')`;
  return hostname(s);
}

export function ipAddress(s: string): string | undefined {
  return isIP(s) ? undefined : `'${truncate(s)}' is not an IP address`;
}

export function ipOrCidr(s: string): string | undefined {
  if (isIP(s)) return undefined;
  const m = /^([^/]+)\/(\d{1,3})$/.exec(s);
  if (m) {
    const family = isIP(m[1]!);
    const bits = Number(m[2]);
    if (family !== 0 && bits <= (family === 4 ? 32 : 128)) return undefined;
    if (family !== 0) return `'${s}': prefix length must be at most ${family === 4 ? 32 : 128}`;
  }
  if (s.startsWith("unix://")) return `'${truncate(s)}': unix domain socket addresses are not allowed here`;
  return `'${truncate(s)}' is not an IP address or CIDR block`;
}

export function isUnixAddress(s: string): boolean {
  return s.startsWith("unix://");
}

/** `unix:///absolute/path` (Istio also allows abstract sockets `unix://@name`). */
export function unixAddress(s: string): string | undefined {
  const path = s.slice("unix://".length);
  if (path.startsWith("/") && path.length > 1) return undefined;
  if (path.startsWith("@") && path.length > 1) return undefined;
  return `'${truncate(s)}': a unix address needs an absolute path, e.g. 'unix:///var/run/app.sock'`;
}

/** Endpoint address: IP, host name, or unix socket. */
export function endpointAddress(s: string): string | undefined {
  if (isIP(s)) return undefined;
  if (isUnixAddress(s)) return unixAddress(s);
  if (hostname(s) === undefined) return undefined;
  return `'${truncate(s)}' is not an IP address, host name or 'unix:///path'`;
}

/** Kubernetes label key: optional DNS-subdomain prefix and `/`, then a name of at most 63 characters. */
export function labelKey(k: string): string | undefined {
  const slash = k.lastIndexOf("/");
  const prefix = slash >= 0 ? k.slice(0, slash) : undefined;
  const name = slash >= 0 ? k.slice(slash + 1) : k;
  if (prefix !== undefined && dns1123Subdomain(prefix)) return `label key '${truncate(k)}' has an invalid prefix '${truncate(prefix)}'`;
  if (name.length === 0 || name.length > 63 || !LABEL_NAME.test(name)) {
    return `invalid label key '${truncate(k)}' (at most 63 letters, digits, '-', '_', '.', starting and ending with a letter or digit)`;
  }
  return undefined;
}

export function labelValue(v: string): string | undefined {
  if (v.length > 63 || !LABEL_NAME.test(v)) {
    return `invalid label value '${truncate(v)}' (at most 63 letters, digits, '-', '_', '.', starting and ending with a letter or digit)`;
  }
  return undefined;
}

/** `region`, `region/zone` or `region/zone/subzone`; no empty or wildcard segments. */
export function locality(s: string): string | undefined {
  const parts = s.split("/");
  if (parts.length > 3 || parts.some((p) => p.length === 0 || /[\s*]/.test(p))) {
    return `invalid locality '${truncate(s)}' (expected 'region/zone/subzone' without empty segments or wildcards)`;
  }
  return undefined;
}

/** exportTo entry: `.`, `*`, or a namespace name. */
export function exportToEntry(s: string): string | undefined {
  if (s === "." || s === "*") return undefined;
  const msg = dns1123Label(s);
  return msg ? `invalid exportTo entry: ${msg}; use '.', '*' or a namespace name` : undefined;
}

/**
 * Envoy evaluates regexes with RE2. We cannot run RE2 here, so: reject the constructs RE2 does not have
 * (lookaround, backreferences, atomic groups, possessive quantifiers), translate RE2-only syntax JS lacks
 * (leading flag groups, `(?P<name>`), and require the rest to compile as a JS RegExp.
 */
export function re2Regex(s: string): string | undefined {
  if (s.length > 1024) return "regex is longer than 1024 characters";
  if (/\(\?<?[=!]/.test(s)) return `regex '${truncate(s)}' uses a lookaround, which RE2 (Envoy's regex engine) does not support`;
  if (/\(\?>/.test(s)) return `regex '${truncate(s)}' uses an atomic group, which RE2 does not support`;
  if (/(^|[^\\])(\\\\)*\\[1-9]/.test(s) || /\\k</.test(s)) return `regex '${truncate(s)}' uses a backreference, which RE2 does not support`;
  if (/[*+?}]\+/.test(s.replace(/\\./g, ""))) return `regex '${truncate(s)}' uses a possessive quantifier, which RE2 does not support`;
  const js = s.replace(/^\(\?[imsU]+\)/, "").replace(/\(\?P</g, "(?<");
  try {
    new RegExp(js);
  } catch (e) {
    return `invalid regex '${truncate(s)}': ${(e as Error).message.replace(/^Invalid regular expression: /, "")}`;
  }
  return undefined;
}

/** The known name closest to `input` (edit distance, or same spelling ignoring case), if close enough to be a typo. */
export function suggest(input: string, known: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const k of known) {
    if (k.toLowerCase() === input.toLowerCase()) return k;
    const d = editDistance(input, k);
    if (d < bestDistance) {
      bestDistance = d;
      best = k;
    }
  }
  const limit = Math.max(1, Math.min(3, Math.floor(input.length / 3)));
  return bestDistance <= limit ? best : undefined;
}

/** Optimal string alignment distance: insertions, deletions, substitutions and adjacent transpositions cost 1. */
function editDistance(a: string, b: string): number {
  if (Math.abs(a.length - b.length) > 3 || a.length > 64 || b.length > 64) return Infinity;
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, d[i - 2]![j - 2]! + 1);
      d[i]![j] = v;
    }
  }
  return d[a.length]![b.length]!;
}

function truncate(s: string): string {
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}
