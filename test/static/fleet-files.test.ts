// Static checks of the fleet files that no machine here can run for real: the systemd units (no systemd as
// PID 1), the Vagrant testbed (no VM can boot) and the testbed's configs. Each check uses the tool an
// operator's machine would (systemd-analyze, ShellCheck, ruby, vmpilot's own validator and config loaders),
// and each tool-backed check first proves on a deliberately broken copy that it can fail.
//
// A missing tool skips its checks with the reason printed; with CI set, a missing tool is a failure, since
// .ci/install-system-deps.sh installs them all and their absence means that step broke.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { expect } from "chai";
import YAML from "yaml";
import { environmentOverrides, loadAgentConfig } from "@vmpilot/agent/config";
import { runValidate } from "@vmpilot/xds/cli/validate";
import { resolveServerConfig } from "@vmpilot/xds/server/config";

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const at = (...p: string[]) => path.join(REPO, ...p);
const CI = !!process.env.CI && !["0", "false"].includes(process.env.CI.toLowerCase());

const UNIT_DIRS = [at("systemd"), at("vagrant/config/systemd")];
const PROVISION_DIR = at("vagrant/provision");
/** Where the units expect Node (NodeSource's and Debian's package both put it there). */
const UNIT_NODE = "/usr/bin/node";

function onPath(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? "").split(path.delimiter)) {
    if (!dir) continue;
    const candidate = path.join(dir, name);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch {
      // not in this directory
    }
  }
  return undefined;
}

/** Skips the test (or fails it under CI) when `ok` is false. */
function requireOrSkip(ctx: Mocha.Context, ok: boolean, why: string): void {
  if (ok) return;
  if (CI) throw new Error(`${why}; CI is set and .ci/install-system-deps.sh should have installed it`);
  console.log(`      skipped: ${why} (run .ci/install-system-deps.sh as root to install it)`);
  ctx.skip();
}

function requireTool(ctx: Mocha.Context, tool: string, debianPackage: string): void {
  requireOrSkip(ctx, onPath(tool) !== undefined, `${tool} is not on PATH (Debian package ${debianPackage})`);
}

interface Run {
  status: number | null;
  /** stdout and stderr together, trimmed. */
  output: string;
}

function run(cmd: string, args: string[], cwd = REPO): Run {
  const r = spawnSync(cmd, args, { cwd, encoding: "utf8", env: { ...process.env, SYSTEMD_COLORS: "0", NO_COLOR: "1" } });
  if (r.error) throw r.error;
  return { status: r.status, output: `${r.stdout}${r.stderr}`.trim() };
}

function filesIn(dir: string, pattern: RegExp): string[] {
  return fs
    .readdirSync(dir)
    .filter((f) => pattern.test(f))
    .sort()
    .map((f) => path.join(dir, f));
}

const UNIT_FILE = /\.(service|timer|socket|path)$/;

/** Programs the Exec*= lines of a unit start (the first word, after systemd's -@:+! prefixes). */
function execPrograms(unitText: string): string[] {
  const out: string[] = [];
  for (const m of unitText.matchAll(/^Exec\w+=([-@:+!]*)(\S+)/gm)) out.push(m[2]!);
  return out;
}

/** Values of `Key=` in a unit's text, in order. */
function directive(unitText: string, key: string): string[] {
  return [...unitText.matchAll(new RegExp(`^${key}=(.*)$`, "gm"))].map((m) => m[1]!);
}

