// WorkloadEntry (one VM) and WorkloadGroup (the template auto-registered VMs are created from).
import type { WorkloadEntrySpec } from "../../api.js";
import { int, INT32_MAX, list, map, obj, req, str, type RuleContext } from "../schema.js";
import { extraKey } from "../locate.js";
import * as syn from "../syntax.js";
import { labels, portNumber, workloadEntryFields } from "./common.js";

export const workloadEntrySpec = () =>
  obj(
    { ...workloadEntryFields(), address: req(str({ check: syn.endpointAddress })) },
    { rule: (spec, r) => checkWorkloadEntry(spec as WorkloadEntrySpec, r) },
  );

function checkWorkloadEntry(we: WorkloadEntrySpec, r: RuleContext): void {
  if (we.address !== undefined && syn.isUnixAddress(we.address) && we.ports) {
    r.error(we, "ports", "spec.ports: a workload reached through a unix socket has no ports");
  }
  if (we.weight === 0) r.warning(we, "weight", "spec.weight: 0 means the default weight (1), not 'no traffic'");
}

const seconds = () => int(0, INT32_MAX);

const probe = () =>
  obj(
    {
      initialDelaySeconds: seconds(),
      timeoutSeconds: seconds(),
      periodSeconds: seconds(),
      successThreshold: seconds(),
      failureThreshold: seconds(),
      httpGet: obj({
        path: str(),
        port: req(portNumber()),
        host: str({ check: (s) => (syn.ipAddress(s) === undefined ? undefined : syn.hostname(s)) }),
        scheme: str({ enum: ["HTTP", "HTTPS"], caseInsensitive: true }),
        httpHeaders: list(obj({ name: req(str({ nonEmpty: true })), value: str() })),
      }),
      tcpSocket: obj({ host: str({ check: (s) => (syn.ipAddress(s) === undefined ? undefined : syn.hostname(s)) }), port: req(portNumber()) }),
      exec: obj({ command: req(list(str(), { nonEmpty: true })) }),
    },
    {
      rule: (p, r) => {
        const set = (["httpGet", "tcpSocket", "exec"] as const).filter((k) => p[k] !== undefined);
        if (set.length !== 1) {
          r.error(p, extraKey(p, set), `spec.probe: exactly one of httpGet, tcpSocket or exec must be set${set.length ? ` (found ${set.join(", ")})` : ""}`, { key: true });
        }
      },
    },
  );

export const workloadGroupSpec = () =>
  obj({
    metadata: obj({ labels: labels(), annotations: map(str()) }),
    template: req(
      obj(workloadEntryFields(), {
        rule: (t, r: RuleContext) => {
          if (t.address !== undefined) r.error(t, "address", "spec.template.address: a WorkloadGroup template has no address (each VM registers its own)", { key: true });
        },
      }),
    ),
    probe: probe(),
  });
