// The README's CI jobs, run for real: the GitHub Actions and GitLab CI snippets are taken from README.md,
// parsed as YAML, and their shell steps run in a pull request made with the git binary (a bare "origin" with
// the base branch, a shallow clone with the change). Only what a CI platform provides is stood in for: `npx`
// runs this checkout's `vmpilot` from source, `npm ci`/`npm run build` are already done, `gh` and `curl` record
// what they were asked to post. So a snippet that stops working (a renamed flag, an exit code that fails the
// job, a wrong path) fails here, not in someone's pipeline.
import { expect } from "chai";
import { execFile, spawn } from "node:child_process";
import { chmod, cp, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import YAML from "yaml";
import { requireGit } from "../../../test/helpers/git.js";

const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const CLI = join(ROOT, "packages/xds/src/cli.ts");
const TSX = import.meta.resolve("tsx");
const run = promisify(execFile);

const GIT_ENV = {
  GIT_AUTHOR_NAME: "ci test",
  GIT_AUTHOR_EMAIL: "ci@vmpilot.invalid",
  GIT_COMMITTER_NAME: "ci test",
  GIT_COMMITTER_EMAIL: "ci@vmpilot.invalid",
  GIT_CONFIG_NOSYSTEM: "1",
  GIT_CONFIG_GLOBAL: "/dev/null",
};

async function git(cwd: string, ...args: string[]): Promise<void> {
  await run("git", args, { cwd, env: { ...process.env, ...GIT_ENV } });
}

/** The ```yaml blocks of the README's GitOps section, in order. */
async function readmeSnippets(): Promise<unknown[]> {
  const readme = await readFile(join(ROOT, "README.md"), "utf8");
  const start = readme.indexOf("## GitOps: validating and reviewing a change");
  expect(start, "README has the GitOps section").to.be.greaterThan(-1);
  const next = readme.indexOf("\n## ", start + 1);
  const section = readme.slice(start, next < 0 ? undefined : next);
  return [...section.matchAll(/^```yaml\n([\s\S]*?)^```$/gm)].map((m) => YAML.parse(m[1]!) as unknown);
}

interface Shell {
  code: number | null;
  out: string;
}

function sh(shell: string, script: string, cwd: string, env: Record<string, string>): Promise<Shell> {
  return new Promise((resolve, reject) => {
    const child = spawn(shell, ["-e", "-c", script], { cwd, env, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (out += d));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, out }));
  });
}

