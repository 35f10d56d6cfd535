// The registry's model: validated config objects with their origin, the services and endpoints derived
// from them (and from Consul), and the immutable snapshot that every consumer reads.
import type { Kind, Location, Port, Resolution, SpecByKind } from "./api.js";

/** Where a thing came from, so every error and every /debug/configz entry can point at it. */
export type Origin =
  | { type: "file"; file: string; line: number; column: number }
  | { type: "consul"; datacenter: string; service: string; index: number }
  | { type: "auto-registered"; group: string; namespace: string; proxyId: string };

export interface ObjectMeta {
  name: string;
  namespace: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

/** One validated config object. Spec defaults (namespace, location, resolution, exportTo) are already applied. */
export interface ConfigObject<K extends Kind = Kind> {
  kind: K;
  apiVersion: string;
  metadata: ObjectMeta;
  spec: SpecByKind[K];
  origin: Origin;
  /** Runtime state a source observed, not written by operators: auto-registered WorkloadEntries carry probe health here. */
  status?: { health?: HealthStatus };
}

export type AnyConfig = { [K in Kind]: ConfigObject<K> }[Kind];

/** `Kind/namespace/name`: unique across the merged config. */
export function configKey(o: { kind: string; metadata: { namespace: string; name: string } }): string {
  return `${o.kind}/${o.metadata.namespace}/${o.metadata.name}`;
}

export type Severity = "error" | "warning";

/** A problem found in input, located as precisely as the input allows (1-based line and column). */
export interface ConfigProblem {
  severity: Severity;
  message: string;
  file: string;
  line: number;
  column: number;
  /** Dotted path of the offending field, e.g. `spec.ports[1].number`. */
  field?: string;
  kind?: string;
  name?: string;
  namespace?: string;
}

export type HealthStatus = "HEALTHY" | "UNHEALTHY" | "DEGRADED" | "UNKNOWN";

export interface ServicePort extends Port {}

/**
 * One host of one ServiceEntry (a ServiceEntry with three hosts is three services, as in Istio),
 * or one Consul service. Keyed by `namespace/hostname`.
 */
export interface Service {
  key: string;
  hostname: string;
  namespace: string;
  /** VIPs / CIDRs from `addresses`. */
  addresses: string[];
  /** [IPv4, IPv6] virtual IPs allocated when `addresses` is empty (vips.ts): stable across restarts and replicas. */
  autoAddresses?: string[];
  ports: ServicePort[];
  resolution: Resolution;
  location: Location;
  /** Normalised: `*` or explicit namespace names (`.` already replaced by the owner's namespace). */
  exportTo: string[];
  /** ServiceEntry subjectAltNames (Consul: from a decorating ServiceEntry). */
  subjectAltNames: string[];
  /** Label selector when endpoints come from WorkloadEntries. */
  workloadSelector?: Record<string, string>;
  /** The ServiceEntry (or Consul service) that declared it. */
  configKey: string;
  /** Config key of the file ServiceEntry that decorates a Consul service (its SANs, exportTo and location apply). */
  decoratedBy?: string;
  origin: Origin;
}

export interface Endpoint {
  /** IP literal, DNS name (DNS resolutions) or `unix:///path`. */
  address: string;
  /** Service port name -> endpoint port; a missing name means the service port (or its targetPort). */
  ports: Record<string, number>;
  labels: Record<string, string>;
  network?: string;
  /** `region/zone/subzone`. */
  locality?: string;
  weight?: number;
  serviceAccount?: string;
  /** Derived from namespace + serviceAccount + trust domain. */
  spiffeId?: string;
  health: HealthStatus;
  /** The WorkloadEntry's `Kind/ns/name`, or undefined for inline ServiceEntry endpoints and Consul. */
  workload?: string;
  namespace: string;
  origin: Origin;
}

export interface MeshConfig {
  trustDomain: string;
  outboundTrafficPolicy: "ALLOW_ANY" | "REGISTRY_ONLY";
  /** Consul DNS domain for `NAME.service.DOMAIN` hosts. */
  consulDomain: string;
}

export const DEFAULT_MESH: MeshConfig = {
  trustDomain: "cluster.local",
  outboundTrafficPolicy: "ALLOW_ANY",
  consulDomain: "consul",
};

/** What changed between two snapshots; consumers use it to regenerate only what it touches. */
export interface ChangeSet {
  /** Service keys added, removed or whose definition changed. */
  services: ReadonlySet<string>;
  /** Service keys whose endpoint set changed. */
  endpoints: ReadonlySet<string>;
  /** Config keys (`Kind/ns/name`) of VirtualService, DestinationRule, Gateway, Sidecar objects changed. */
  routing: ReadonlySet<string>;
  /** Everything may have changed (first snapshot, mesh config change). */
  full: boolean;
}

export interface SourceStatus {
  name: string;
  synced: boolean;
  /** Last good data kept while the source is failing. */
  stale: boolean;
  lastError?: string;
  /** e.g. the git HEAD of a config dir, or the Consul index. */
  revision?: string;
}

/** Immutable, versioned view of the whole mesh. Never mutated after it is published. */
export interface RegistrySnapshot {
  version: number;
  mesh: MeshConfig;
  services: ReadonlyMap<string, Service>;
  /** Service key -> endpoints (possibly empty). */
  endpoints: ReadonlyMap<string, readonly Endpoint[]>;
  /** Every validated config object by `configKey`. */
  configs: ReadonlyMap<string, AnyConfig>;
  /** Current problems of every source (files that fail keep their last good objects). */
  problems: readonly ConfigProblem[];
  sources: readonly SourceStatus[];
  changes: ChangeSet;
}

/** What a source hands the registry: its complete current state (not a diff). */
export interface SourceState {
  objects: readonly AnyConfig[];
  /** Services a source provides directly (Consul). */
  services?: readonly Service[];
  endpoints?: ReadonlyMap<string, readonly Endpoint[]>;
  problems: readonly ConfigProblem[];
  status: SourceStatus;
}

/** A registry source: files, Consul, auto-registration. Emits `change` after its state changed. */
export interface RegistrySource {
  readonly name: string;
  start(): Promise<void>;
  stop(): Promise<void>;
  current(): SourceState;
  on(event: "change", listener: () => void): this;
  off(event: "change", listener: () => void): this;
}

export type { Kind, Location, Port, Resolution, SpecByKind };
