// A config directory read once the way the server would serve it: parsed and validated like `vmpilot validate`,
// built into a registry snapshot by the same pure buildSnapshot the Registry uses. No watching.
import { buildSnapshot, crossValidate, gitHead, validatePaths, type ConfigProblem, type MeshConfig, type RegistrySnapshot } from "@vmpilot/registry";

export interface LoadedConfig {
  dir: string;
  snapshot: RegistrySnapshot;
  /** Every problem, as the server would report it in /debug/configz for this directory. */
  problems: readonly ConfigProblem[];
  files: number;
  /** HEAD of the git checkout holding `dir`, if it is in one. */
  revision?: string;
}

function problemKey(p: ConfigProblem): string {
  return `${p.file}\0${p.line}\0${p.column}\0${p.severity}\0${p.message}`;
}

export async function loadConfigDir(dir: string, mesh: MeshConfig): Promise<LoadedConfig> {
  const [{ objects, problems, files }, revision] = await Promise.all([validatePaths([dir]), gitHead(dir)]);
  // validatePaths reports per-file problems and the cross-object checks; buildSnapshot runs the cross-object
  // checks itself (on the merged objects) and adds what deriving services finds. Hand it the per-file ones only,
  // so every problem is reported once, in the server's words.
  const cross = new Set(crossValidate(objects).map(problemKey));
  const perFile = problems.filter((p) => !cross.has(problemKey(p)));
  const snapshot = buildSnapshot(
    undefined,
    [{ objects, problems: perFile, status: { name: "files", synced: true, stale: false, ...(revision ? { revision } : {}) } }],
    mesh,
  );
  return { dir, snapshot, problems: snapshot.problems, files, ...(revision ? { revision } : {}) };
}
