// Traffic capture for a VM sidecar in REDIRECT mode: the nat rules Istio's istio-iptables installs, with our
// chain names. Pure: the rules are data (argv arrays), rendered either as `iptables ...` command lines
// (--dry-run, docs, review) or as `iptables-restore` input (applied atomically, one transaction).
//
// Inbound:  PREROUTING -> VMPILOT_INBOUND -> (captured ports) VMPILOT_IN_REDIRECT -> REDIRECT :15006
// Outbound: OUTPUT -> VMPILOT_OUTPUT -> (captured destinations) VMPILOT_REDIRECT -> REDIRECT :15001
// DNS:      OUTPUT (udp/tcp port 53) -> VMPILOT_OUTPUT_DNS -> (the resolvers' addresses) REDIRECT :15053
// The proxy's own traffic (its uid/gid) is never captured again, which is what stops the redirect loop.
//
// Outbound ranges follow Istio's traffic.sidecar.istio.io annotations: excludeOutboundPorts and
// excludeOutboundCidrs RETURN first (the seed's "direct access" bypass), then only includeOutboundCidrs are
// redirected (`*` = every destination); anything else falls off the end of VMPILOT_OUTPUT and leaves directly.
// Only IPv4 is handled: IPv6 ranges are reported in the plan's notes, and no ip6tables rules are generated.
import net from "node:net";
import type { AgentConfig } from "./config.js";
import { systemUpstreams, type Upstream } from "./dns/upstreams.js";

export const INBOUND_CAPTURE_PORT = 15006;
export const OUTBOUND_CAPTURE_PORT = 15001;
/** Never captured inbound: ssh, agent status, readiness, Envoy's Prometheus listener. */
export const ALWAYS_EXCLUDED_INBOUND_PORTS = [22, 15020, 15021, 15090] as const;
/** Envoy's inbound passthrough source address (Istio's): traffic it sends to the app on loopback. */
export const INBOUND_PASSTHROUGH_SOURCE = "127.0.0.6/32";

export const CHAINS = {
  inbound: "VMPILOT_INBOUND",
  inRedirect: "VMPILOT_IN_REDIRECT",
  output: "VMPILOT_OUTPUT",
  redirect: "VMPILOT_REDIRECT",
} as const;

/** Only created with DNS capture (dns.capture), so kept apart from the chains every REDIRECT plan has. */
export const DNS_CHAIN = "VMPILOT_OUTPUT_DNS";

export interface IptablesRule {
  table: "nat";
  chain: string;
  /** Everything after `-A CHAIN`. */
  args: string[];
  /**
   * Insert at the top of a built-in chain instead of appending: the DNS jumps must run before the TCP jump to
   * VMPILOT_OUTPUT even when that jump is already installed (a re-apply that turns DNS capture on).
   */
  first?: true;
}

export interface IptablesPlan {
  table: "nat";
  /** Chains to create (in order). */
  chains: string[];
  rules: IptablesRule[];
  /** Things the plan left out on purpose (e.g. IPv6 ranges, which need ip6tables). */
  notes: string[];
}

export interface CaptureSettings {
  proxyUid: number;
  proxyGid?: number;
  /** `*` or port numbers (as strings, like Istio's annotation). */
  includeInboundPorts: string[];
  excludeInboundPorts: number[];
  /** `*` or CIDRs. */
  includeOutboundCidrs: string[];
  excludeOutboundCidrs: string[];
  excludeOutboundPorts: number[];
  /** Capture DNS to the agent's proxy on 127.0.0.1:`port`: queries to `servers` (`*` = to any address). */
  dns?: { port: number; servers: "*" | string[] };
  /** False: DNS capture only (interception.mode NONE with dns.capture); inbound and outbound TCP untouched. */
  traffic?: boolean;
}

/**
 * The capture settings of an agent config. DNS capture targets the resolvers applications use, i.e. the
 * nameservers of /etc/resolv.conf (read here, once), not every port-53 destination: a local caching resolver
 * (dnsmasq, systemd-resolved) forwarding to its own upstreams must not be looped back into the agent.
 */