describe("fleet files (static checks: nothing here boots a VM or runs systemd)", function () {
  this.timeout(60_000);
  let tmp: string;

  before(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "vmpilot-fleet-"));
  });
  after(() => {
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  /**
   * Copies units into a fresh directory for systemd-analyze: verify refuses a unit whose ExecStart program
   * does not exist, and Node may live elsewhere on this machine than on a fleet VM, so /usr/bin/node becomes
   * this process's node. Nothing else is rewritten.
   */
  function stage(files: string[], edit: (name: string, text: string) => string = (_n, t) => t): string[] {
    const dir = fs.mkdtempSync(path.join(tmp, "units-"));
    return files.map((f) => {
      const name = path.basename(f);
      const text = edit(name, fs.readFileSync(f, "utf8")).replaceAll(UNIT_NODE, process.execPath);
      const staged = path.join(dir, name);
      fs.writeFileSync(staged, text);
      return staged;
    });
  }

  /**
   * systemd-analyze verify: clean means exit 0 and not one line of diagnostics (unknown keys only warn).
   * Absolute paths: a bare name would be looked up as a unit in systemd's search path instead.
   */
  function verify(files: string[]): Run {
    return run("systemd-analyze", ["verify", "--man=no", ...files], path.dirname(files[0]!));
  }

  /** systemd-analyze security --offline: exit 0 when the unit's exposure is at most `threshold` tenths. */
  function securityReview(file: string, threshold: number): Run {
    const r = run("systemd-analyze", ["security", "--offline=yes", `--threshold=${threshold}`, file], path.dirname(file));
    // The score line proves the file itself was read, not a unit of that name found elsewhere.
    expect(r.output).to.include(`Overall exposure level for ${path.basename(file)}:`);
    return r;
  }

  function requireExecPrograms(ctx: Mocha.Context, files: string[]): void {
    for (const f of files) {
      for (const prog of execPrograms(fs.readFileSync(f, "utf8"))) {
        if (prog === UNIT_NODE || !prog.startsWith("/")) continue;
        requireOrSkip(ctx, fs.existsSync(prog), `${path.basename(f)} runs ${prog}, which this machine lacks (systemd-analyze verify checks it exists)`);
      }
    }
  }

  describe("systemd units", () => {
    const groups = UNIT_DIRS.map((dir) => ({ dir, files: filesIn(dir, UNIT_FILE) }));

    it("ship the server, agent and capture units", () => {
      const names = groups[0]!.files.map((f) => path.basename(f));
      expect(names).to.include.members(["vmpilot.service", "vmpilot-agent.service", "vmpilot-agent-iptables.service"]);
    });

    for (const { dir, files } of groups) {
      it(`${path.relative(REPO, dir)}/: systemd-analyze verify passes with no diagnostics`, function () {
        requireTool(this, "systemd-analyze", "systemd");
        requireExecPrograms(this, files);
        // Verified together, so Before=/RequiredBy= between them resolve to the real files.
        const r = verify(stage(files));
        expect(r.output, r.output).to.equal("");
        expect(r.status).to.equal(0);
      });
    }

    it("the check fails on a misspelt directive, an unparsable value and a misspelt section", function () {
      requireTool(this, "systemd-analyze", "systemd");
      const server = at("systemd/vmpilot.service");
      const cases: [string, (t: string) => string, RegExp][] = [
        ["directive", (t) => t.replace(/^ProtectSystem=/m, "ProtectSytem="), /Unknown key 'ProtectSytem'/],
        ["value", (t) => t.replace(/^RestartSec=.*$/m, "RestartSec=two"), /Failed to parse sec value.*two/],
        ["section", (t) => t.replace(/^\[Service\]$/m, "[Servce]"), /Unknown section 'Servce'/],
      ];
      for (const [what, edit, expected] of cases) {
        const staged = stage([server], (_n, t) => {
          const broken = edit(t);
          expect(broken, `the ${what} edit must change the unit`).to.not.equal(t);
          return broken;
        });
        const r = verify(staged);
        expect(r.output, `broken ${what}`).to.match(expected);
      }
    });

    // `systemd-analyze security --offline` scores a unit's sandbox 0 (tight) to 10 (none); --threshold is in
    // tenths. The limits hold today's hardening in place: dropping a sandbox line fails this test.
    const exposureLimits: [string, number][] = [
      ["vmpilot.service", 20],
      ["vmpilot-agent.service", 20],
      ["vmpilot-agent-iptables.service", 30],
    ];
    for (const [unit, limit] of exposureLimits) {
      it(`${unit}: offline security review scores at most ${limit / 10} (of 10)`, function () {
        requireTool(this, "systemd-analyze", "systemd");
        const [staged] = stage([at("systemd", unit)]);
        const r = securityReview(staged!, limit);
        expect(r.status, r.output.split("\n").slice(-3).join("\n")).to.equal(0);
      });
    }

    it("the security review fails a unit stripped of its sandbox", function () {
      requireTool(this, "systemd-analyze", "systemd");
      const [staged] = stage([at("systemd/vmpilot.service")], (_n, t) => {
        const cut = t.indexOf("# ---- sandbox");
        expect(cut).to.be.greaterThan(0);
        return t.slice(0, cut) + t.slice(t.indexOf("[Install]"));
      });
      expect(securityReview(staged!, 20).status).to.not.equal(0);
    });

    it("run the CLIs the packages build, with the documented configs and users", () => {
      const unit = (n: string) => fs.readFileSync(at("systemd", n), "utf8");
      const bin = (pkg: string, name: string) => {
        const rel = (JSON.parse(fs.readFileSync(at("packages", pkg, "package.json"), "utf8")) as { bin: Record<string, string> }).bin[name]!;
        return path.posix.join("/opt/vmpilot/packages", pkg, rel);
      };
      expect(directive(unit("vmpilot.service"), "ExecStart")[0]).to.match(
        new RegExp(`^${UNIT_NODE} ${bin("xds", "vmpilot")} server --config /etc/vmpilot/vmpilot.yaml`),
      );
      expect(directive(unit("vmpilot-agent.service"), "ExecStart")).to.deep.equal([`${UNIT_NODE} ${bin("agent", "vmpilot-agent")} run --config /etc/vmpilot/agent.yaml`]);
      expect(directive(unit("vmpilot-agent-iptables.service"), "ExecStart")).to.deep.equal([
        `${UNIT_NODE} ${bin("agent", "vmpilot-agent")} iptables --config /etc/vmpilot/agent.yaml`,
      ]);
      expect(directive(unit("vmpilot.service"), "User")).to.deep.equal(["vmpilot"]);
      expect(directive(unit("vmpilot-agent.service"), "User")).to.deep.equal(["vmpilot-agent"]);
      // The agent and Envoy keep no capabilities; only the capture unit has the two iptables needs.
      expect(directive(unit("vmpilot.service"), "CapabilityBoundingSet")).to.deep.equal([""]);
      expect(directive(unit("vmpilot-agent.service"), "CapabilityBoundingSet")).to.deep.equal([""]);
      expect(directive(unit("vmpilot-agent-iptables.service"), "CapabilityBoundingSet")).to.deep.equal(["CAP_NET_ADMIN CAP_NET_RAW"]);
      expect(directive(unit("vmpilot.service"), "ExecReload")).to.deep.equal(["/bin/kill -HUP $MAINPID"]);
    });

    it("the capture unit removes capture with the agent's own --remove, which needs no config", () => {
      const unit = fs.readFileSync(at("systemd/vmpilot-agent-iptables.service"), "utf8");
      expect(directive(unit, "ExecStop")).to.deep.equal(["/usr/bin/node /opt/vmpilot/packages/agent/dist/cli.js iptables --remove"]);
    });

    it("the capture unit's start and stop, run for real in a private network namespace, install then remove every rule", function () {
      requireOrSkip(this, process.getuid?.() === 0, "applying iptables rules needs root");
      requireTool(this, "ip", "iproute2");
      requireTool(this, "iptables", "iptables");
      const unit = fs.readFileSync(at("systemd/vmpilot-agent-iptables.service"), "utf8");
      const ns = `vmpilot-fleet-${process.pid}`;
      const inNs = (cmd: string, args: string[]) => run("ip", ["netns", "exec", ns, cmd, ...args]);
      const natRules = () => {
        const r = inNs("iptables-save", ["-t", "nat"]);
        expect(r.status, r.output).to.equal(0);
        return r.output.split("\n").filter((l) => l.includes("VMPILOT"));
      };
      // ExecStart, with the built CLI swapped for its TypeScript source and the testbed's vm1 config.
      const [start] = directive(unit, "ExecStart");
      const startArgs = start!.split(" ").slice(2);
      expect(startArgs).to.deep.equal(["iptables", "--config", "/etc/vmpilot/agent.yaml"]);
      const agentCli = (args: string[]) => inNs(process.execPath, ["--conditions=vmpilot-source", "--import", "tsx", at("packages/agent/src/cli.ts"), ...args]);
      const apply = (config = at("vagrant/config/agent/vm1.yaml")) => agentCli(["iptables", "--config", config]);
      // The same vm1, with DNS capture turned on: one more chain and two more jumps, which stop must remove too.
      const withDns = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "vmpilot-fleet-")), "agent.yaml");
      const vm1 = YAML.parse(fs.readFileSync(at("vagrant/config/agent/vm1.yaml"), "utf8")) as Record<string, unknown>;
      fs.writeFileSync(withDns, YAML.stringify({ ...vm1, dns: { enabled: true, capture: true, captureServers: ["*"] } }));
      const [stopLine, ...more] = directive(unit, "ExecStop");
      expect(more).to.deep.equal([]);
      const stopArgs = stopLine!.split(" ").slice(2);
      expect(stopArgs).to.deep.equal(["iptables", "--remove"]);
      const stop = () => {
        const r = agentCli(stopArgs);
        expect(r.status, r.output).to.equal(0);
        return r.output;
      };

      const added = run("ip", ["netns", "add", ns]);
      expect(added.status, added.output).to.equal(0);
      try {
        const first = apply();
        expect(first.status, first.output).to.equal(0);
        const rules = natRules();
        expect(rules).to.include("-A OUTPUT -p tcp -j VMPILOT_OUTPUT");
        expect(rules).to.include("-A PREROUTING -p tcp -j VMPILOT_INBOUND");
        expect(rules.some((l) => l.includes("--uid-owner 1337"))).to.equal(true);
        // A second start (systemctl restart) replaces the rules instead of stacking them.
        expect(apply().status).to.equal(0);
        expect(natRules()).to.deep.equal(rules);
        stop();
        expect(natRules()).to.deep.equal([]);
        // Stopping again with nothing installed leaves nothing behind either.
        expect(stop()).to.include("no capture rules installed");
        expect(natRules()).to.deep.equal([]);

        // Capture installed with DNS on, then the config changed back (DNS off): stop still removes it all.
        const dns = apply(withDns);
        expect(dns.status, dns.output).to.equal(0);
        expect(natRules()).to.include.members(["-A OUTPUT -p udp -m udp --dport 53 -j VMPILOT_OUTPUT_DNS", ":VMPILOT_OUTPUT_DNS - [0:0]"]);
        expect(stop()).to.match(/removed 4 jumps and chains VMPILOT_INBOUND, VMPILOT_IN_REDIRECT, VMPILOT_OUTPUT, VMPILOT_REDIRECT, VMPILOT_OUTPUT_DNS/);
        expect(natRules()).to.deep.equal([]);
      } finally {
        run("ip", ["netns", "del", ns]);
        fs.rmSync(path.dirname(withDns), { recursive: true, force: true });
      }
    });

    it("the env files document only variables something reads", () => {
      const known = environmentOverrides();
      const agentEnv = fs.readFileSync(at("systemd/vmpilot-agent.env"), "utf8");
      const agentNames = [...agentEnv.matchAll(/^#?(VMPILOT_AGENT_[A-Z0-9_]+)=/gm)].map((m) => m[1]!);
      expect(agentNames).to.not.be.empty;
      for (const n of agentNames) expect(known.has(n), `${n} is not an agent override`).to.equal(true);

      // Other variables must be read by the product code or used by the unit itself.
      const sources = ["registry", "xds", "agent"].flatMap((p) => walk(at("packages", p, "src"))).map((f) => fs.readFileSync(f, "utf8")).join("\n");
      for (const [envFile, unitFile] of [
        ["vmpilot.env", "vmpilot.service"],
        ["vmpilot-agent.env", "vmpilot-agent.service"],
      ] as const) {
        const unit = fs.readFileSync(at("systemd", unitFile), "utf8");
        const text = fs.readFileSync(at("systemd", envFile), "utf8");
        for (const [, name] of text.matchAll(/^#?([A-Z][A-Z0-9_]*)=/gm)) {
          if (name!.startsWith("VMPILOT_AGENT_")) continue;
          const used = unit.includes(`$${name}`) || sources.includes(name!) || name === "NODE_OPTIONS";
          expect(used, `${envFile} documents ${name}, which nothing reads`).to.equal(true);
        }
      }
    });
  });

  describe("Vagrant testbed", () => {
    const scripts = () => [...filesIn(PROVISION_DIR, /\.sh$/), at(".ci/install-system-deps.sh")];
    const vagrantfile = at("vagrant/Vagrantfile");

    it("provisioning scripts pass ShellCheck", function () {
      requireTool(this, "shellcheck", "shellcheck");
      // -x follows `source lib.sh`; run from the scripts' directory, where the source= directives point.
      const r = run("shellcheck", ["-x", ...scripts().map((f) => path.relative(PROVISION_DIR, f))], PROVISION_DIR);
      expect(r.output, r.output).to.equal("");
      expect(r.status).to.equal(0);
    });

    it("ShellCheck fails a script with an unquoted expansion", function () {
      requireTool(this, "shellcheck", "shellcheck");
      const broken = path.join(tmp, "broken.sh");
      const original = fs.readFileSync(path.join(PROVISION_DIR, "common.sh"), "utf8");
      const text = original.replace(/^(#!.*\n)/, (shebang) => `${shebang}rm -rf $1/cache\n`);
      expect(text).to.not.equal(original);
      fs.writeFileSync(broken, text);
      const r = run("shellcheck", ["-x", broken], PROVISION_DIR);
      expect(r.status).to.not.equal(0);
      expect(r.output).to.match(/SC2086/);
    });

    it("the Vagrantfile passes ruby -c, and a truncated copy does not", function () {
      requireTool(this, "ruby", "ruby");
      const ok = run("ruby", ["-c", vagrantfile]);
      expect(ok.output).to.equal("Syntax OK");
      expect(ok.status).to.equal(0);
      const text = fs.readFileSync(vagrantfile, "utf8");
      const broken = path.join(tmp, "Vagrantfile");
      fs.writeFileSync(broken, text.slice(0, text.trimEnd().lastIndexOf("end")));
      expect(run("ruby", ["-c", broken]).status).to.not.equal(0);
    });

    it("every script the Vagrantfile runs exists, and every script is run", () => {
      const text = fs.readFileSync(vagrantfile, "utf8");
      const named = [...text.matchAll(/provision_script\(node, "([\w-]+)"/g)].map((m) => m[1]!);
      expect(named).to.include.members(["common", "consul", "vmpilot-install", "control-plane", "workload"]);
      for (const n of named) expect(fs.existsSync(path.join(PROVISION_DIR, `${n}.sh`)), `provision/${n}.sh`).to.equal(true);
      const onDisk = filesIn(PROVISION_DIR, /\.sh$/).map((f) => path.basename(f, ".sh")).filter((n) => n !== "lib");
      expect(onDisk.filter((n) => !named.includes(n)), "scripts nothing runs").to.deep.equal([]);
    });

    it("the testbed GitOps directory validates, and so does every walkthrough step applied in order", async () => {
      const state = fs.mkdtempSync(path.join(tmp, "mesh-"));
      fs.cpSync(at("vagrant/config/mesh"), state, { recursive: true });
      const steps = fs
        .readdirSync(at("vagrant/config/scenarios"), { withFileTypes: true })
        .filter((d) => d.isDirectory())
        .map((d) => d.name)
        .sort();
      expect(steps.length).to.be.at.least(4);
      for (const step of [undefined, ...steps]) {
        if (step) fs.cpSync(at("vagrant/config/scenarios", step), state, { recursive: true });
        let report = "";
        const code = await runValidate([state], { output: "text" }, { write: (s) => (report += s) });
        expect(report, `after step ${step ?? "(initial)"}`).to.match(/: 0 errors, 0 warnings\n$/);
        expect(code).to.equal(0);
      }
    });

    it("the control plane's config loads, and the walkthrough's REGISTRY_ONLY edit takes effect", () => {
      const file = at("vagrant/config/server/vmpilot.yaml");
      const text = fs.readFileSync(file, "utf8");
      const cfg = resolveServerConfig(YAML.parse(text), path.dirname(file), {});
      expect(cfg.configDirs).to.deep.equal(["/srv/vmpilot/mesh"]);
      expect(cfg.stateDir).to.equal("/var/lib/vmpilot/server");
      expect(cfg.mesh.outboundTrafficPolicy).to.equal("ALLOW_ANY");
      // The sed expression vagrant/README.md gives for step 02.
      const readme = fs.readFileSync(at("vagrant/README.md"), "utf8");
      const sed = /sed -i 's\/([^/]+)\/([^/]+)\/' \/etc\/vmpilot\/vmpilot\.yaml/.exec(readme);
      expect(sed, "README step 02 edits vmpilot.yaml with sed -i 's/OLD/NEW/'").to.not.equal(null);
      const edited = text.replace(sed![1]!, sed![2]!);
      expect(edited).to.not.equal(text);
      expect(resolveServerConfig(YAML.parse(edited), path.dirname(file), {}).mesh.outboundTrafficPolicy).to.equal("REGISTRY_ONLY");
    });

    it("the workload VMs' agent configs load, each on its VM's address, with the proxy uid provisioning creates", () => {
      const vf = fs.readFileSync(vagrantfile, "utf8");
      const prefix = /^NETWORK_PREFIX = "([\d.]+)"/m.exec(vf)![1]!;
      const ipOf = (expr: string) => expr.replace("#{NETWORK_PREFIX}", prefix);
      const cpIp = ipOf(/^CP_IP = "([^"]+)"/m.exec(vf)![1]!);
      const consulIp = ipOf(/^CONSUL_IP = "([^"]+)"/m.exec(vf)![1]!);
      const workloads = [...vf.matchAll(/^\s+"(vm\d+)" => "([^"]+)",/gm)].map((m) => ({ name: m[1]!, ip: ipOf(m[2]!) }));
      expect(workloads.map((w) => w.name)).to.deep.equal(["vm1", "vm2"]);
      const uid = Number(/ensure_user vmpilot-agent \S+ (\d+)/.exec(fs.readFileSync(path.join(PROVISION_DIR, "workload.sh"), "utf8"))![1]);
      for (const w of workloads) {
        const cfg = loadAgentConfig(at("vagrant/config/agent", `${w.name}.yaml`), {});
        expect(cfg.name).to.equal(w.name);
        expect(cfg.address).to.equal(w.ip);
        expect(`${cfg.controlPlane.host}:${cfg.controlPlane.port}`).to.equal(`${cpIp}:15012`);
        expect(cfg.interception.mode).to.equal("REDIRECT");
        expect(cfg.interception.proxyUid).to.equal(uid);
        expect(cfg.interception.excludeOutboundCidrs).to.include(`${consulIp}/32`);
        expect(cfg.output.dir).to.equal("/var/lib/vmpilot/agent");
      }
    });
  });
});

function walk(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((d) => {
    const p = path.join(dir, d.name);
    return d.isDirectory() ? walk(p) : d.name.endsWith(".ts") ? [p] : [];
  });
}
