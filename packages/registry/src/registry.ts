// The Registry owns the sources and publishes one immutable snapshot after another. Source changes that
// arrive together (several sources reacting to one event) are coalesced into one rebuild; a rebuild that
// finds nothing observable changed publishes nothing and keeps the version.
import { EventEmitter } from "node:events";
import { createLogger } from "./logger.js";
import { DEFAULT_MESH, type MeshConfig, type RegistrySnapshot, type RegistrySource, type SourceState } from "./model.js";
import { buildSnapshot } from "./snapshot.js";

export interface RegistryOptions {
  sources?: RegistrySource[];
  mesh?: Partial<MeshConfig>;
  /**
   * Derive every snapshot from all inputs (buildSnapshotFull) instead of incrementally from the previous build.
   * Same snapshots, O(mesh) per change: for ruling the incremental build in or out when chasing a bug.
   */
  fullRebuilds?: boolean;
}

const log = createLogger("registry");

/** Before the first build: version 0, nothing in it, not synced. */
function emptySnapshot(mesh: MeshConfig): RegistrySnapshot {
  return Object.freeze({
    version: 0,
    mesh: Object.freeze({ ...mesh }),
    services: new Map(),
    endpoints: new Map(),
    configs: new Map(),
    problems: Object.freeze([]),
    sources: Object.freeze([]),
    changes: Object.freeze({ services: new Set<string>(), endpoints: new Set<string>(), routing: new Set<string>(), full: true }),
  });
}

export class Registry extends EventEmitter<{ snapshot: [RegistrySnapshot] }> {
  private readonly sources: RegistrySource[] = [];
  private readonly sourceListeners = new Map<RegistrySource, () => void>();
  private mesh: MeshConfig;
  private snapshot: RegistrySnapshot;
  /** The last built snapshot, undefined until the first build (so the first one is `full`). */
  private built: RegistrySnapshot | undefined;
  private started = false;
  private stopped = false;
  private pendingRebuild: NodeJS.Immediate | undefined;
  private readonly fullRebuilds: boolean;

  constructor(opts: RegistryOptions = {}) {
    super();
    this.mesh = { ...DEFAULT_MESH, ...opts.mesh };
    this.fullRebuilds = opts.fullRebuilds ?? false;
    this.snapshot = emptySnapshot(this.mesh);
    for (const s of opts.sources ?? []) this.attach(s);
  }

  /** Starts every source (each resolves once it has its first state) and publishes the first snapshot. */
  async start(): Promise<RegistrySnapshot> {
    if (this.started) throw new Error("registry already started");
    this.started = true;
    await Promise.all(this.sources.map((s) => s.start()));
    return this.rebuild();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.pendingRebuild) clearImmediate(this.pendingRebuild);
    this.pendingRebuild = undefined;
    for (const [s, l] of this.sourceListeners) s.off("change", l);
    await Promise.allSettled(this.sources.map((s) => s.stop()));
  }

  current(): RegistrySnapshot {
    return this.snapshot;
  }

  /** True once every source has synced at least once (what `GET /ready` reports). */
  get synced(): boolean {
    return this.built !== undefined && this.sources.every((s) => s.current().status.synced);
  }

  /** Adds a source at runtime (e.g. auto-registration); starts it if the registry runs, then rebuilds. */
  async addSource(source: RegistrySource): Promise<RegistrySnapshot> {
    if (this.sources.includes(source)) throw new Error(`source ${source.name} already added`);
    this.attach(source);
    if (!this.started || this.stopped) return this.snapshot;
    await source.start();
    return this.rebuild();
  }

  /**
   * Replaces the mesh config (SIGHUP reload); fields not given take their defaults, as when the file is read
   * afresh. A different mesh publishes a `full` snapshot; an equal one publishes nothing.
   */
  setMesh(mesh: Partial<MeshConfig>): RegistrySnapshot {
    this.mesh = { ...DEFAULT_MESH, ...mesh };
    return this.started ? this.rebuild() : this.snapshot;
  }

  /** Builds from the sources' current states now; publishes and returns the new snapshot if it differs. */
  rebuild(): RegistrySnapshot {
    if (this.pendingRebuild) clearImmediate(this.pendingRebuild);
    this.pendingRebuild = undefined;
    let next: RegistrySnapshot;
    const started = performance.now();
    try {
      next = buildSnapshot(this.built, this.sources.map(stateOf), this.mesh, { full: this.fullRebuilds });
    } catch (err) {
      // A bug in derivation must not take serving down: keep the last good snapshot, shout, retry on the next change.
      log.error("building the registry snapshot failed; keeping the previous one", { error: err instanceof Error ? err.stack : String(err) });
      return this.snapshot;
    }
    if (next === this.built) return this.snapshot;
    this.built = this.snapshot = next;
    const c = next.changes;
    log.info(`snapshot ${next.version} published`, {
      full: c.full,
      services: c.services.size,
      endpoints: c.endpoints.size,
      routing: c.routing.size,
      problems: next.problems.length,
      buildMs: Math.round((performance.now() - started) * 100) / 100,
    });
    this.emit("snapshot", next);
    return next;
  }

  private attach(source: RegistrySource): void {
    const listener = (): void => this.scheduleRebuild();
    this.sources.push(source);
    this.sourceListeners.set(source, listener);
    source.on("change", listener);
  }

  private scheduleRebuild(): void {
    if (!this.started || this.stopped || this.pendingRebuild) return;
    this.pendingRebuild = setImmediate(() => {
      this.pendingRebuild = undefined;
      this.rebuild();
    });
  }
}

function stateOf(source: RegistrySource): SourceState {
  return source.current();
}
