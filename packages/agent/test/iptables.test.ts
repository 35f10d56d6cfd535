import { expect } from "chai";
import { captureSettings, redirectPlan, renderCommands, renderRestore, type CaptureSettings } from "../src/iptables.js";
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
});
