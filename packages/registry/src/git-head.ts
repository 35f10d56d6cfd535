// The commit a config directory is checked out at, read from the `.git` files themselves (no git binary on
// the control-plane host is needed): HEAD, then the loose ref or packed-refs it names. Worktrees (`.git` is a
// file `gitdir: ...`, refs live in the `commondir`) are followed, since git-sync checks out into worktrees.
import { readFile, stat } from "node:fs/promises";
import path from "node:path";

const SHA = /^[0-9a-f]{40}(?:[0-9a-f]{24})?$/;

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
