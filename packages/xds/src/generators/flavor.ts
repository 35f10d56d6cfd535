import type { ProxyKind } from "../proxy-view.js";
import type { ClusterFlavor } from "./policy.js";

/** Gateways are Envoys: they share the sidecars' cluster and endpoint resources. */
export function flavorOf(kind: ProxyKind): ClusterFlavor {
  return kind === "grpc" ? "grpc" : "envoy";
}
