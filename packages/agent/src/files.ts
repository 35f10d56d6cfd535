// Atomic file replacement: readers (Envoy's SDS file watch, grpc-js's file_watcher, an operator's cat) see the
// old content or the new, never a torn write. Temp file in the same directory (rename is atomic only within a
// file system), fsync, rename over the target, fsync the directory so the rename survives a crash.
import crypto from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";

export async function writeFileAtomic(file: string, data: string | Uint8Array, mode = 0o644): Promise<void> {
  const dir = path.dirname(file);
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${crypto.randomBytes(4).toString("hex")}.tmp`);
  // Created with its final mode: a private key is never readable by others, not even for a moment.
  const fh = await fs.open(tmp, "wx", mode);
  try {
    await fh.writeFile(data);
    await fh.chmod(mode); // the umask may have narrowed the mode given to open()
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await fs.rename(tmp, file);
  } catch (e) {
    await fs.rm(tmp, { force: true });
    throw e;
  }
  const dh = await fs.open(dir, "r");
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}

/** Creates the output directory (owner-only: it holds the private key). */
export async function ensureDir(dir: string): Promise<void> {
  await fs.mkdir(dir, { recursive: true, mode: 0o700 });
}
