// State-of-the-world ADS (StreamAggregatedResources): what Envoy with `GRPC` and every gRPC xDS client speak.
//
// Per type: the subscription restated in full by every request; the content of the last response; its nonce.
// LDS/CDS responses carry everything the proxy should have (absence = removal); RDS/EDS carry the subscribed
// names that exist. A request whose nonce is not the latest we sent for its type is stale and ignored (the
// client sends another once it has processed the latest response).
import { COMPLETE_TYPES, contentVersion, type EncodedResource } from "./resources.js";
import { encodeSotwResponse, type SotwRequest } from "./ads.js";
import { type Plan, type TypeState, XdsStream } from "./stream.js";

interface SotwTypeState extends TypeState {
  /** Content of the last response, by name. */
  sent: Map<string, EncodedResource>;
}

export class SotwStream extends XdsStream {
  protected declare readonly types: Map<string, SotwTypeState>;

  handle(request: unknown): void {
    const req = request as SotwRequest;
    if (!req.type_url) throw new Error("DiscoveryRequest without type_url");
    if (this.handleHealth(req.type_url, req.error_detail)) return;
    let state = this.types.get(req.type_url);
    if (!state) {
      // First request for this type on this stream (a reconnecting client may carry a nonce and a version
      // from its previous stream: neither means anything here, and it always gets an answer).
      state = { typeUrl: req.type_url, wildcard: false, names: new Set(), sent: new Map(), force: true, gen: 0 };
      this.types.set(req.type_url, state);
      this.subscribe(state, req.resource_names, true);
      this.evaluate();
      return;
    }
    if (req.response_nonce !== state.lastSent?.nonce) return; // stale: superseded by a later response
    state.gen++;
    this.settle(state, req.response_nonce, req.error_detail);
    this.subscribe(state, req.resource_names, false);
    // Any ACK can unblock another type's queued response or deferred removals.
    this.evaluate();
  }

  /** Applies the restated subscription; a subscription that grows is answered even if nothing changed. */
  private subscribe(state: SotwTypeState, resourceNames: readonly string[], first: boolean): void {
    const explicit = resourceNames.filter((n) => n !== "*");
    // Legacy wildcard: an empty list for LDS/CDS (Envoy), or an explicit "*" for any type.
    const wildcard = resourceNames.includes("*") || (resourceNames.length === 0 && COMPLETE_TYPES.has(state.typeUrl) && (first || state.wildcard));
    const names = new Set(explicit);
    const grew = (wildcard && !state.wildcard) || explicit.some((n) => !state.names.has(n));
    if (!first && grew) state.force = true;
    state.wildcard = wildcard;
    state.names = names;
    if (!wildcard) for (const n of [...state.sent.keys()]) if (!names.has(n)) state.sent.delete(n);
  }

  protected plan(state: TypeState, desired: ReadonlyMap<string, EncodedResource>): Plan {
    const s = state as SotwTypeState;
    const upserts: EncodedResource[] = [];
    for (const r of desired.values()) if (s.sent.get(r.name)?.version !== r.version) upserts.push(r);
    const removals: string[] = [];
    // RDS/EDS responses cannot express a removal (the client keeps what it has until it unsubscribes), so
    // only LDS/CDS have removals to send.
    if (COMPLETE_TYPES.has(s.typeUrl)) for (const n of s.sent.keys()) if (!desired.has(n)) removals.push(n);
    return { desired, upserts, removals, notices: [] };
  }

  protected respond(state: TypeState, plan: Plan, removeNow: boolean, nonce: string): { version: string; resources: number; removed: number } | undefined {
    const s = state as SotwTypeState;
    const content = new Map<string, EncodedResource>(plan.desired);
    // Removals deferred: keep offering the removed resources (as last sent) so the response stays complete.
    if (!removeNow) for (const n of plan.removals) content.set(n, s.sent.get(n)!);
    const resources = [...content.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const version = contentVersion(resources.map((r) => [r.name, r.version] as const));
    this.write(encodeSotwResponse({ version_info: version, type_url: s.typeUrl, nonce, resources }));
    s.sent = content;
    return { version, resources: resources.length, removed: removeNow ? plan.removals.length : 0 };
  }
}
