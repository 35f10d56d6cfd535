export const VERSION = "0.1.0";
export { AdsServer, type AdsServerOptions, type AuthorizeStream, type StreamRefusal } from "./server/ads-server.js";
export { ControlPlane, GRPC_SERVER_OPTIONS, type ControlPlaneOptions, type SnapshotCache } from "./server/control-plane.js";
export { loadServerConfig, resolveServerConfig, ServerConfigError, type ServerConfig, type ServerFlags } from "./server/config.js";
export type { ResourceSource, EncodedResource } from "./server/resources.js";
export type { StreamStatus, TypeStatus } from "./server/stream.js";
export { nameTable, encodeNameTable, decodeNameTable, nameTableMessageType, NAME_TABLE_TYPE_URL, NAME_TABLE_RESOURCE_NAME, NAME_TABLE_PROTO_FILE, type NameTable, type NameInfo, type NameTableOptions } from "./generators/nametable.js";
