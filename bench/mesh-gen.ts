// Generates a GitOps directory of S services and E endpoints (WorkloadEntries selected by workloadSelector),
// with VirtualServices and DestinationRules on a share of them. Addresses are documentation-style private
// ranges written into config only; nothing ever connects to them.
import fs from "node:fs/promises";
import path from "node:path";

export interface MeshShape {
  services: number;
  endpoints: number;
  /** Fraction of services that get a DestinationRule with v1/v2 subsets and a 90/10 VirtualService. */
  routedShare: number;
  namespaces: number;
}

export function serviceHost(i: number, shape: MeshShape): string {
  return `svc-${i}.ns-${i % shape.namespaces}.mesh.internal`;
}

function ip(n: number): string {
  return `10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}`;
}

export function workloadsYaml(i: number, shape: MeshShape, generation = 0): string {
  const per = Math.max(1, Math.round(shape.endpoints / shape.services));
  const ns = `ns-${i % shape.namespaces}`;
  const docs: string[] = [];
  for (let j = 0; j < per; j++) {
    docs.push(`apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: svc-${i}-${j}
  namespace: ${ns}
spec:
  address: ${ip(i * per + j + 1 + generation * 7919)}
  serviceAccount: svc-${i}
  locality: region-a/zone-${j % 3}
  labels:
    app: svc-${i}
    version: v${(j % 2) + 1}
`);
  }
  return docs.join("---\n");
}

export function routesYaml(i: number, shape: MeshShape, v1Weight = 90): string {
  const ns = `ns-${i % shape.namespaces}`;
  const host = serviceHost(i, shape);
  return `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: svc-${i}
  namespace: ${ns}
spec:
  host: ${host}
  subsets:
  - name: v1
    labels: { version: v1 }
  - name: v2
    labels: { version: v2 }
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: svc-${i}
  namespace: ${ns}
spec:
  hosts: [${host}]
  http:
  - route:
    - destination: { host: ${host}, subset: v1 }
      weight: ${v1Weight}
    - destination: { host: ${host}, subset: v2 }
      weight: ${100 - v1Weight}
`;
}

function serviceYaml(i: number, shape: MeshShape): string {
  return `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: svc-${i}
  namespace: ns-${i % shape.namespaces}
spec:
  hosts: [${serviceHost(i, shape)}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - { number: 8080, name: http, protocol: HTTP }
  workloadSelector:
    labels: { app: svc-${i} }
`;
}

export function isRouted(i: number, shape: MeshShape): boolean {
  return shape.routedShare > 0 && i % Math.round(1 / shape.routedShare) === 0;
}

export async function writeMesh(dir: string, shape: MeshShape): Promise<void> {
  await fs.mkdir(dir, { recursive: true });
  for (let i = 0; i < shape.services; i++) {
    const sub = path.join(dir, `ns-${i % shape.namespaces}`);
    await fs.mkdir(sub, { recursive: true });
    await fs.writeFile(path.join(sub, `svc-${i}.yaml`), serviceYaml(i, shape));
    await fs.writeFile(path.join(sub, `svc-${i}-workloads.yaml`), workloadsYaml(i, shape));
    if (isRouted(i, shape)) await fs.writeFile(path.join(sub, `svc-${i}-routes.yaml`), routesYaml(i, shape));
  }
}

/** Rewrites a file the way an editor or git does: write a temp file, then rename over. */
export async function atomicWrite(file: string, text: string): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}`;
  await fs.writeFile(tmp, text);
  await fs.rename(tmp, file);
}
