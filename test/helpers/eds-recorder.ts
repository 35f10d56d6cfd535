// An EDS subscriber for end-to-end tests: a raw SotW ADS stream (as a sidecar in `shop`) that ACKs every response
// and keeps the health of every address in every answer, so a test can ask for the current state or for every
// state an address went through (a flap shows as an extra state).
import { decodeToJson } from "@vmpilot/xds/protojson";
import { TypeUrl } from "@vmpilot/xds/protos";
import { RawAdsClient, testNode } from "./raw-ads-client.js";

type J = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** Subscribes to one EDS cluster, ACKs everything, and records the health of every address in every answer. */
export class EdsRecorder {
  readonly answers: { at: number; health: Map<string, string> }[] = [];
  private stopped = false;
  private readonly client: RawAdsClient<"sotw">;
  readonly done: Promise<void>;
  constructor(xds: string, private readonly cluster: string) {
    this.client = new RawAdsClient(xds, "sotw");
    this.client.send({ node: testNode(`sidecar~10.9.9.9~recorder-${Date.now()}.shop~shop.svc.cluster.local`, { NAMESPACE: "shop" }), type_url: TypeUrl.ClusterLoadAssignment, resource_names: [cluster] });
    this.done = this.loop();
  }
  private async loop(): Promise<void> {
    while (!this.stopped) {
      let r;
      try {
        r = await this.client.next(500);
      } catch {
        if (this.client.status) return;
        continue;
      }
      for (const res of r.resources) {
        const cla = decodeToJson("envoy.config.endpoint.v3.ClusterLoadAssignment", res.value) as J;
        if (cla.cluster_name !== this.cluster) continue;
        const health = new Map<string, string>();
        for (const l of cla.endpoints ?? []) for (const e of l.lb_endpoints ?? []) health.set(e.endpoint.address.socket_address.address, e.health_status ?? "UNKNOWN");
        this.answers.push({ at: Date.now(), health });
      }
      this.client.send({ type_url: TypeUrl.ClusterLoadAssignment, resource_names: [this.cluster], response_nonce: r.nonce, version_info: r.version_info });
    }
  }
  health(ip: string): string | undefined {
    return this.answers.at(-1)?.health.get(ip);
  }
  /** Every state `ip` had in the answers since `since` (absent = "ABSENT"). */
  statesSince(ip: string, since: number): string[] {
    const before = this.answers.filter((a) => a.at < since).at(-1);
    const states = [before, ...this.answers.filter((a) => a.at >= since)].filter((a) => a !== undefined).map((a) => a!.health.get(ip) ?? "ABSENT");
    return states.filter((s, i) => i === 0 || states[i - 1] !== s);
  }
  async stop(): Promise<void> {
    this.stopped = true;
    this.client.close();
    await this.done;
  }
}
