// The applied config revision, from a real git checkout (made with the git binary) through the real FileSource,
// Registry and control plane to what operators read: /debug/configz, the info metric and `vmpilot proxy-status`.
import { expect } from "chai";
import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { promisify } from "node:util";
import type { SourceStatus } from "@vmpilot/registry";
import { setLogLevel } from "@vmpilot/registry/logger";
import { ResourceCache } from "../src/cache.js";
import { fetchRevisions, formatRevisionLines, isGitRevision, revisionInfo, revisionInfoSeries } from "../src/revision.js";
import { resolveServerConfig } from "../src/server/config.js";
import { ControlPlane } from "../src/server/control-plane.js";
import { until } from "../../../test/helpers/poll.js";
import { git, requireGit } from "../../../test/helpers/git.js";

const run = promisify(execFile);

const REPO_ROOT = join(import.meta.dirname, "..", "..", "..");
const CLI = join(dirname(import.meta.dirname), "src", "cli.ts");

const SHA1 = "0123456789abcdef0123456789abcdef01234567";
const SHA2 = "89abcdef0123456789abcdef0123456789abcdef";

describe("config revision: pure helpers", () => {
  const sources: SourceStatus[] = [
    { name: "files", synced: true, stale: false, revision: SHA1 },
    { name: "consul", synced: true, stale: false, revision: "4711" },
    { name: "extra-files", synced: true, stale: true, revision: `${SHA1},${SHA2}` },
    { name: "plain-dir", synced: false, stale: false },
  ];

  it("tells git commit ids from other sources' revisions (a Consul index)", () => {
    expect(isGitRevision(SHA1)).to.equal(true);
    expect(isGitRevision(`${SHA1},${SHA2}`)).to.equal(true);
    expect(isGitRevision("4711")).to.equal(false);
    expect(isGitRevision(SHA1.slice(0, 12))).to.equal(false);
    expect(isGitRevision(undefined)).to.equal(false);
  });

  it("lists sources with directories or a git revision, and one info series per source with a commit", () => {
    const info = revisionInfo(sources, { files: ["/srv/config"], "plain-dir": ["/etc/a", "/etc/b"] });
    expect(info).to.deep.equal([
      { source: "files", revision: SHA1, synced: true, stale: false, dirs: ["/srv/config"] },
      { source: "extra-files", revision: `${SHA1},${SHA2}`, synced: true, stale: true },
      { source: "plain-dir", synced: false, stale: false, dirs: ["/etc/a", "/etc/b"] },
    ]);
    expect(revisionInfoSeries(info)).to.deep.equal([
      { source: "files", dir: "/srv/config", revision: SHA1 },
      { source: "extra-files", dir: "", revision: `${SHA1},${SHA2}` },
    ]);
  });

  it("formats proxy-status header lines", () => {
    expect(formatRevisionLines(revisionInfo(sources))).to.deep.equal([
      `config revision: ${SHA1} (files)`,
      `config revision: ${SHA1},${SHA2} (extra-files; stale: some input failed, its last good config is served)`,
    ]);
    expect(formatRevisionLines([{ source: "files", revision: SHA1, synced: false, stale: false }])).to.deep.equal([`config revision: ${SHA1} (files; not synced)`]);
  });
});

const SE = (weight: number) => `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: shop}
spec:
  hosts: [api.shop.internal]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 10.0.0.1, weight: ${weight}}]
`;

describe("config revision: a git checkout served by the control plane", function () {
  this.timeout(60_000);
  let repo: string;
  let cp: ControlPlane | undefined;

  before(async function () {
    await requireGit(this);
    if (!process.env.VMPILOT_LOG_LEVEL) setLogLevel("warn");
    repo = await mkdtemp(join(tmpdir(), "vmpilot-revision-"));
  });
  after(async () => {
    await cp?.stop(1000);
    if (repo) await rm(repo, { recursive: true, force: true });
  });

  it("shows HEAD's commit in /debug/configz and proxy-status, and the new one after a commit that changes a file", async () => {
    const dir = join(repo, "config");
    await git(repo, "init", "-q");
    await run("mkdir", ["-p", dir]);
    await writeFile(join(dir, "api.yaml"), SE(1));
    await git(repo, "add", ".");
    await git(repo, "commit", "-q", "-m", "first");
    const first = await git(repo, "rev-parse", "HEAD");

    const config = resolveServerConfig({ configDirs: [dir], xdsAddr: "127.0.0.1:0", httpAddr: "127.0.0.1:0", debounce: { quiet: "20ms", max: "200ms" } }, repo, {});
    cp = new ControlPlane({ config, createCache: () => new ResourceCache() });
    await cp.start();
    const http = cp.addresses.http!;

    const configz = async () => ((await (await fetch(`http://${http}/debug/configz`)).json()) as { sources: SourceStatus[] }).sources;
    expect(await configz()).to.deep.include({ name: "files", synced: true, stale: false, revision: first });
    expect(formatRevisionLines(await fetchRevisions(http))).to.deep.equal([`config revision: ${first} (files)`]);

    // The change is committed in a second clone and applied here HEAD first, files second: FileSource reads HEAD
    // when a config file change makes it rescan, so this order makes the rescan see the new commit whatever the
    // machine's speed (a `git pull` updates files before the ref, and can race the rescan's debounce).
    const clone = join(repo, "clone");
    await git(repo, "clone", "-q", repo, clone);
    await writeFile(join(clone, "config/api.yaml"), SE(2));
    await git(clone, "commit", "-q", "-am", "second");
    await git(repo, "fetch", "-q", clone, "HEAD");
    await git(repo, "reset", "-q", "--soft", "FETCH_HEAD");
    await git(repo, "reset", "-q", "--hard");
    const second = await git(repo, "rev-parse", "HEAD");
    expect(second).to.not.equal(first);
    const lines = await until("the new revision", async () => {
      const l = formatRevisionLines(await fetchRevisions(http));
      return l[0] === `config revision: ${second} (files)` ? l : undefined;
    }, 30_000);
    expect(lines).to.have.length(1);
    expect(revisionInfoSeries(revisionInfo(cp.current().sources, { files: config.configDirs }))).to.deep.equal([{ source: "files", dir, revision: second }]);
    const metrics = await (await fetch(`http://${http}/metrics`)).text();
    expect(metrics).to.include(`vmpilot_config_revision_info{source="files",dir="${dir}",revision="${second}"} 1`);
    expect(metrics.match(/^vmpilot_config_revision_info\{/gm)).to.have.length(1, "one series: the old commit's is gone");

    // A commit that changes no config file (docs beside the config dir) still moves the applied revision: the
    // source watches HEAD and the branch ref, not only the files.
    await writeFile(join(repo, "README.md"), "docs only\n");
    await git(repo, "add", "README.md");
    await git(repo, "commit", "-q", "-m", "docs");
    const third = await git(repo, "rev-parse", "HEAD");
    await until("the docs-only commit", async () => (await configz()).find((s) => s.name === "files")?.revision === third, 30_000);

    // What an operator runs: the header line names the commit, then the (empty) proxy table.
    const { stdout } = await run(process.execPath, ["--conditions=vmpilot-source", "--import", "tsx", CLI, "proxy-status", "--http-addr", http], { cwd: REPO_ROOT });
    expect(stdout.split("\n").slice(0, 2)).to.deep.equal([`config revision: ${third} (files)`, "no proxies connected"]);
  });
});
