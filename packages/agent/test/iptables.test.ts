import { expect } from "chai";
import { captureSettings, redirectPlan, removalFromPlan, removalFromSaved, renderCommands, renderRemovalCommands, renderRemovalRestore, renderRestore, type CaptureSettings } from "../src/iptables.js";
import { config } from "./fixtures.js";

const rule = (chain: string, ...args: string[]) => ({ table: "nat", chain, args });

describe("iptables REDIRECT rules", () => {
  it("captures the configured inbound ports and all outbound, excluding the proxy's user and the reserved ports", () => {
    const plan = redirectPlan(captureSettings(config("interception:\n  proxyUid: 999\n  excludeOutboundCidrs: [169.254.169.254/32]\n  excludeOutboundPorts: [5432]\n")));
    expect(plan.chains).to.deep.equal(["VMPILOT_INBOUND", "VMPILOT_IN_REDIRECT", "VMPILOT_OUTPUT", "VMPILOT_REDIRECT"]);
    expect(plan.rules).to.deep.equal([
      rule("VMPILOT_REDIRECT", "-p", "tcp", "-j", "REDIRECT", "--to-ports", "15001"),
      rule("VMPILOT_IN_REDIRECT", "-p", "tcp", "-j", "REDIRECT", "--to-ports", "15006"),
      rule("PREROUTING", "-p", "tcp", "-j", "VMPILOT_INBOUND"),
      rule("VMPILOT_INBOUND", "-p", "tcp", "--dport", "22", "-j", "RETURN"),
      rule("VMPILOT_INBOUND", "-p", "tcp", "--dport", "15020", "-j", "RETURN"),
      rule("VMPILOT_INBOUND", "-p", "tcp", "--dport", "15021", "-j", "RETURN"),
      rule("VMPILOT_INBOUND", "-p", "tcp", "--dport", "15090", "-j", "RETURN"),
      rule("VMPILOT_INBOUND", "-p", "tcp", "--dport", "8080", "-j", "VMPILOT_IN_REDIRECT"),
      rule("VMPILOT_INBOUND", "-p", "tcp", "--dport", "9090", "-j", "VMPILOT_IN_REDIRECT"),
      rule("OUTPUT", "-p", "tcp", "-j", "VMPILOT_OUTPUT"),
      rule("VMPILOT_OUTPUT", "-o", "lo", "-s", "127.0.0.6/32", "-j", "RETURN"),
      rule("VMPILOT_OUTPUT", "-p", "tcp", "--dport", "5432", "-j", "RETURN"),
      rule("VMPILOT_OUTPUT", "!", "-d", "127.0.0.1/32", "-o", "lo", "-m", "owner", "--uid-owner", "999", "-j", "VMPILOT_IN_REDIRECT"),
      rule("VMPILOT_OUTPUT", "-o", "lo", "-m", "owner", "!", "--uid-owner", "999", "-j", "RETURN"),
      rule("VMPILOT_OUTPUT", "-m", "owner", "--uid-owner", "999", "-j", "RETURN"),
      rule("VMPILOT_OUTPUT", "-d", "127.0.0.1/32", "-j", "RETURN"),
      rule("VMPILOT_OUTPUT", "-d", "169.254.169.254/32", "-j", "RETURN"),
      rule("VMPILOT_OUTPUT", "-j", "VMPILOT_REDIRECT"),
    ]);
    expect(plan.notes).to.deep.equal([]);
  });

  const base: CaptureSettings = {
    proxyUid: 1337,
    includeInboundPorts: ["*"],
    excludeInboundPorts: [],
    includeOutboundCidrs: ["*"],
    excludeOutboundCidrs: [],
    excludeOutboundPorts: [],
  };

  it("with inbound '*' captures everything but the excluded ports, configured ones included", () => {
    const plan = redirectPlan({ ...base, excludeInboundPorts: [8443, 22] });
    const inbound = plan.rules.filter((r) => r.chain === "VMPILOT_INBOUND").map((r) => r.args.join(" "));
    expect(inbound).to.deep.equal([
      "-p tcp --dport 22 -j RETURN",
      "-p tcp --dport 8443 -j RETURN",
      "-p tcp --dport 15020 -j RETURN",
      "-p tcp --dport 15021 -j RETURN",
      "-p tcp --dport 15090 -j RETURN",
      "-p tcp -j VMPILOT_IN_REDIRECT",
    ]);
  });

  it("never redirects an explicitly listed but excluded inbound port, and skips inbound capture when nothing is left", () => {
    const plan = redirectPlan({ ...base, includeInboundPorts: ["22", "15020"] });
    expect(plan.rules.some((r) => r.chain === "PREROUTING")).to.equal(false);
    expect(plan.notes[0]).to.match(/no inbound ports to capture/);
  });

  it("captures only included outbound CIDRs, matches the proxy gid too, and sets IPv6 ranges aside", () => {
    const plan = redirectPlan({ ...base, proxyGid: 1337, includeOutboundCidrs: ["10.0.0.0/8", "fd00::/8"] });
    const output = plan.rules.filter((r) => r.chain === "VMPILOT_OUTPUT").map((r) => r.args.join(" "));
    expect(output).to.include("-m owner --gid-owner 1337 -j RETURN");
    expect(output.at(-1)).to.equal("-d 10.0.0.0/8 -j VMPILOT_REDIRECT");
    expect(output).not.to.include("-j VMPILOT_REDIRECT");
    expect(plan.notes).to.deep.equal(["includeOutboundCidrs fd00::/8 is IPv6: not handled by iptables (ip6tables rules are not generated)"]);
  });

  it("renders iptables command lines and iptables-restore input", () => {
    const plan = redirectPlan(base);
    const lines = renderCommands(plan);
    expect(lines[0]).to.equal("iptables -t nat -N VMPILOT_INBOUND");
    expect(lines).to.include("iptables -t nat -A VMPILOT_OUTPUT '!' -d 127.0.0.1/32 -o lo -m owner --uid-owner 1337 -j VMPILOT_IN_REDIRECT");
    expect(lines).to.include("iptables -t nat -A VMPILOT_REDIRECT -p tcp -j REDIRECT --to-ports 15001");
    const restore = renderRestore(plan, new Set(["-A OUTPUT -p tcp -j VMPILOT_OUTPUT"]));
    expect(restore.split("\n").slice(0, 5)).to.deep.equal(["*nat", ":VMPILOT_INBOUND - [0:0]", ":VMPILOT_IN_REDIRECT - [0:0]", ":VMPILOT_OUTPUT - [0:0]", ":VMPILOT_REDIRECT - [0:0]"]);
    expect(restore).to.include("-A PREROUTING -p tcp -j VMPILOT_INBOUND\n");
    expect(restore).not.to.include("-A OUTPUT -p tcp -j VMPILOT_OUTPUT");
    expect(restore.endsWith("COMMIT\n")).to.equal(true);
  });

  it("removes what iptables-save shows installed: jumps into our chains only, then our chains, in one transaction", () => {
    const saved = [
      "# Generated by iptables-save v1.8.9 (nf_tables)",
      "*nat",
      ":PREROUTING ACCEPT [0:0]",
      ":OUTPUT ACCEPT [0:0]",
      ":DOCKER - [0:0]",
      ":VMPILOT_OUTPUT - [0:0]",
      ":VMPILOT_OUTPUT_DNS - [0:0]",
      ":VMPILOT_REDIRECT - [0:0]",
      "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER",
      "-A OUTPUT -p udp -m udp --dport 53 -j VMPILOT_OUTPUT_DNS",
      "-A OUTPUT -p tcp -j VMPILOT_OUTPUT",
      "-A OUTPUT -d 10.0.0.0/8 -j RETURN",
      "-A VMPILOT_OUTPUT -j VMPILOT_REDIRECT",
      "-A VMPILOT_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
      "COMMIT",
    ].join("\n");
    const removal = removalFromSaved(saved);
    expect(removal.chains).to.deep.equal(["VMPILOT_OUTPUT", "VMPILOT_REDIRECT", "VMPILOT_OUTPUT_DNS"]);
    expect(renderRemovalRestore(removal).split("\n")).to.deep.equal([
      "*nat",
      ":VMPILOT_OUTPUT - [0:0]",
      ":VMPILOT_REDIRECT - [0:0]",
      ":VMPILOT_OUTPUT_DNS - [0:0]",
      "-D OUTPUT -p udp -m udp --dport 53 -j VMPILOT_OUTPUT_DNS",
      "-D OUTPUT -p tcp -j VMPILOT_OUTPUT",
      "-X VMPILOT_OUTPUT",
      "-X VMPILOT_REDIRECT",
      "-X VMPILOT_OUTPUT_DNS",
      "COMMIT",
      "",
    ]);
    expect(removalFromSaved("*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j DOCKER\nCOMMIT\n")).to.deep.equal({ table: "nat", jumps: [], chains: [] });
  });

  it("prints the removal of a plan as commands: jumps, then flush all, then delete all", () => {
    const lines = renderRemovalCommands(removalFromPlan(redirectPlan(base)));
    expect(lines[0]).to.equal("iptables -t nat -D PREROUTING -p tcp -j VMPILOT_INBOUND");
    expect(lines).to.include("iptables -t nat -D OUTPUT -p tcp -j VMPILOT_OUTPUT");
    const firstDelete = lines.findIndex((l) => l.includes(" -X "));
    expect(lines.slice(firstDelete).every((l) => l.includes(" -X "))).to.equal(true);
    expect(lines.filter((l) => l.includes(" -F "))).to.have.length(4);
  });

  // ---- DNS capture (issue 8 part 3) ----

  const dnsRules = (plan: ReturnType<typeof redirectPlan>) => plan.rules.filter((r) => r.chain === "VMPILOT_OUTPUT_DNS" || r.args.includes("VMPILOT_OUTPUT_DNS"));

  it("captures DNS to the resolv.conf nameservers, exempting the proxy's uid and gid first, before the TCP capture", () => {
    const cfg = config("interception:\n  proxyUid: 999\n  proxyGid: 998\ndns:\n  enabled: true\n");
    const plan = redirectPlan(captureSettings(cfg, () => [{ host: "10.0.0.2", port: 53 }, { host: "127.0.0.53", port: 53 }, { host: "fd00::53", port: 53 }]));
    expect(plan.chains).to.include("VMPILOT_OUTPUT_DNS");
    expect(dnsRules(plan)).to.deep.equal([
      { table: "nat", chain: "OUTPUT", args: ["-p", "tcp", "-m", "tcp", "--dport", "53", "-j", "VMPILOT_OUTPUT_DNS"], first: true },
      { table: "nat", chain: "OUTPUT", args: ["-p", "udp", "-m", "udp", "--dport", "53", "-j", "VMPILOT_OUTPUT_DNS"], first: true },
      rule("VMPILOT_OUTPUT_DNS", "-m", "owner", "--uid-owner", "999", "-j", "RETURN"),
      rule("VMPILOT_OUTPUT_DNS", "-m", "owner", "--gid-owner", "998", "-j", "RETURN"),
      rule("VMPILOT_OUTPUT_DNS", "-d", "10.0.0.2/32", "-p", "udp", "-m", "udp", "--dport", "53", "-j", "REDIRECT", "--to-ports", "15053"),
      rule("VMPILOT_OUTPUT_DNS", "-d", "10.0.0.2/32", "-p", "tcp", "-m", "tcp", "--dport", "53", "-j", "REDIRECT", "--to-ports", "15053"),
      rule("VMPILOT_OUTPUT_DNS", "-d", "127.0.0.53/32", "-p", "udp", "-m", "udp", "--dport", "53", "-j", "REDIRECT", "--to-ports", "15053"),
      rule("VMPILOT_OUTPUT_DNS", "-d", "127.0.0.53/32", "-p", "tcp", "-m", "tcp", "--dport", "53", "-j", "REDIRECT", "--to-ports", "15053"),
    ]);
    expect(plan.notes).to.deep.equal(["DNS server fd00::53 is IPv6: not handled by iptables (ip6tables rules are not generated)"]);
    // The DNS jumps run first: iptables-restore inserts them at the top of OUTPUT, and the commands say so.
    const restore = renderRestore(plan).split("\n");
    expect(restore.indexOf("-I OUTPUT 1 -p udp -m udp --dport 53 -j VMPILOT_OUTPUT_DNS")).to.be.greaterThan(0);
    expect(restore).to.include("-A OUTPUT -p tcp -j VMPILOT_OUTPUT");
    // Already installed (as iptables-save prints it): not inserted twice.
    const again = renderRestore(plan, new Set(["-A OUTPUT -p udp -m udp --dport 53 -j VMPILOT_OUTPUT_DNS", "-A OUTPUT -p tcp -m tcp --dport 53 -j VMPILOT_OUTPUT_DNS"]));
    expect(again).not.to.match(/OUTPUT 1/);
  });

  it("has no DNS rules when dns.capture is off (the default without dns.enabled), or explicitly off", () => {
    const none = redirectPlan(captureSettings(config(), () => [{ host: "10.0.0.2", port: 53 }]));
    expect(dnsRules(none)).to.deep.equal([]);
    expect(none.chains).not.to.include("VMPILOT_OUTPUT_DNS");
    const off = redirectPlan(captureSettings(config("dns:\n  enabled: true\n  capture: false\n"), () => [{ host: "10.0.0.2", port: 53 }]));
    expect(dnsRules(off)).to.deep.equal([]);
  });

  it('captures every port-53 destination with captureServers "*", on the configured port', () => {
    const plan = redirectPlan(captureSettings(config('dns:\n  enabled: true\n  port: 5353\n  captureServers: ["*"]\n'), () => []));
    expect(dnsRules(plan).filter((r) => r.chain === "VMPILOT_OUTPUT_DNS").map((r) => r.args.join(" "))).to.deep.equal([
      "-m owner --uid-owner 1337 -j RETURN",
      "-p udp -m udp --dport 53 -j REDIRECT --to-ports 5353",
      "-p tcp -m tcp --dport 53 -j REDIRECT --to-ports 5353",
    ]);
  });

  it("says why DNS is not captured when resolv.conf names no IPv4 server", () => {
    const plan = redirectPlan(captureSettings(config("dns:\n  enabled: true\n"), () => []));
    expect(dnsRules(plan)).to.deep.equal([]);
    expect(plan.notes).to.include('DNS capture: no IPv4 nameserver in /etc/resolv.conf to capture; list them in dns.captureServers (or "*")');
  });

  it("with interception.mode NONE and dns.capture, captures DNS only", () => {
    const cfg = config("interception:\n  mode: NONE\ndns:\n  enabled: true\n  capture: true\n");
    const plan = redirectPlan(captureSettings(cfg, () => [{ host: "10.0.0.2", port: 53 }]));
    expect(plan.chains).to.deep.equal(["VMPILOT_OUTPUT_DNS"]);
    expect(plan.rules.every((r) => r.chain === "OUTPUT" || r.chain === "VMPILOT_OUTPUT_DNS")).to.equal(true);
    expect(plan.rules.some((r) => r.args.includes("VMPILOT_OUTPUT"))).to.equal(false);
    expect(dnsRules(plan)).to.have.length(5);
  });

  // ---- outbound ranges and ports (issue 8 part 6: the seed's "direct access" bypass) ----

  it("only redirects the included outbound ranges; excluded ranges and ports RETURN before any redirect", () => {
    const cfg = config("interception:\n  includeOutboundCidrs: [10.0.0.0/8, 172.16.0.0/12]\n  excludeOutboundCidrs: [10.96.0.10/32]\n  excludeOutboundPorts: [3306]\n");
    const output = redirectPlan(captureSettings(cfg)).rules.filter((r) => r.chain === "VMPILOT_OUTPUT").map((r) => r.args.join(" "));
    const firstRedirect = output.findIndex((a) => a.endsWith("-j VMPILOT_REDIRECT"));
    expect(output.slice(firstRedirect)).to.deep.equal(["-d 10.0.0.0/8 -j VMPILOT_REDIRECT", "-d 172.16.0.0/12 -j VMPILOT_REDIRECT"]);
    expect(output.indexOf("-d 10.96.0.10/32 -j RETURN")).to.be.within(0, firstRedirect - 1);
    expect(output.indexOf("-p tcp --dport 3306 -j RETURN")).to.be.within(0, firstRedirect - 1);
    // Nothing redirects every destination: the rest falls off the chain and leaves directly.
    expect(output).not.to.include("-j VMPILOT_REDIRECT");
  });

  it("captures no outbound traffic with an empty include list, and none of it reaches VMPILOT_OUTPUT", () => {
    const plan = redirectPlan(captureSettings(config("interception:\n  includeOutboundCidrs: []\n")));
    expect(plan.rules.some((r) => r.chain === "OUTPUT" || r.chain === "VMPILOT_OUTPUT")).to.equal(false);
    expect(plan.notes).to.include("no outbound ranges to capture: outbound traffic bypasses the proxy");
  });

  it("sets IPv6 exclusions aside with a note, and keeps the IPv4 ones", () => {
    const plan = redirectPlan(captureSettings(config("interception:\n  excludeOutboundCidrs: [fd00::/8, 192.168.0.0/16]\n")));
    const output = plan.rules.filter((r) => r.chain === "VMPILOT_OUTPUT").map((r) => r.args.join(" "));
    expect(output).to.include("-d 192.168.0.0/16 -j RETURN");
    expect(output.join("\n")).not.to.include("fd00");
    expect(plan.notes).to.deep.equal(["excludeOutboundCidrs fd00::/8 is IPv6: not handled by iptables (ip6tables rules are not generated)"]);
  });
});
