// FileSource: Istio config from YAML/JSON files in watched directories (the GitOps source).
//
// chokidar only tells us *that* something changed; what changed is decided by rescanning the directories,
// debounced. A rescan lists files and stats them; only files whose stat changed are read, and only files
// whose content hash changed are parsed again, so touching one file among a thousand parses one file.
// Rescanning (rather than trusting per-path events) is what makes the awkward cases come out right:
//  - editors' atomic saves (write a temp file, rename it over the original) are just a new inode;
//  - Kubernetes ConfigMap / git-sync layouts (`..2026_01_01_...` dir, `..data` symlink to it, top-level
//    `name.yaml -> ..data/name.yaml`) swap the `..data` symlink; the top-level paths now resolve to new
//    files, which a rescan sees as one change. Dot entries are never read as config (that would read every
//    file twice, once through `..data`), but they are watched, because the swap happens there.
import { createHash } from "node:crypto";
import { EventEmitter } from "node:events";
import { watch, type FSWatcher as NodeFsWatcher, type Stats } from "node:fs";
import { lstat, readdir, readFile, realpath, stat } from "node:fs/promises";
import path from "node:path";
import chokidar, { type FSWatcher } from "chokidar";
import { Debouncer } from "./debounce.js";
import { gitHead } from "./git-head.js";
import { GitHeadWatcher } from "./git-head-watch.js";
import { createLogger } from "./logger.js";
import type { AnyConfig, ConfigProblem, RegistrySource, SourceState, SourceStatus } from "./model.js";
import { MAX_FILE_BYTES, parseDocuments } from "./parse/index.js";

export interface FileSourceOptions {
  dirs: string[];
  /**
   * Coalescing filesystem events (ms): `quiet` period within a burst and its cap `max` (defaults 100 / 1000), and
   * the quiet period after a lone event (`first`, default 60, at most `quiet`): see debounce.ts for why.
   */
  debounceMs?: { quiet?: number; max?: number; first?: number };
  /** Source name in status and logs; defaults to `files`. */
  name?: string;
}

const CONFIG_EXTENSIONS: ReadonlySet<string> = new Set([".yaml", ".yml", ".json"]);
/** Files modified more recently than this are re-read on every scan (see refreshFile). */
const RACY_STAT_MS = 3000;

const log = createLogger("file-source");

/** What we know about one config file. */
interface FileState {
  /** Cheap identity of the content we last read; a different stat means "read it again"; "" means "always read". */
  statKey: string;
  hash: string;
  /** The objects this file contributes: from its last version without errors (see applyParse). */
  objects: readonly AnyConfig[];
  problems: readonly ConfigProblem[];
  /** The current content has errors and `objects` come from an earlier version. */
  stale: boolean;
}

export class FileSource extends EventEmitter<{ change: [] }> implements RegistrySource {
  readonly name: string;
  private readonly dirs: string[];
  private readonly files = new Map<string, FileState>();
  private readonly debouncer: Debouncer;
  private watcher: FSWatcher | undefined;
  private readonly linkWatchers: NodeFsWatcher[] = [];
  /** HEAD can move without a config file changing (see git-head-watch.ts); the revision must follow it. */
  private headWatcher: GitHeadWatcher | undefined;
  private readonly readyWaiters: (() => void)[] = [];
  /** Real paths of the configured dirs when the watcher was opened. */
  private rootTargets = "";
  private running = false;
  private state: SourceState;
  private synced = false;
  private dirErrors: string[] = [];
  /** Directories the last scan could not read; their files keep their last state. */
  private unreadableDirs: string[] = [];
  private revision: string | undefined;
  private scanning: Promise<void> | undefined;
  private rescanRequested = false;
  private stopped = false;
  /**
   * Known files the watcher reported since the last scan. When nothing else happened (no new config file, no
   * directory event, no retargeted link), only these are re-read: one edited file in a tree of thousands costs
   * one stat, not a walk of the tree (which is most of the latency of a change in a large mesh).
   */
  private readonly touched = new Set<string>();
  private fullScanNeeded = true;

  constructor(opts: FileSourceOptions) {
    super();
    if (opts.dirs.length === 0) throw new Error("FileSource needs at least one directory");
    this.name = opts.name ?? "files";
    this.dirs = [...new Set(opts.dirs)];
    const quietMs = opts.debounceMs?.quiet ?? 100;
    // An atomic save is one event, complete when seen: rescan 60 ms after it instead of 100, unless a second
    // event shows a burst (a git pull), which then waits for `quiet` ms of silence as before. Not less than 60:
    // chokidar drops a `change` of a path within 50 ms of the last one it reported (no trailing event), so only a
    // scan after that window is sure to read a second write that came inside it.
    this.debouncer = new Debouncer(() => this.requestScan(), {
      quietMs,
      maxMs: opts.debounceMs?.max ?? 1000,
      firstQuietMs: Math.min(opts.debounceMs?.first ?? 60, quietMs),
    });
    this.state = this.aggregate();
  }

