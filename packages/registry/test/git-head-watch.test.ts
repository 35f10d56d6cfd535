// HEAD moves that change no config file, seen through a real git checkout made with the git binary.
import { expect } from "chai";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gitHead, gitLocation } from "../src/git-head.js";
import { gitHeadWatchPaths, GitHeadWatcher } from "../src/git-head-watch.js";
import { git, requireGit } from "../../../test/helpers/git.js";

describe("git HEAD watch", function () {
  this.timeout(30_000);
  let repo = "";
  let watcher: GitHeadWatcher | undefined;

  before(async function () {
    await requireGit(this);
    repo = await mkdtemp(join(tmpdir(), "vmpilot-head-watch-"));
  });
  after(async () => {
    watcher?.close();
    if (repo) await rm(repo, { recursive: true, force: true });
  });

  it("watches HEAD, packed-refs and the checked-out branch, in the worktree's and the shared git dir", () => {
    const paths = gitHeadWatchPaths([{ gitDir: "/r/.git/worktrees/w", commonDir: "/r/.git", ref: "refs/heads/feature/x" }]);
    expect([...paths].map(([d, n]) => [d, [...n].sort()])).to.deep.equal([
      ["/r/.git/worktrees/w", ["HEAD"]],
      ["/r/.git", ["packed-refs"]],
      ["/r/.git/worktrees/w/refs/heads/feature", ["x"]],
      ["/r/.git/refs/heads/feature", ["x"]],
    ]);
    expect([...gitHeadWatchPaths([{ gitDir: "/r/.git", commonDir: "/r/.git" }])].map(([d, n]) => [d, [...n].sort()])).to.deep.equal([["/r/.git", ["HEAD", "packed-refs"]]]);
  });

  it("reports commits outside the config dir, a branch switch, and commits on the new branch", async () => {
    const config = join(repo, "config");
    await mkdir(config);
    await git(repo, "init", "-q", "-b", "main");
    await writeFile(join(config, "a.yaml"), "# config\n");
    await git(repo, "add", ".");
    await git(repo, "commit", "-q", "-m", "first");
    expect(await gitLocation(config)).to.deep.equal({ gitDir: join(repo, ".git"), commonDir: join(repo, ".git"), ref: "refs/heads/main" });

    let moves = 0;
    watcher = new GitHeadWatcher([config], () => moves++);
    await watcher.start();
    const movesAfter = async (what: string, step: () => Promise<void>): Promise<string> => {
      const before = moves;
      await step();
      const deadline = Date.now() + 10_000;
      while (moves === before) {
        if (Date.now() > deadline) throw new Error(`no HEAD move reported after ${what}`);
        await new Promise((r) => setTimeout(r, 20));
      }
      return (await gitHead(config))!;
    };

    const docs = await movesAfter("a docs-only commit", async () => {
      await writeFile(join(repo, "README.md"), "docs\n");
      await git(repo, "add", "README.md");
      await git(repo, "commit", "-q", "-m", "docs");
    });
    expect(docs).to.equal(await git(repo, "rev-parse", "HEAD"));

    await movesAfter("a branch switch", () => git(repo, "checkout", "-q", "-b", "feature/x").then(() => undefined));
    const onBranch = await movesAfter("a commit on the new branch", async () => {
      await git(repo, "commit", "-q", "--allow-empty", "-m", "on feature/x");
    });
    expect(onBranch).to.equal(await git(repo, "rev-parse", "HEAD")).and.not.equal(docs);
  });
});