describe("README CI snippets (run against a real pull request)", function () {
  this.timeout(120_000);
  let tmp: string;
  let bin: string;
  let calls: string;
  let github: { env: Record<string, string>; on: { pull_request: { paths: string[] } }; jobs: { check: { steps: { name?: string; run?: string; env?: Record<string, string> }[] } } };
  let gitlab: { "mesh-config": { variables: Record<string, string>; script: string[]; rules: { changes: string[] }[] } };

  before(async function () {
    await requireGit(this);
    const snippets = await readmeSnippets();
    expect(snippets, "a GitHub Actions and a GitLab CI snippet").to.have.length(2);
    [github, gitlab] = snippets as [typeof github, typeof gitlab];

    tmp = await mkdtemp(join(tmpdir(), "vmpilot-ci-snippets-"));
    bin = join(tmp, "bin");
    calls = join(tmp, "calls.log");
    await mkdir(bin);
    const tool = async (name: string, body: string) => {
      await writeFile(join(bin, name), `#!/bin/sh\n${body}\n`);
      await chmod(join(bin, name), 0o755);
    };
    await tool("npx", `[ "$1" = vmpilot ] || { echo "npx: only vmpilot is provided here" >&2; exit 127; }\nshift\nexec "${process.execPath}" --conditions=vmpilot-source --import "${TSX}" "${CLI}" "$@"`);
    await tool("npm", `echo "npm $*: done before the job" >&2`);
    for (const recorder of ["gh", "curl"]) await tool(recorder, `echo "${recorder} $*" >> "${calls}"`);
  });
  after(async () => {
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  /** origin (bare) with `main` holding config/examples; a shallow clone of it on a branch with `change` applied. */
  async function pullRequest(name: string, change: (repo: string) => Promise<void>): Promise<string> {
    const seed = join(tmp, name, "seed");
    await cp(join(ROOT, "config/examples"), join(seed, "config/examples"), { recursive: true });
    await git(seed, "init", "-q", "-b", "main");
    await git(seed, "add", ".");
    await git(seed, "commit", "-q", "-m", "base");
    const origin = join(tmp, name, "origin.git");
    await git(tmp, "clone", "-q", "--bare", seed, origin);
    const repo = join(tmp, name, "ws", "repo");
    await git(tmp, "clone", "-q", "--depth=1", `file://${origin}`, repo);
    await git(repo, "checkout", "-q", "-b", "change");
    await change(repo);
    await git(repo, "commit", "-q", "-am", "change");
    return repo;
  }

  const shiftCanary = async (repo: string) => {
    const f = join(repo, "config/examples/shop/catalog-traffic.yaml");
    await writeFile(f, (await readFile(f, "utf8")).replace("weight: 80", "weight: 70").replace("weight: 20", "weight: 30"));
  };
  const breakServiceEntry = async (repo: string) => {
    const f = join(repo, "config/examples/shop/catalog-service.yaml");
    await writeFile(f, (await readFile(f, "utf8")).replace("resolution: STATIC", "resolution: STATIK"));
  };

  function baseEnv(extra: Record<string, string>): Record<string, string> {
    return { PATH: `${bin}:${process.env.PATH}`, HOME: tmp, ...GIT_ENV, ...extra };
  }

  it("both jobs watch the config directory they check", () => {
    expect(github.on.pull_request.paths).to.deep.equal([`${github.env.CONFIG_DIR}/**`]);
    expect(gitlab["mesh-config"].rules[0]!.changes).to.deep.equal([`${gitlab["mesh-config"].variables.CONFIG_DIR}/**/*`]);
  });

  it("GitHub Actions: validates, and posts the diff to the summary and the pull request", async () => {
    const repo = await pullRequest("gh-ok", shiftCanary);
    const steps = github.jobs.check.steps.filter((s) => s.run !== undefined);
    expect(steps.map((s) => s.run!.split("\n")[0])).to.deep.equal(["npm ci && npm run build", 'npx vmpilot validate "$CONFIG_DIR"', 'git fetch --depth=1 origin "$GITHUB_BASE_REF"']);
    const summary = join(tmp, "gh-ok", "summary.md");
    const env = baseEnv({ ...github.env, GITHUB_BASE_REF: "main", GITHUB_STEP_SUMMARY: summary, GH_TOKEN: "t", PR: "42" });
    for (const step of steps) {
      // GitHub runs each `run` with `bash -e`; step `env` holds expressions CI would expand, given above.
      const r = await sh("bash", step.run!, repo, env);
      expect(r.code, `${step.run}\n${r.out}`).to.equal(0);
    }
    const posted = await readFile(summary, "utf8");
    expect(posted).to.match(/^#### vmpilot diff\n```\n--- \.\.\/base\/config\/examples \(git [0-9a-f]{12}\)\n\+\+\+ config\/examples \(git [0-9a-f]{12}\)\n/);
    expect(posted).to.contain("virtual_hosts[0].routes[1].route.weighted_clusters.clusters[0].weight: 80 -> 70");
    expect(posted.trimEnd().endsWith("```")).to.equal(true);
    expect(await readFile(calls, "utf8")).to.contain("gh pr comment 42 --body-file comment.md\n");
  });

  it("GitHub Actions: a pull request with an invalid config fails the job", async () => {
    const repo = await pullRequest("gh-bad", breakServiceEntry);
    const validate = github.jobs.check.steps.find((s) => s.run?.startsWith("npx vmpilot validate"))!;
    const diff = github.jobs.check.steps.find((s) => s.run?.startsWith("git fetch"))!;
    const env = baseEnv({ ...github.env, GITHUB_BASE_REF: "main", GITHUB_STEP_SUMMARY: join(tmp, "gh-bad.md"), GH_TOKEN: "t", PR: "43" });
    const v = await sh("bash", validate.run!, repo, env);
    expect(v.code).to.equal(1);
    expect(v.out).to.match(/config\/examples\/shop\/catalog-service\.yaml:\d+:\d+: error: .*STATIK/);
    // Even if validation were skipped, the diff step refuses (exit 2) rather than posting a misleading diff.
    const d = await sh("bash", diff.run!, repo, env);
    expect(d.code).to.equal(1); // `[ 2 -eq 1 ]` fails the step
    expect(d.out).to.contain("vmpilot diff: not comparing: fix the errors above first");
    expect(await readFile(calls, "utf8").catch(() => "")).to.not.contain("gh pr comment 43");
  });

  it("GitLab CI: validates, prints the diff, and posts it as a merge request note when a token is set", async () => {
    const repo = await pullRequest("gl-ok", shiftCanary);
    const job = gitlab["mesh-config"];
    const env = baseEnv({
      ...job.variables,
      CI_MERGE_REQUEST_TARGET_BRANCH_NAME: "main",
      CI_API_V4_URL: "https://gitlab.invalid/api/v4",
      CI_PROJECT_ID: "7",
      CI_MERGE_REQUEST_IID: "9",
      MR_NOTE_TOKEN: "secret",
    });
    // GitLab runs the script lines in one shell, stopping at the first failing line.
    const r = await sh("sh", job.script.join("\n"), repo, env);
    expect(r.code, r.out).to.equal(0);
    expect(r.out).to.contain("weight: 80 -> 70");
    expect(await readFile(join(repo, "diff.txt"), "utf8")).to.contain("weight: 20 -> 30");
    expect(await readFile(join(repo, "note.md"), "utf8")).to.match(/^#### vmpilot diff\n```\n---/);
    expect(await readFile(calls, "utf8")).to.contain(
      "curl --fail -sS -X POST -H PRIVATE-TOKEN: secret --data-urlencode body@note.md https://gitlab.invalid/api/v4/projects/7/merge_requests/9/notes\n",
    );
  });
});