  /** Watches, then scans once; resolves with `status.synced` true (bad files reported, good ones served). */
  async start(): Promise<void> {
    if (this.running) throw new Error(`${this.name}: already started`);
    this.running = true;
    this.stopped = false;
    await this.watchLinkedRoots();
    this.headWatcher = new GitHeadWatcher(this.dirs, () => this.debouncer.trigger(), (message, err) => log.warn(`${this.name}: ${message}`, { error: String(err) }));
    await this.headWatcher.start();
    await this.openWatcher();
    // Watching before the first scan: an edit racing with startup is either in the scan or triggers another.
    this.requestScan();
    await this.scanning;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.running = false;
    this.debouncer.cancel();
    for (const w of this.linkWatchers.splice(0)) w.close();
    this.headWatcher?.close();
    this.headWatcher = undefined;
    for (const release of this.readyWaiters.splice(0)) release();
    const w = this.watcher;
    this.watcher = undefined;
    await w?.close();
    await this.scanning;
  }

  /**
   * A configured directory that is itself a symlink (git-sync's `--link`, a blue/green deploy dir) is switched by
   * replacing the link, which happens in its parent: chokidar, watching what the link pointed to, never hears of
   * it. So the parent is watched for that one name, and a rescan that finds the link retargeted re-opens the
   * watcher on the new target.
   */
  private async watchLinkedRoots(): Promise<void> {
    for (const dir of this.dirs) {
      const st = await lstat(dir).catch(() => undefined);
      if (!st?.isSymbolicLink()) continue;
      const abs = path.resolve(dir);
      const name = path.basename(abs);
      try {
        const w = watch(path.dirname(abs), (_event, filename) => {
          if (filename !== null && filename !== name) return;
          this.fullScanNeeded = true;
          this.debouncer.trigger();
        });
        w.on("error", (err) => log.warn(`${this.name}: cannot watch the parent of ${dir}`, { error: String(err) }));
        this.linkWatchers.push(w);
      } catch (err) {
        log.warn(`${this.name}: cannot watch the parent of ${dir}; a retargeted link is noticed at the next change`, { error: String(err) });
      }
    }
  }

  private async openWatcher(): Promise<void> {
    this.rootTargets = await this.resolveRoots();
    if (this.stopped) return;
    const roots = this.dirs.map((d) => path.resolve(d));
    const watcher = chokidar.watch(this.dirs, {
      ignoreInitial: true,
      followSymlinks: true,
      ignored: (p: string, stats?: Stats) => isIgnored(roots, p, stats),
    });
    this.watcher = watcher;
    watcher.on("all", (event, p) => {
      this.noteEvent(event, p);
      this.debouncer.trigger();
    });
    watcher.on("error", (err) => log.warn(`${this.name}: watcher error`, { error: String(err) }));
    // stop() releases the wait too: chokidar never reports `ready` once closed.
    await new Promise<void>((resolve) => {
      this.readyWaiters.push(resolve);
      watcher.once("ready", () => resolve());
    });
  }

  /** Decides what the next scan must look at (see `touched`). */
  private noteEvent(event: string, p: string): void {
    if ((event === "change" || event === "add" || event === "unlink") && this.files.has(p)) this.touched.add(p);
    // A file that is not config (an editor's or an atomic write's temporary file) changes nothing we serve.
    else if ((event === "add" || event === "change" || event === "unlink") && !CONFIG_EXTENSIONS.has(path.extname(p).toLowerCase())) return;
    else this.fullScanNeeded = true;
  }

  private async resolveRoots(): Promise<string> {
    const targets = await Promise.all(this.dirs.map((d) => realpath(d).catch(() => "")));
    return targets.join("\n");
  }

  /** Re-opens the watcher when a configured directory now resolves elsewhere (see watchLinkedRoots). */
  private async followRetargetedRoots(): Promise<void> {
    const targets = await this.resolveRoots();
    if (targets === this.rootTargets || this.stopped) return;
    log.info(`${this.name}: a configured directory now resolves elsewhere; re-watching`, { targets: targets.split("\n") });
    const old = this.watcher;
    await old?.close();
    if (this.stopped) return;
    await this.openWatcher();
  }

  current(): SourceState {
    return this.state;
  }

  private requestScan(): void {
    if (this.stopped) return;
    if (this.scanning) {
      this.rescanRequested = true;
      return;
    }
    this.scanning = this.scanLoop().finally(() => (this.scanning = undefined));
  }

  private async scanLoop(): Promise<void> {
    do {
      this.rescanRequested = false;
      try {
        await this.scanOnce();
      } catch (err) {
        log.error(`${this.name}: scan failed; keeping the previous state`, { error: err instanceof Error ? err.stack : String(err) });
      }
    } while (this.rescanRequested && !this.stopped);
  }

