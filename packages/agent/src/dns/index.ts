// The agent's DNS proxy: mesh names from the control plane's name table, everything else upstream.
export { DnsProxy, DEFAULT_DNS_ADDRESS, DEFAULT_DNS_PORT, MESH_ANSWER_TTL, type DnsProxyOptions, type Transport } from "./server.js";
export { NameLookup, canonicalName, type NameAnswer } from "./name-lookup.js";
export { parseUpstream, parseResolvConf, systemUpstreams, formatUpstream, type Upstream } from "./upstreams.js";
export { forwardUdp, forwardTcp, ForwardError } from "./forward.js";
export { subscribeNameTable, type NameTableSubscription, type NameTableSubscriptionOptions, type NameTableSubscriptionStatus } from "./subscribe.js";
