// The applied config revision: the git HEAD a file source last read its directories at (SourceStatus.revision,
// from registry/git-head.ts), shown where operators look: /debug/configz, the `vmpilot_config_revision_info`
// metric and `vmpilot proxy-status`. "Which commit is live?" is the first question after a merge.
import type { SourceStatus } from "@vmpilot/registry";

/** One commit id per checkout; a source whose directories sit in several checkouts reports them comma-separated. */
const GIT_REVISION = /^[0-9a-f]{40}(?:[0-9a-f]{24})?(?:,[0-9a-f]{40}(?:[0-9a-f]{24})?)*$/;

/**
 * True for a git commit id (or several). Other sources put other things in `revision` (Consul: the catalog's
 * X-Consul-Index), which change all the time and are no commit: they stay out of the info metric, where every
 * new value would be a new time series.
 */
export function isGitRevision(revision: string | undefined): revision is string {
  return revision !== undefined && GIT_REVISION.test(revision);
}

export interface SourceRevision {
  source: string;
  /** The git commit(s) applied; undefined when the source's directories are not in a git checkout. */
  revision?: string;
  synced: boolean;
  /** Some of the source's data is the last good state, kept while newer input fails (files with errors). */
  stale: boolean;
  /** The directories the source reads, when known. */
  dirs?: readonly string[];
}

/**
 * The applied revision of every source with directories or a git revision, in source order. `dirs` gives the
 * directories per source name (the control plane's one file source is `files`, reading `configDirs`).
 */
export function revisionInfo(sources: readonly SourceStatus[], dirs: Readonly<Record<string, readonly string[]>> = {}): SourceRevision[] {
  const out: SourceRevision[] = [];
  for (const s of sources) {
    const d = dirs[s.name];
    if (!d && !isGitRevision(s.revision)) continue;
    out.push({
      source: s.name,
      ...(isGitRevision(s.revision) ? { revision: s.revision } : {}),
      synced: s.synced,
      stale: s.stale,
      ...(d ? { dirs: d } : {}),
    });
  }
  return out;
}

/**
 * Label sets of `vmpilot_config_revision_info{source,dir,revision} 1`, the usual "info" metric shape: join on it
 * to annotate any graph with the live commit, alert when replicas disagree. One series per source; `dir` lists
 * the source's directories (comma-separated) because one file source reads them all at once.
 */
export function revisionInfoSeries(info: readonly SourceRevision[]): { source: string; dir: string; revision: string }[] {
  return info.filter((i) => i.revision !== undefined).map((i) => ({ source: i.source, dir: (i.dirs ?? []).join(","), revision: i.revision! }));
}

/** `config revision: <sha> (files)` lines for `vmpilot proxy-status`, one per source that has a revision. */
export function formatRevisionLines(info: readonly SourceRevision[]): string[] {
  return info
    .filter((i) => i.revision !== undefined)
    .map((i) => {
      const notes = [i.source, ...(i.synced ? [] : ["not synced"]), ...(i.stale ? ["stale: some input failed, its last good config is served"] : [])];
      return `config revision: ${i.revision} (${notes.join("; ")})`;
    });
}

/** The sources' revisions as a running server reports them (the `sources` of /debug/configz). */
export async function fetchRevisions(httpAddr: string): Promise<SourceRevision[]> {
  const res = await fetch(`http://${httpAddr}/debug/configz`, { signal: AbortSignal.timeout(10_000) });
  if (!res.ok) throw new Error(`GET /debug/configz: HTTP ${res.status}`);
  const body = (await res.json()) as { sources?: SourceStatus[] };
  return revisionInfo(body.sources ?? []);
}
