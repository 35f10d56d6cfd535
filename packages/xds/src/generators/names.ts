// Resource names, exactly as DESIGN.md fixes them (Istio's names, so operators' tooling and habits carry over).

export const PASSTHROUGH_CLUSTER = "PassthroughCluster";
export const BLACKHOLE_CLUSTER = "BlackHoleCluster";
export const VIRTUAL_OUTBOUND_LISTENER = "virtualOutbound";
export const VIRTUAL_INBOUND_LISTENER = "virtualInbound";
export const OUTBOUND_CAPTURE_PORT = 15001;
export const INBOUND_CAPTURE_PORT = 15006;

/** `outbound|PORT|SUBSET|HOST`; the subset is empty when none. */
export function outboundClusterName(port: number, subset: string | undefined, host: string): string {
  return `outbound|${port}|${subset ?? ""}|${host}`;
}

export function inboundClusterName(port: number): string {
  return `inbound|${port}||`;
}

/** Envoy sidecars: per-port outbound listener `0.0.0.0_PORT`. */
export function outboundListenerName(port: number): string {
  return `0.0.0.0_${port}`;
}

/** Envoy sidecars: the RDS route config of a per-port listener is named by the port alone. */
export function portRouteConfigName(port: number): string {
  return String(port);
}

/** Virtual hosts (both kinds), gRPC listeners and gRPC route configs: `HOST:PORT`. */
export function hostPortName(host: string, port: number): string {
  return `${host}:${port}`;
}

/** Istio's SNI for ISTIO_MUTUAL upstreams: `outbound_.PORT_.SUBSET_.HOST`. */
export function istioMutualSni(port: number, subset: string | undefined, host: string): string {
  return `outbound_.${port}_.${subset ?? ""}_.${host}`;
}