export function captureSettings(cfg: AgentConfig, nameservers: () => Upstream[] = () => systemUpstreams()): CaptureSettings {
  const i = cfg.interception;
  const out: CaptureSettings = {
    proxyUid: i.proxyUid,
    ...(i.proxyGid !== undefined ? { proxyGid: i.proxyGid } : {}),
    includeInboundPorts: i.includeInboundPorts,
    // The agent's own ports move with its config; keep them reachable even when not the defaults.
    excludeInboundPorts: [...i.excludeInboundPorts, cfg.status.port, cfg.status.readinessPort],
    includeOutboundCidrs: i.includeOutboundCidrs,
    excludeOutboundCidrs: i.excludeOutboundCidrs,
    excludeOutboundPorts: i.excludeOutboundPorts,
  };
  if (i.mode !== "REDIRECT") out.traffic = false;
  if (cfg.dns.capture) {
    const listed = cfg.dns.captureServers;
    const servers = listed?.includes("*") ? "*" : (listed ?? nameservers().filter((u) => u.port === 53).map((u) => u.host));
    out.dns = { port: cfg.dns.port, servers: servers === "*" ? "*" : [...new Set(servers)] };
  }
  return out;
}

function uniqueSorted(ports: Iterable<number>): number[] {
  return [...new Set(ports)].sort((a, b) => a - b);
}

