// @vmpilot/agent: everything a VM needs to join the mesh. The CLI (cli.ts) is a thin layer over these.
export { VERSION } from "./version.js";
export * from "./config.js";
export * from "./bootstrap/node.js";
export * from "./bootstrap/envoy.js";
export * from "./bootstrap/grpc.js";
export * from "./certs.js";
export * from "./files.js";
export * from "./envoy-supervisor.js";
export * from "./envoy-admin.js";
export * from "./probes.js";
export * from "./status-server.js";
export * from "./iptables.js";
export * from "./iptables-apply.js";
export * from "./agent.js";
export * from "./xds-proxy.js";
export * from "./health-reporter.js";
export { Backoff } from "./backoff.js";
export type { Logger } from "./log.js";
