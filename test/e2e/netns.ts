// A network of "hosts" made of Linux network namespaces, for the multi-host testbed.
//
// Every host is a namespace with one veth whose peer sits in a separate "switch" namespace, enslaved to a
// bridge there. Nothing is created in the namespace the tests run in: the machine's own interfaces, routes
// and firewall are never touched, and the private addresses exist only inside these namespaces. Cutting a
// host off is `ip link set HOST down` on its switch port, which is what unplugging its cable looks like to
// both ends (no RST, no FIN: packets just stop).
//
// Names are `vmpilot-e2e-<pid>-<host>`, so a run can tell its own namespaces from those of a run that died
// without cleaning up (its pid is gone): `sweepStale()` removes those, processes inside them first.
import { execFileSync, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

export const NETNS_PREFIX = "vmpilot-e2e-";

function ip(args: string[]): string {
  return execFileSync("ip", args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

/** Why this machine cannot build the testbed, or undefined when it can. */
export function unavailableReason(): string | undefined {
  if (process.platform !== "linux") return `network namespaces need Linux (this is ${process.platform})`;
  if (process.getuid?.() !== 0) return "creating network namespaces needs root";
  const r = spawnSync("ip", ["-V"], { encoding: "utf8" });
  if (r.error || r.status !== 0) return "the `ip` command (Debian package iproute2) is not installed";
  return undefined;
}

/** Namespace names (`ip netns list` prints `NAME (id: N)`). */
export function listNamespaces(): string[] {
  return ip(["netns", "list"])
    .split("\n")
    .map((l) => l.split(" ")[0]!)
    .filter(Boolean);
}

/** Interface names in the namespace the tests run in (to prove the testbed never adds any there). */
export function rootInterfaces(): string[] {
  return ip(["-o", "link", "show"])
    .split("\n")
    .filter(Boolean)
    .map((l) => l.split(":")[1]!.trim().split("@")[0]!)
    .sort();
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Kills whatever still runs in `ns`, then deletes it (its veths go with it). Never throws. */
function destroyNamespace(ns: string): void {
  let pids: number[] = [];
  try {
    pids = ip(["netns", "pids", ns]).split("\n").filter(Boolean).map(Number);
  } catch {
    /* already gone */
  }
  for (const pid of pids) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      /* exited meanwhile */
    }
  }
  spawnSync("ip", ["netns", "delete", ns], { stdio: "ignore" });
}

const STALE = new RegExp(`^${NETNS_PREFIX}(\\d+)-`);
const isStale = (name: string): boolean => {
  const m = STALE.exec(name);
  return m !== null && Number(m[1]) !== process.pid && !pidAlive(Number(m[1]));
};

/** A temp dir named so that `sweepStale()` can remove it if this process dies without cleaning up. */
export function testbedTmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `${NETNS_PREFIX}${process.pid}-files-`));
}

/**
 * Removes what earlier runs left when they were killed (their pid no longer exists): namespaces, with the
 * processes still running in them, and their temp dirs. Returns the names.
 */
export function sweepStale(): string[] {
  const namespaces = listNamespaces().filter(isStale);
  for (const ns of namespaces) destroyNamespace(ns);
  const dirs = fs.readdirSync(os.tmpdir()).filter((d) => isStale(d) && d.includes("-files-"));
  for (const d of dirs) fs.rmSync(path.join(os.tmpdir(), d), { recursive: true, force: true });
  return [...namespaces, ...dirs];
}

export interface HostSpec {
  /** Short name (also the switch port's name, so at most 15 characters). */
  name: string;
  /** IPv4 address inside the testbed's /24. */
  address: string;
}

export interface Host extends HostSpec {
  /** The namespace to run its processes in. */
  netns: string;
}

export class Testbed {
  readonly hosts = new Map<string, Host>();
  private readonly switchNs: string;
  private readonly created: string[] = [];
  private readonly onExit = () => this.destroy();

  constructor(
    private readonly prefixLength = 24,
    /** Every namespace of this testbed starts with it. */
    readonly prefix = `${NETNS_PREFIX}${process.pid}-`,
  ) {
    this.switchNs = `${this.prefix}switch`;
  }

  /** Creates the switch and the hosts. On any failure, what was created is removed again. */
  create(specs: HostSpec[]): this {
    // Also on a plain process.exit() (mocha --exit, an uncaught error): the namespaces must not outlive us.
    process.on("exit", this.onExit);
    try {
      this.addNamespace(this.switchNs);
      ip(["-n", this.switchNs, "link", "add", "br0", "type", "bridge"]);
      ip(["-n", this.switchNs, "link", "set", "br0", "up"]);
      for (const spec of specs) this.addHost(spec);
    } catch (e) {
      this.destroy();
      throw e;
    }
    return this;
  }

  private addNamespace(ns: string): void {
    ip(["netns", "add", ns]);
    this.created.push(ns);
    ip(["-n", ns, "link", "set", "lo", "up"]);
  }

  private addHost(spec: HostSpec): void {
    const netns = `${this.prefix}${spec.name}`;
    this.addNamespace(netns);
    // The veth is born in the switch namespace with its peer already in the host's: never in ours.
    ip(["-n", this.switchNs, "link", "add", spec.name, "type", "veth", "peer", "name", "eth0", "netns", netns]);
    ip(["-n", this.switchNs, "link", "set", spec.name, "master", "br0"]);
    ip(["-n", this.switchNs, "link", "set", spec.name, "up"]);
    ip(["-n", netns, "addr", "add", `${spec.address}/${this.prefixLength}`, "dev", "eth0"]);
    ip(["-n", netns, "link", "set", "eth0", "up"]);
    this.hosts.set(spec.name, { ...spec, netns });
  }

  host(name: string): Host {
    const h = this.hosts.get(name);
    if (!h) throw new Error(`no host ${name} in the testbed`);
    return h;
  }

  /** Unplugs (false) or plugs back (true) a host's cable: its port on the switch goes down or up. */
  setLink(name: string, up: boolean): void {
    this.host(name);
    ip(["-n", this.switchNs, "link", "set", name, up ? "up" : "down"]);
  }

  /** Namespaces with this testbed's prefix that exist now (after destroy(): none, or cleanup failed). */
  remaining(): string[] {
    return listNamespaces().filter((ns) => ns.startsWith(this.prefix));
  }

  /** Kills processes left in the namespaces and deletes them. Idempotent, synchronous (safe in an exit handler). */
  destroy(): void {
    for (const ns of this.created.splice(0).reverse()) destroyNamespace(ns);
    this.hosts.clear();
    process.off("exit", this.onExit);
  }
}