/** The nat rules for REDIRECT capture. */
export function redirectPlan(s: CaptureSettings): IptablesPlan {
  const rules: IptablesRule[] = [];
  const notes: string[] = [];
  const add = (chain: string, ...args: string[]) => rules.push({ table: "nat", chain, args });
  const v4 = (cidrs: string[], what: string) =>
    cidrs.filter((c) => {
      if (c === "*") return true;
      if (net.isIPv4(c.split("/")[0]!)) return true;
      notes.push(`${what} ${c} is IPv6: not handled by iptables (ip6tables rules are not generated)`);
      return false;
    });

  add(CHAINS.redirect, "-p", "tcp", "-j", "REDIRECT", "--to-ports", String(OUTBOUND_CAPTURE_PORT));
  add(CHAINS.inRedirect, "-p", "tcp", "-j", "REDIRECT", "--to-ports", String(INBOUND_CAPTURE_PORT));
  const owners: [string, string][] = [["--uid-owner", String(s.proxyUid)]];
  if (s.proxyGid !== undefined) owners.push(["--gid-owner", String(s.proxyGid)]);

  // ---- DNS ----
  // Jumped to before VMPILOT_OUTPUT, so TCP queries reach the DNS proxy rather than Envoy's 15001. The agent
  // (running as the proxy's user) forwards unknown names to the same resolvers: its queries, and Envoy's own
  // DNS lookups, are exempt first, or they would come straight back.
  const chains: string[] = Object.values(CHAINS);
  if (s.dns) {
    const servers = s.dns.servers === "*" ? "*" : v4(s.dns.servers, "DNS server").map((a) => `${a}/32`);
    if (servers === "*" || servers.length > 0) {
      chains.push(DNS_CHAIN);
      // `-m udp`/`-m tcp` spelled out as iptables-save prints them, so a re-apply recognises installed jumps.
      for (const proto of ["tcp", "udp"]) rules.push({ table: "nat", chain: "OUTPUT", args: ["-p", proto, "-m", proto, "--dport", "53", "-j", DNS_CHAIN], first: true });
      for (const [flag, id] of owners) add(DNS_CHAIN, "-m", "owner", flag, id, "-j", "RETURN");
      for (const d of servers === "*" ? [undefined] : servers) {
        for (const proto of ["udp", "tcp"]) {
          add(DNS_CHAIN, ...(d ? ["-d", d] : []), "-p", proto, "-m", proto, "--dport", "53", "-j", "REDIRECT", "--to-ports", String(s.dns.port));
        }
      }
    } else {
      notes.push('DNS capture: no IPv4 nameserver in /etc/resolv.conf to capture; list them in dns.captureServers (or "*")');
    }
  }
  if (s.traffic === false) {
    notes.push("interception.mode NONE: only DNS is captured; TCP traffic reaches its destination directly");
    const dnsOnly = rules.filter((r) => r.chain === "OUTPUT" || r.chain === DNS_CHAIN);
    return { table: "nat", chains: chains.filter((c) => c === DNS_CHAIN), rules: dnsOnly, notes };
  }

  // ---- inbound ----
  const excludedIn = uniqueSorted([...ALWAYS_EXCLUDED_INBOUND_PORTS, ...s.excludeInboundPorts]);
  const includeAllIn = s.includeInboundPorts.includes("*");
  const includedIn = uniqueSorted(s.includeInboundPorts.filter((p) => p !== "*").map(Number)).filter((p) => !excludedIn.includes(p));
  if (includeAllIn || includedIn.length > 0) {
    add("PREROUTING", "-p", "tcp", "-j", CHAINS.inbound);
    for (const p of excludedIn) add(CHAINS.inbound, "-p", "tcp", "--dport", String(p), "-j", "RETURN");
    if (includeAllIn) add(CHAINS.inbound, "-p", "tcp", "-j", CHAINS.inRedirect);
    else for (const p of includedIn) add(CHAINS.inbound, "-p", "tcp", "--dport", String(p), "-j", CHAINS.inRedirect);
  } else {
    notes.push("no inbound ports to capture: inbound traffic reaches the application directly");
  }

  // ---- outbound ----
  const includeOut = v4(s.includeOutboundCidrs, "includeOutboundCidrs");
  const excludeOut = v4(s.excludeOutboundCidrs, "excludeOutboundCidrs").filter((c) => c !== "*");
  if (includeOut.length === 0) {
    notes.push("no outbound ranges to capture: outbound traffic bypasses the proxy");
    return { table: "nat", chains, rules, notes };
  }
  add("OUTPUT", "-p", "tcp", "-j", CHAINS.output);
  // Envoy's inbound passthrough to the app (source 127.0.0.6) must not loop back into the proxy.
  add(CHAINS.output, "-o", "lo", "-s", INBOUND_PASSTHROUGH_SOURCE, "-j", "RETURN");
  for (const p of uniqueSorted(s.excludeOutboundPorts)) add(CHAINS.output, "-p", "tcp", "--dport", String(p), "-j", "RETURN");
  for (const [flag, id] of owners) {
    // The proxy calling a local app by a non-loopback address of this VM (its own service): treat as inbound.
    add(CHAINS.output, "!", "-d", "127.0.0.1/32", "-o", "lo", "-m", "owner", flag, id, "-j", CHAINS.inRedirect);
    // An app calling another local app over loopback: not the proxy's business.
    add(CHAINS.output, "-o", "lo", "-m", "owner", "!", flag, id, "-j", "RETURN");
    // The proxy's own outbound traffic leaves as is.
    add(CHAINS.output, "-m", "owner", flag, id, "-j", "RETURN");
  }
  add(CHAINS.output, "-d", "127.0.0.1/32", "-j", "RETURN");
  for (const c of excludeOut) add(CHAINS.output, "-d", c, "-j", "RETURN");
  if (includeOut.includes("*")) add(CHAINS.output, "-j", CHAINS.redirect);
  else for (const c of includeOut) add(CHAINS.output, "-d", c, "-j", CHAINS.redirect);
  return { table: "nat", chains, rules, notes };
}

