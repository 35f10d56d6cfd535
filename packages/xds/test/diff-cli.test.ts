// `vmpilot diff` as a reviewer or a CI job runs it: a real child process from the TypeScript sources (the
// option variants in-process through the command's own action function, to keep the suite quick), on copies
// of config/examples (one of them a real git checkout), checked by exit code and output.
import { expect } from "chai";
import { spawn } from "node:child_process";
import { cp, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { runDiff, type DiffOptions } from "../src/cli/diff.js";
import { git, requireGit } from "../../../test/helpers/git.js";

const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const CLI = join(ROOT, "packages/xds/src/cli.ts");
const EXAMPLES = join(ROOT, "config/examples");

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function vmpilot(args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--conditions=vmpilot-source", "--import", "tsx", CLI, ...args], { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

/** The same command in-process (what the action calls), for the cases where a child process adds nothing. */
async function diffInProcess(args: string[], opts: Partial<DiffOptions> = {}): Promise<Run> {
  let stdout = "";
  let stderr = "";
  const code = await runDiff(args[0]!, args[1]!, { proxy: [], defaultProxies: true, output: "text", ...opts }, { out: { write: (s) => (stdout += s) }, err: { write: (s) => (stderr += s) } });
  return { code, stdout, stderr };
}


async function edit(file: string, from: string, to: string): Promise<void> {
  const text = await readFile(file, "utf8");
  expect(text, `${file} contains ${from}`).to.contain(from);
  await writeFile(file, text.replace(from, to));
}

describe("vmpilot diff (CLI)", function () {
  this.timeout(60_000);
  let tmp: string;
  let base: string;
  let same: string;
  let changed: string;
  let broken: string;

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), "vmpilot-cli-diff-"));
    [base, same, changed, broken] = ["base", "same", "changed", "broken"].map((d) => join(tmp, d)) as [string, string, string, string];
    for (const d of [base, same, changed, broken]) await cp(EXAMPLES, d, { recursive: true });
    // A routing change (the canary split moves from 80/20 to 70/30) and an endpoint change (one v1 VM moves).
    await edit(join(changed, "shop/catalog-traffic.yaml"), "weight: 80", "weight: 70");
    await edit(join(changed, "shop/catalog-traffic.yaml"), "weight: 20", "weight: 30");
    await edit(join(changed, "shop/catalog-workloads.yaml"), "address: 10.20.2.11", "address: 10.20.3.11");
    await edit(join(broken, "shop/catalog-service.yaml"), "resolution: STATIC", "resolution: STATIK");
  });
  after(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  it("exits 0 and says so when two directories configure the same", async () => {
    const r = await vmpilot(["diff", base, same]);
    expect(r.stderr).to.equal("");
    expect(r.code).to.equal(0);
    expect(r.stdout).to.contain(`--- ${base}\n+++ ${same}\n`);
    expect(r.stdout).to.match(/no change for any of \d+ proxy views \(namespaces egress, payments, shop\)/);
  });

  it("exits 1 and shows which proxies get which route and endpoint changes", async () => {
    const r = await vmpilot(["diff", base, changed]);
    expect(r.code, r.stderr).to.equal(1);
    // Sidecars everywhere (catalog is exported to all namespaces), and the catalog VMs' own sidecars.
    const blocks = r.stdout.split("\n\n").map((b) => b.split("\n"));
    const group = blocks.find((b) => b.includes("    sidecar in egress"))!;
    expect(group, r.stdout).to.not.equal(undefined);
    expect(group[0]).to.match(/^\d+ proxy views in namespaces egress, payments, shop: 6 changed resources$/);
    expect(group).to.include.members([
      "    sidecar in shop",
      "    sidecar in shop {app=catalog,version=v1}: WorkloadEntry shop/catalog-v1-a, WorkloadEntry shop/catalog-v1-b",
      "  ~ route 8080",
      "      virtual_hosts[0].routes[1].route.weighted_clusters.clusters[0].weight: 80 -> 70",
      "      virtual_hosts[0].routes[1].route.weighted_clusters.clusters[1].weight: 20 -> 30",
      "  ~ endpoints outbound|8080|v1|catalog.shop.mesh.internal",
      "  ~ endpoints outbound|8080||catalog.shop.mesh.internal",
    ]);
    // The v2 subset's endpoints did not move: not listed.
    expect(group.join("\n")).to.not.contain("outbound|8080|v2|");
    const moved = group.indexOf("  ~ endpoints outbound|8080|v1|catalog.shop.mesh.internal");
    expect(group.slice(moved + 1, moved + 3).map((l) => l.trim().replace(/^endpoints\[\d+\]\.lb_endpoints\[\d+\]/, "EP"))).to.deep.equal([
      "EP: removed 10.20.2.11:8080",
      "EP: added 10.20.3.11:8080",
    ]);
    // gRPC clients have per-host route configs: a group of their own with the same weight change.
    expect(r.stdout).to.match(/\n {4}gRPC client in shop\n(?:.*\n)*? {2}~ route catalog\.shop\.mesh\.internal:8080\n {6}virtual_hosts\[0\]\.routes\[1\]\.route\.weighted_clusters\.clusters\[0\]\.weight: 80 -> 70\n/);
  });

  it("--output json carries every view and field", async () => {
    const r = await diffInProcess([base, changed], { output: "json" });
    expect(r.code, r.stderr).to.equal(1);
    const j = JSON.parse(r.stdout) as {
      changed: boolean;
      groups: { proxies: { kind: string; namespace: string; ips?: string[] }[]; changes: { type: string; name: string; action: string; fields?: { path: string; old?: unknown; new?: unknown }[] }[] }[];
      unchanged: unknown[];
    };
    expect(j.changed).to.equal(true);
    const route = j.groups.flatMap((g) => g.changes).find((c) => c.type === "route" && c.name === "8080")!;
    expect(route.fields).to.deep.include({ path: "virtual_hosts[0].routes[1].route.weighted_clusters.clusters[0].weight", old: 80, new: 70 });
    const workloadView = j.groups.flatMap((g) => g.proxies).find((p) => p.ips?.includes("10.20.1.11"));
    expect(workloadView, "the catalog-v1 sidecar view carries its address").to.include({ kind: "sidecar", namespace: "shop" });
  });

  it("--proxy with --no-default-proxies compares only the named views", async () => {
    const r = await diffInProcess([base, changed], { defaultProxies: false, proxy: ["grpc:payments", "payments/app=ledger"] });
    expect(r.code, r.stderr).to.equal(1);
    expect(r.stdout).to.contain("2 of 2 proxy views change, in namespaces payments");
    expect(r.stdout).to.contain("    gRPC client in payments [--proxy]");
    expect(r.stdout).to.contain("    sidecar in payments {app=ledger} [--proxy]");
  });

  it("exits 2 on an invalid config, with validate's FILE:LINE:COL lines, and prints no diff", async () => {
    const r = await vmpilot(["diff", base, broken]);
    expect(r.code).to.equal(2);
    expect(r.stdout).to.equal("");
    expect(r.stderr).to.match(new RegExp(`^${join(broken, "shop/catalog-service.yaml").replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}:\\d+:\\d+: error: .*STATIK`, "m"));
    expect(r.stderr).to.contain("not comparing: fix the errors above first");
  });

  it("exits 2 on a missing directory and on a malformed --proxy", async () => {
    const missing = await diffInProcess([base, join(tmp, "nope")]);
    expect(missing.code).to.equal(2);
    expect(missing.stderr).to.contain(`${join(tmp, "nope")}:1:1: error: no such file or directory`);
    const bad = await diffInProcess([base, same], { proxy: ["shop/app"] });
    expect(bad.code).to.equal(2);
    expect(bad.stderr).to.contain("label 'app' is not KEY=VALUE");
  });

  it("names the git commit each side is checked out at", async function () {
    await requireGit(this);
    const repo = join(tmp, "repo");
    await cp(EXAMPLES, join(repo, "config"), { recursive: true });
    await git(repo, "init", "-q");
    await git(repo, "add", ".");
    await git(repo, "commit", "-q", "-m", "base");
    const baseSha = await git(repo, "rev-parse", "HEAD");
    await git(repo, "worktree", "add", "-q", join(tmp, "base-worktree"), "HEAD");
    await edit(join(repo, "config/shop/catalog-traffic.yaml"), "weight: 80", "weight: 75");
    await edit(join(repo, "config/shop/catalog-traffic.yaml"), "weight: 20", "weight: 25");
    await git(repo, "commit", "-q", "-am", "shift canary");
    const headSha = await git(repo, "rev-parse", "HEAD");
    expect(headSha).to.not.equal(baseSha);

    // The flags go through the real command line here (the in-process cases above skip commander).
    const r = await vmpilot(["diff", join(tmp, "base-worktree/config"), join(repo, "config"), "--no-default-proxies", "--proxy", "shop", "-o", "text"]);
    expect(r.code, r.stderr).to.equal(1);
    expect(r.stdout.split("\n").slice(0, 2)).to.deep.equal([
      `--- ${join(tmp, "base-worktree/config")} (git ${baseSha.slice(0, 12)})`,
      `+++ ${join(repo, "config")} (git ${headSha.slice(0, 12)})`,
    ]);
    expect(r.stdout).to.contain("1 of 1 proxy view change, in namespaces shop");
    expect(r.stdout).to.contain("weight: 80 -> 75");
  });
});
