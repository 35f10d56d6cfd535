// Notices when the commit a config checkout is at moves, even when no watched config file changes with it: a
// commit that only touches files outside the config dirs, a `git pull` that updates the ref after the files (so
// the rescan the files triggered read the old HEAD), a `git reset` back to a commit with the same content. The
// revision shown in /debug/configz, the info metric and `vmpilot proxy-status` must follow HEAD, not the files.
//
// git moves HEAD and refs by writing `NAME.lock` and renaming it over `NAME`, so watching the directories that
// hold HEAD, packed-refs and the checked-out branch's loose ref (non-recursively: .git/objects is busy and
// large) and filtering on those names sees every move. A branch switch changes which ref to watch, so every
// event re-reads the location and re-arms when it moved.
import { watch, type FSWatcher } from "node:fs";
import path from "node:path";
import { gitLocation, type GitLocation } from "./git-head.js";

/** Directory -> the file names in it whose replacement may move HEAD. Pure. */
export function gitHeadWatchPaths(locations: readonly GitLocation[]): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  const add = (file: string) => {
    const dir = path.dirname(file);
    const names = out.get(dir) ?? new Set<string>();
    names.add(path.basename(file));
    out.set(dir, names);
  };
  for (const loc of locations) {
    add(path.join(loc.gitDir, "HEAD"));
    add(path.join(loc.commonDir, "packed-refs"));
    // A worktree's own refs (refs/bisect, per-worktree refs) live in gitDir, branches in commonDir.
    if (loc.ref) for (const base of new Set([loc.gitDir, loc.commonDir])) add(path.join(base, loc.ref));
  }
  return out;
}

export class GitHeadWatcher {
  private watchers: FSWatcher[] = [];
  private armedFor = "";
  private closed = false;

  /** `onMove` is called (possibly more than once per move: debounce it) whenever HEAD may have moved. */
  constructor(
    private readonly dirs: readonly string[],
    private readonly onMove: () => void,
    private readonly onError: (message: string, err: unknown) => void = () => {},
  ) {}

  async start(): Promise<void> {
    await this.arm();
  }

  close(): void {
    this.closed = true;
    for (const w of this.watchers.splice(0)) w.close();
  }

  private async arm(): Promise<void> {
    const locations = (await Promise.all(this.dirs.map((d) => gitLocation(d)))).filter((l): l is GitLocation => l !== undefined);
    if (this.closed) return;
    const paths = gitHeadWatchPaths(locations);
    const key = JSON.stringify([...paths].map(([d, n]) => [d, [...n].sort()]).sort());
    if (key === this.armedFor) return;
    for (const w of this.watchers.splice(0)) w.close();
    this.armedFor = key;
    for (const [dir, names] of paths) {
      try {
        const w = watch(dir, (_event, filename) => {
          if (filename !== null && !names.has(filename)) return;
          this.onMove();
          this.arm().catch((err) => this.onError("cannot re-read the git checkout's HEAD location", err));
        });
        w.on("error", (err) => this.onError(`cannot watch ${dir}`, err));
        this.watchers.push(w);
      } catch (err) {
        // A loose-ref directory that does not exist yet (every branch packed) is covered by packed-refs and HEAD.
        if ((err as NodeJS.ErrnoException).code !== "ENOENT") this.onError(`cannot watch ${dir}`, err);
      }
    }
  }
}