function shellQuote(arg: string): string {
  return /^[A-Za-z0-9_./:=,-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}

/** `iptables -t nat -N ...` / `-A ...` lines, in the order they must run. */
export function renderCommands(plan: IptablesPlan): string[] {
  return [
    ...plan.chains.map((c) => `iptables -t ${plan.table} -N ${c}`),
    ...plan.rules.map((r) => ["iptables", "-t", r.table, ...(r.first ? ["-I", r.chain, "1"] : ["-A", r.chain]), ...r.args].map(shellQuote).join(" ")),
  ];
}

/**
 * `iptables-restore --noflush` input: declaring our chains flushes them, so re-applying replaces our rules;
 * the jumps from PREROUTING/OUTPUT are only added when `existingJumps` says they are not there yet.
 */
export function renderRestore(plan: IptablesPlan, existingJumps: ReadonlySet<string> = new Set()): string {
  const lines = [`*${plan.table}`, ...plan.chains.map((c) => `:${c} - [0:0]`)];
  for (const r of plan.rules) {
    const line = ["-A", r.chain, ...r.args].join(" ");
    if ((r.chain === "PREROUTING" || r.chain === "OUTPUT") && existingJumps.has(line)) continue;
    lines.push(r.first ? ["-I", r.chain, "1", ...r.args].join(" ") : line);
  }
  lines.push("COMMIT", "");
  return lines.join("\n");
}

/** Every chain the agent may create, whichever settings it ran with. */
export const OWN_CHAINS: readonly string[] = [...Object.values(CHAINS), DNS_CHAIN];

/** What taking capture off a host removes: the jumps from built-in chains into ours, then our chains. */
export interface CaptureRemoval {
  table: "nat";
  /** Rules of PREROUTING/OUTPUT that jump into one of OWN_CHAINS, each as `-A CHAIN args` would append it. */
  jumps: IptablesRule[];
  chains: string[];
}

/**
 * The removal for what `iptables-save -t nat` shows installed, not for the current config: capture applied
 * with settings since changed (DNS capture turned off, inbound ports dropped) must still come off entirely.
 */
export function removalFromSaved(saved: string): CaptureRemoval {
  const own = new Set(OWN_CHAINS);
  const jumps: IptablesRule[] = [];
  const chains = new Set<string>();
  for (const line of saved.split("\n").map((l) => l.trim())) {
    const declared = /^:(\S+)\s/.exec(line);
    if (declared && own.has(declared[1]!)) chains.add(declared[1]!);
    const appended = /^-A (PREROUTING|OUTPUT) (.*)$/.exec(line);
    const target = appended && /(?:^|\s)-j (\S+)(?:\s|$)/.exec(appended[2]!)?.[1];
    if (appended && target && own.has(target)) jumps.push({ table: "nat", chain: appended[1]!, args: appended[2]!.split(" ") });
  }
  return { table: "nat", jumps, chains: OWN_CHAINS.filter((c) => chains.has(c)) };
}

/** The removal of what `plan` installs (for --dry-run, where what is installed may not be readable). */
export function removalFromPlan(plan: IptablesPlan): CaptureRemoval {
  const jumps = plan.rules.filter((r) => r.chain === "PREROUTING" || r.chain === "OUTPUT").map(({ first: _first, ...r }) => r);
  return { table: plan.table, jumps, chains: [...plan.chains] };
}

/**
 * `iptables-restore --noflush` input for one transaction: declaring our chains flushes them (so no rule of ours
 * still jumps between them), the jumps into them are deleted, then the chains.
 */
export function renderRemovalRestore(r: CaptureRemoval): string {
  return [
    `*${r.table}`,
    ...r.chains.map((c) => `:${c} - [0:0]`),
    ...r.jumps.map((j) => ["-D", j.chain, ...j.args].join(" ")),
    ...r.chains.map((c) => `-X ${c}`),
    "COMMIT",
    "",
  ].join("\n");
}

/** The same removal as `iptables` command lines: jumps first, then flush every chain before deleting any. */
export function renderRemovalCommands(r: CaptureRemoval): string[] {
  const line = (...args: string[]) => ["iptables", "-t", r.table, ...args].map(shellQuote).join(" ");
  return [...r.jumps.map((j) => line("-D", j.chain, ...j.args)), ...r.chains.map((c) => line("-F", c)), ...r.chains.map((c) => line("-X", c))];
}