  private async scanOnce(): Promise<void> {
    const full = this.fullScanNeeded || !this.synced;
    const touched = [...this.touched];
    this.touched.clear();
    this.fullScanNeeded = false;
    if (!full) return this.rescanFiles(touched);
    const found = new Map<string, Stats>();
    const unreadable: { dir: string; error: string }[] = [];
    for (const dir of this.dirs) await listConfigFiles(dir, found, new Set(), unreadable, true);
    const dirErrors = unreadable.map((u) => `${u.dir}: ${u.error}`);
    if (this.stopped) return;
    await this.followRetargetedRoots();

    let changed = !this.synced || dirErrors.join("\n") !== this.dirErrors.join("\n");
    for (const [file, st] of found) {
      if (await this.refreshFile(file, st)) changed = true;
    }
    for (const file of this.files.keys()) {
      // A directory we could not read (permissions, I/O error, a configured dir gone) keeps serving what it had:
      // dropping every service behind a transient error would do more harm than serving the last known state.
      const underUnreadable = unreadable.some((u) => isUnder(file, u.dir));
      if (!found.has(file) && !underUnreadable) {
        this.files.delete(file);
        log.info(`${file}: removed`);
        changed = true;
      }
    }
    for (const e of dirErrors) if (!this.dirErrors.includes(e)) log.warn(`${this.name}: cannot read config directory ${e}`);
    this.dirErrors = dirErrors;
    this.unreadableDirs = unreadable.map((u) => u.dir);

    const revision = await this.readRevision();
    if (revision !== this.revision) changed = true;
    this.revision = revision;

    if (!changed || this.stopped) return;
    this.synced = true;
    this.state = this.aggregate();
    this.emit("change");
  }

