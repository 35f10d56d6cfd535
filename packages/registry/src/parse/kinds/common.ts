// Schema pieces shared by several kinds.
import { int, list, map, obj, req, str, UINT32_MAX, type RuleContext } from "../schema.js";
import * as syn from "../syntax.js";

export const PROTOCOLS = ["HTTP", "HTTPS", "GRPC", "HTTP2", "MONGO", "TCP", "TLS", "UDP"] as const;

export const portNumber = () => int(1, 65535);

export const labels = () => map(str({ check: syn.labelValue }), { key: syn.labelKey });

export const workloadSelector = () => obj({ labels: req(labels()) });

export const dnsLabel = () => str({ check: syn.dns1123Label });

/** `exportTo`: `.`, `*` or namespace names; `*` alone. Left as written: the registry normalises it. */
export const exportTo = () =>
  list(str({ check: syn.exportToEntry }), {
    unique: true,
  });

export function checkExportTo(spec: { exportTo?: string[] }, r: RuleContext): void {
  const e = spec.exportTo;
  if (e && e.includes("*") && e.length > 1) {
    r.error(e, e.indexOf("*"), "exportTo: '*' already exports to every namespace and cannot be combined with other entries");
  }
}

/** Service port (ServiceEntry, Gateway server, Sidecar listener). Protocol input is case-insensitive. */
export const port = () =>
  obj({
    number: req(portNumber()),
    protocol: req(str({ enum: PROTOCOLS, caseInsensitive: true })),
    name: req(str({ check: syn.dns1123Label })),
    targetPort: portNumber(),
  });

/** WorkloadEntry spec; also a ServiceEntry endpoint and a WorkloadGroup template. */
export const workloadEntryFields = () => ({
  address: str({ check: syn.endpointAddress }),
  ports: map(portNumber(), { key: syn.dns1123Label }),
  labels: labels(),
  network: str({ nonEmpty: true }),
  locality: str({ check: syn.locality }),
  weight: int(0, UINT32_MAX),
  serviceAccount: str({ check: syn.dns1123Subdomain }),
});

/** Checks every workload in `endpoints` together: Envoy rejects a locality whose endpoint weights sum past uint32. */
export function checkWeights(endpoints: { weight?: number }[], r: RuleContext): void {
  let sum = 0;
  endpoints.forEach((e, i) => {
    if (e.weight === 0) {
      r.warning(e, "weight", "weight 0 means the default weight (1), not 'no traffic'; remove the endpoint to drain it");
    }
    sum += e.weight || 1;
    if (sum > UINT32_MAX && sum - (e.weight || 1) <= UINT32_MAX) {
      r.error(endpoints, i, `the endpoint weights add up to more than ${UINT32_MAX} (Envoy's limit per locality)`);
    }
  });
}

export const host = (allowStar = false) => str({ check: (s) => syn.wildcardHost(s, allowStar) });

export const destination = () =>
  obj({
    host: req(str({ check: (s) => syn.wildcardHost(s) })),
    subset: str({ check: syn.dns1123Label }),
    port: obj({ number: req(portNumber()) }),
  });

/** `gateways` of a VirtualService or a match: `mesh`, `name` or `namespace/name`. */
export const gatewayRef = () =>
  str({
    check: (s) => {
      if (s === "mesh") return undefined;
      const parts = s.split("/");
      if (parts.length > 2) return `invalid gateway reference '${s}' (use 'name' or 'namespace/name')`;
      for (const p of parts) {
        const msg = syn.dns1123Label(p);
        if (msg) return `invalid gateway reference: ${msg}`;
      }
      return undefined;
    },
  });

/** Host in `namespace/host` form (Gateway servers, Sidecar egress). */
export function namespacedHost(s: string, { requireNamespace, allowTilde }: { requireNamespace: boolean; allowTilde: boolean }): string | undefined {
  const slash = s.indexOf("/");
  if (slash < 0) {
    if (requireNamespace) return `'${s}' must be in 'namespace/host' form (e.g. './*', '*/*', 'istio-system/*.example.com')`;
    return syn.wildcardHost(s, true);
  }
  const ns = s.slice(0, slash);
  const h = s.slice(slash + 1);
  if (!(ns === "." || ns === "*" || (allowTilde && ns === "~")) && syn.dns1123Label(ns)) {
    return `'${s}': namespace part '${ns}' must be '.', '*'${allowTilde ? ", '~'" : ""} or a namespace name`;
  }
  return syn.wildcardHost(h, true);
}
