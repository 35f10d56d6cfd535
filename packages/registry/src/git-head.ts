// The commit a config directory is checked out at, read from the `.git` files themselves (no git binary on
// the control-plane host is needed): HEAD, then the loose ref or packed-refs it names. Worktrees (`.git` is a
// file `gitdir: ...`, refs live in the `commondir`) are followed, since git-sync checks out into worktrees.
import { readFile, stat } from "node:fs/promises";
import path from "node:path";

const SHA = /^[0-9a-f]{40}(?:[0-9a-f]{24})?$/;

/** Where the checkout containing a directory keeps HEAD and the ref HEAD names (a detached HEAD names none). */
export interface GitLocation {
  gitDir: string;
  /** The shared repository of a worktree (refs, packed-refs); `gitDir` itself otherwise. */
  commonDir: string;
  /** The symbolic ref HEAD points at, e.g. `refs/heads/main`. */
  ref?: string;
}

/** The git files behind `dir`'s checkout, or undefined when `dir` is not in one. */
export async function gitLocation(dir: string): Promise<GitLocation | undefined> {
  const gitDir = await findGitDir(path.resolve(dir));
  if (!gitDir) return undefined;
  const head = (await readText(path.join(gitDir, "HEAD")))?.trim() ?? "";
  const m = /^ref:\s*(\S+)$/.exec(head);
  return { gitDir, commonDir: await commonDir(gitDir), ...(m ? { ref: m[1]! } : {}) };
}

/** HEAD's commit for the checkout containing `dir`, or undefined (not in a checkout, unreadable, unborn branch). */
export async function gitHead(dir: string): Promise<string | undefined> {
  const gitDir = await findGitDir(path.resolve(dir));
  if (!gitDir) return undefined;
  const head = (await readText(path.join(gitDir, "HEAD")))?.trim();
  if (!head) return undefined;
  if (SHA.test(head)) return head;
  const m = /^ref:\s*(\S+)$/.exec(head);
  if (!m) return undefined;
  const ref = m[1]!;
  const common = await commonDir(gitDir);
  for (const base of new Set([gitDir, common])) {
    const loose = (await readText(path.join(base, ref)))?.trim();
    if (loose && SHA.test(loose)) return loose;
  }
  const packed = await readText(path.join(common, "packed-refs"));
  for (const line of packed?.split("\n") ?? []) {
    const [sha, name] = line.trim().split(/\s+/);
    if (name === ref && sha && SHA.test(sha)) return sha;
  }
  return undefined;
}

async function findGitDir(start: string): Promise<string | undefined> {
  for (let dir = start; ; ) {
    const candidate = path.join(dir, ".git");
    const st = await stat(candidate).catch(() => undefined);
    if (st?.isDirectory()) return candidate;
    if (st?.isFile()) {
      const m = /^gitdir:\s*(.+)$/m.exec((await readText(candidate)) ?? "");
      if (m) return path.resolve(dir, m[1]!.trim());
    }
    const parent = path.dirname(dir);
    if (parent === dir) return undefined;
    dir = parent;
  }
}

async function commonDir(gitDir: string): Promise<string> {
  const c = (await readText(path.join(gitDir, "commondir")))?.trim();
  return c ? path.resolve(gitDir, c) : gitDir;
}

async function readText(file: string): Promise<string | undefined> {
  return readFile(file, "utf8").catch(() => undefined);
}
