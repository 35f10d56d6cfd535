// Resource versions are content hashes of the encoded bytes: equal bytes give equal versions in every process
// and across restarts, so the server can tell a proxy's (name, version) set is current without keeping history.
import { createHash } from "node:crypto";

/** 96 bits of SHA-256 as 16 base64url characters: collisions are not a practical concern at mesh scale. */
export function contentVersion(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("base64url").slice(0, 16);
}