  /** Re-reads just the known files the watcher reported; anything unexpected falls back to a full scan. */
  private async rescanFiles(files: readonly string[]): Promise<void> {
    let changed = false;
    for (const file of files) {
      let st: Stats;
      try {
        st = await stat(file);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ENOENT") {
          this.fullScanNeeded = this.rescanRequested = true;
          continue;
        }
        if (this.files.delete(file)) {
          log.info(`${file}: removed`);
          changed = true;
        }
        continue;
      }
      if (!st.isFile()) {
        this.fullScanNeeded = this.rescanRequested = true;
        continue;
      }
      if (await this.refreshFile(file, st)) changed = true;
    }
    const revision = await this.readRevision();
    if (revision !== this.revision) changed = true;
    this.revision = revision;
    if (!changed || this.stopped) return;
    this.state = this.aggregate();
    this.emit("change");
  }

  /** Re-reads one file if its stat changed, re-parses it if its content changed. True if its state changed. */
  private async refreshFile(file: string, st: Stats): Promise<boolean> {
    const prev = this.files.get(file);
    // "Racy" stat (git's term): a file changed within the filesystem's timestamp granularity of our read (1-2 s
    // on ext3, HFS+, many network filesystems) can change again, same size, without its stat changing. Such a
    // file gets no stat identity, so the next scan reads and hashes it again instead of trusting the stat.
    const racy = Date.now() - Math.max(st.mtimeMs, st.ctimeMs) < RACY_STAT_MS;
    const statKey = racy ? "" : `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
    if (statKey !== "" && prev?.statKey === statKey) return false;
    if (st.size > MAX_FILE_BYTES) {
      const problem: ConfigProblem = { severity: "error", message: `file is larger than ${MAX_FILE_BYTES / 1024 / 1024} MiB; split it up`, file, line: 1, column: 1 };
      this.files.set(file, { statKey, hash: "", objects: prev?.objects ?? [], problems: [problem], stale: (prev?.objects.length ?? 0) > 0 });
      log.warn(`${file}:1:1: ${problem.message}`);
      return true;
    }
    let text: string;
    try {
      text = await readFile(file, "utf8");
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOENT") return false; // gone between listing and reading; the next scan removes it
      const problem: ConfigProblem = { severity: "error", message: `cannot read file: ${(err as Error).message}`, file, line: 1, column: 1 };
      this.files.set(file, { statKey, hash: "", objects: prev?.objects ?? [], problems: [problem], stale: (prev?.objects.length ?? 0) > 0 });
      log.warn(`${file}:1:1: cannot read file`, { error: String(err) });
      return true;
    }
    const hash = createHash("sha256").update(text).digest("hex");
    if (prev?.hash === hash) {
      this.files.set(file, { ...prev, statKey });
      return false;
    }
    this.files.set(file, applyParse(file, text, statKey, hash, prev));
    return true;
  }

  private async readRevision(): Promise<string | undefined> {
    const heads = await Promise.all(this.dirs.map((d) => gitHead(d)));
    const distinct = [...new Set(heads.filter((h): h is string => h !== undefined))];
    return distinct.length > 0 ? distinct.join(",") : undefined;
  }

  private aggregate(): SourceState {
    const objects: AnyConfig[] = [];
    const problems: ConfigProblem[] = [];
    let stale = false;
    for (const file of [...this.files.keys()].sort()) {
      const f = this.files.get(file)!;
      stale ||= this.unreadableDirs.some((d) => isUnder(file, d));
      objects.push(...f.objects);
      problems.push(...f.problems);
      stale ||= f.stale;
    }
    const firstError = problems.find((p) => p.severity === "error");
    const status: SourceStatus = { name: this.name, synced: this.synced, stale };
    const lastError = this.dirErrors[0] ?? (firstError && `${firstError.file}:${firstError.line}:${firstError.column}: ${firstError.message}`);
    if (lastError) status.lastError = lastError;
    if (this.revision) status.revision = this.revision;
    return { objects, problems, status };
  }
}

/**
 * The rule for a file with errors: it keeps ALL the objects of its last version that had none, even if some of
 * its documents are still valid. Half-applying a file (say, a ServiceEntry updated but the DestinationRule next
 * to it not) creates states nobody wrote; all-or-nothing per file is simple to predict and to explain.
 * Warnings (e.g. an unknown kind, skipped) do not count as errors.
 */
function applyParse(file: string, text: string, statKey: string, hash: string, prev: FileState | undefined): FileState {
  const { objects, problems } = parseDocuments(file, text);
  const errors = problems.filter((p) => p.severity === "error");
  for (const p of problems) {
    const line = `${p.file}:${p.line}:${p.column}: ${p.message}`;
    if (p.severity === "error") log.warn(line);
    else log.info(line);
  }
  if (errors.length === 0) {
    log.debug(`${file}: loaded ${objects.length} object(s)`);
    return { statKey, hash, objects, problems, stale: false };
  }
  const kept = prev?.objects ?? [];
  log.warn(`${file}: rejected (${errors.length} error(s)); ${kept.length > 0 ? `keeping its ${kept.length} object(s) from the last good version` : "it contributes no objects"}`);
  return { statKey, hash, objects: kept, problems, stale: kept.length > 0 };
}

/**
 * Config files under `dir`, recursively, following symlinks; dot entries are skipped (see the header).
 * Directories that cannot be read are collected in `unreadable`; a subdirectory that vanished while listing
 * was deleted and is simply absent, while a configured root that is missing counts as unreadable.
 */
async function listConfigFiles(
  dir: string,
  out: Map<string, Stats>,
  visited: Set<string>,
  unreadable: { dir: string; error: string }[],
  isRoot: boolean,
): Promise<void> {
  let names: string[];
  try {
    const dirStat = await stat(dir);
    if (!dirStat.isDirectory()) throw new Error("not a directory");
    const id = `${dirStat.dev}:${dirStat.ino}`;
    if (visited.has(id)) return; // a symlink loop, or the same tree reached twice
    visited.add(id);
    names = (await readdir(dir)).filter((n) => !n.startsWith(".")).sort();
  } catch (err) {
    if (!isRoot && (err as NodeJS.ErrnoException).code === "ENOENT") return;
    unreadable.push({ dir, error: (err as Error).message });
    return;
  }
  for (const name of names) {
    const p = path.join(dir, name);
    const st = await stat(p).catch(() => undefined); // dangling symlink, or removed meanwhile
    if (!st) continue;
    if (st.isDirectory()) await listConfigFiles(p, out, visited, unreadable, false);
    else if (st.isFile() && CONFIG_EXTENSIONS.has(path.extname(name).toLowerCase())) out.set(p, st);
  }
}

/** `file` lies below `dir` (however either was spelled: `./conf/`, `conf`, absolute). */
function isUnder(file: string, dir: string): boolean {
  const rel = path.relative(dir, file);
  return rel !== "" && !rel.startsWith("..") && !path.isAbsolute(rel);
}

/**
 * What chokidar need not watch: dot entries other than the `..`-prefixed ones of ConfigMap/git-sync layouts
 * (`.git`, editors' `.name.swp`), and regular files that are not config (editor backups, `4913` probes).
 */
function isIgnored(roots: readonly string[], p: string, stats?: Stats): boolean {
  const abs = path.resolve(p);
  const root = roots.find((r) => abs === r || abs.startsWith(r + path.sep));
  if (root === undefined || abs === root) return false;
  for (const seg of path.relative(root, abs).split(path.sep)) {
    if (seg.startsWith(".") && !seg.startsWith("..")) return true;
  }
  return stats?.isFile() === true && !CONFIG_EXTENSIONS.has(path.extname(abs).toLowerCase());
}
