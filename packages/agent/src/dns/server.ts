// The agent's DNS proxy (Istio's "DNS proxying" for VMs): answers A/AAAA for the mesh hosts in the name table
// the control plane sends, and forwards every other query to the VM's upstream resolvers. Listens on UDP and
// TCP on the same port (127.0.0.1:15053 by default; the agent's iptables rules redirect port 53 to it).
//
// Answers, per question name:
// - in the table: A / AAAA with the table's addresses (TTL 30 s, authoritative, as Istio's agent). A type the
//   name has no address for (AAAA of a v4-only host, MX, TXT, ...) is NODATA (NOERROR, no answers), never
//   NXDOMAIN: the name exists, and an NXDOMAIN would make resolvers skip the A answer they also asked for.
// - not in the table: forwarded unchanged to the upstreams in order until one answers; SERVFAIL when none
//   does, REFUSED when there are no upstreams at all.
// A local answer that does not fit the client's UDP size (512, or its EDNS size) is sent truncated (TC) so the
// client retries over TCP, where it is answered in full.
import dgram from "node:dgram";
import net from "node:net";
import { once } from "node:events";
import * as dnsPacket from "dns-packet";
import type { NameTable } from "@vmpilot/xds/generators/nametable";
import { agentLogger, type Logger } from "../log.js";
import { forwardTcp, forwardUdp } from "./forward.js";
import { NameLookup } from "./name-lookup.js";
import { formatUpstream, parseUpstream, systemUpstreams, type Upstream } from "./upstreams.js";

export const DEFAULT_DNS_ADDRESS = "127.0.0.1";
export const DEFAULT_DNS_PORT = 15053;
/** Istio's agent answers with a 30 s TTL: short enough that a ServiceEntry edit is seen soon after. */
export const MESH_ANSWER_TTL = 30;

const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;
type Rcode = (typeof RCODE)[keyof typeof RCODE];
const OPCODE_QUERY = 0;
const CLASSIC_UDP_LIMIT = 512;
/** What we advertise in our own EDNS OPT record (the DNS flag day 2020 value: no IP fragmentation). */
const OUR_EDNS_UDP_SIZE = 1232;

export interface DnsProxyOptions {
  /** Listen address; default 127.0.0.1. */
  address?: string;
  /** Listen port (UDP and TCP); default 15053; 0 lets the OS choose (tests). */
  port?: number;
  /** Upstream resolvers (`IP` or `IP:PORT`); default: the nameservers of /etc/resolv.conf. */
  upstreams?: readonly (string | Upstream)[];
  /** Per-upstream wait before trying the next one. */
  upstreamTimeoutMs?: number;
  /**
   * Forwarded queries waiting for an upstream at once (each holds a socket); beyond it queries get SERVFAIL
   * at once, so a flood from a misbehaving app cannot exhaust the agent's file descriptors. Default 1024.
   */
  maxInflightForwards?: number;
  log?: Logger;
}

export type Transport = "udp" | "tcp";

export class DnsProxy {
  private lookup = new NameLookup();
  private readonly upstreams: Upstream[];
  private readonly timeoutMs: number;
  private readonly log: Logger;
  private udp: dgram.Socket | undefined;
  private tcp: net.Server | undefined;
  private readonly connections = new Set<net.Socket>();
  private boundPort = 0;
  private inflight = 0;
  private readonly maxInflight: number;

  constructor(private readonly opts: DnsProxyOptions = {}) {
    this.log = opts.log ?? agentLogger("dns");
    this.timeoutMs = opts.upstreamTimeoutMs ?? 2000;
    this.maxInflight = opts.maxInflightForwards ?? 1024;
    const configured = opts.upstreams?.map((u) => (typeof u === "string" ? parseUpstream(u) : u));
    const address = opts.address ?? DEFAULT_DNS_ADDRESS;
    // Never forward to ourselves: with DNS captured, resolv.conf may name the capturing address.
    this.upstreams = (configured ?? systemUpstreams()).filter((u) => !(u.host === address && u.port === (opts.port ?? DEFAULT_DNS_PORT)));
  }

  /** Replaces the table; queries that arrive after this call see the new answers. */
  setNameTable(table: NameTable): void {
    this.lookup = new NameLookup(table);
    this.log.debug(`name table: ${this.lookup.size} names`);
  }

  /** Names (exact and wildcard) in the current table. */
  get names(): number {
    return this.lookup.size;
  }

  /** `host:port` the proxy listens on (after start). */
  get address(): { address: string; port: number } {
    return { address: this.opts.address ?? DEFAULT_DNS_ADDRESS, port: this.boundPort };
  }

  get upstreamList(): readonly Upstream[] {
    return this.upstreams;
  }

  async start(): Promise<void> {
    const host = this.opts.address ?? DEFAULT_DNS_ADDRESS;
    const wanted = this.opts.port ?? DEFAULT_DNS_PORT;
    // With port 0 the OS picks the UDP port; TCP must then get the same one, which another process may hold.
    for (let attempt = 0; ; attempt++) {
      const udp = dgram.createSocket(net.isIPv6(host) ? "udp6" : "udp4");
      udp.bind(wanted, host);
      await once(udp, "listening");
      const port = udp.address().port;
      const tcp = net.createServer((socket) => this.serveTcp(socket));
      try {
        tcp.listen(port, host);
        await once(tcp, "listening");
      } catch (err) {
        udp.close();
        if (wanted === 0 && attempt < 10 && (err as NodeJS.ErrnoException).code === "EADDRINUSE") continue;
        throw err;
      }
      udp.on("message", (msg, rinfo) => void this.serveUdp(udp, msg, rinfo));
      udp.on("error", (err) => this.log.warn(`udp: ${err.message}`));
      tcp.on("error", (err) => this.log.warn(`tcp: ${err.message}`));
      this.udp = udp;
      this.tcp = tcp;
      this.boundPort = port;
      break;
    }
    const ups = this.upstreams.length > 0 ? this.upstreams.map(formatUpstream).join(", ") : "none (unknown names are refused)";
    this.log.info(`DNS proxy on ${host}:${this.boundPort} (udp+tcp), upstreams: ${ups}`);
  }

  async stop(): Promise<void> {
    const udp = this.udp;
    const tcp = this.tcp;
    this.udp = undefined;
    this.tcp = undefined;
    for (const c of this.connections) c.destroy();
    await Promise.all([
      udp ? new Promise<void>((r) => udp.close(() => r())) : undefined,
      tcp ? new Promise<void>((r) => tcp.close(() => r())) : undefined,
    ]);
  }

  private async serveUdp(socket: dgram.Socket, msg: Buffer, rinfo: dgram.RemoteInfo): Promise<void> {
    const reply = await this.answer(msg, "udp");
    if (reply && this.udp === socket) socket.send(reply, rinfo.port, rinfo.address);
  }

  private serveTcp(socket: net.Socket): void {
    this.connections.add(socket);
    socket.on("close", () => this.connections.delete(socket));
    socket.on("error", () => socket.destroy());
    socket.setTimeout(30_000, () => socket.destroy());
    let buffered = Buffer.alloc(0);
    socket.on("data", (chunk) => {
      buffered = Buffer.concat([buffered, chunk]);
      // Several queries may share one connection (RFC 7766); answer each as it completes.
      while (buffered.length >= 2 && buffered.length >= 2 + buffered.readUInt16BE(0)) {
        const n = buffered.readUInt16BE(0);
        const query = buffered.subarray(2, 2 + n);
        buffered = buffered.subarray(2 + n);
        void this.answer(Buffer.from(query), "tcp").then((reply) => {
          if (!reply || socket.destroyed) return;
          const len = Buffer.alloc(2);
          len.writeUInt16BE(reply.length);
          socket.write(Buffer.concat([len, reply]));
        });
      }
    });
  }

  /** The reply to one DNS message, or undefined to stay silent (not a query at all). */
  async answer(msg: Buffer, transport: Transport): Promise<Buffer | undefined> {
    if (msg.length < 12) return undefined;
    let query: dnsPacket.DecodedPacket;
    try {
      query = dnsPacket.decode(msg);
    } catch {
      return headerOnly(msg, RCODE.FORMERR);
    }
    if (query.type !== "query") return undefined;
    const opcode = (msg.readUInt16BE(2) >> 11) & 0xf;
    const question = query.questions?.[0];
    if (opcode !== OPCODE_QUERY || !question || query.questions!.length !== 1) return this.forward(msg, query, transport);
    const hit = question.class === undefined || question.class === "IN" ? this.lookup.resolve(question.name) : undefined;
    if (!hit) return this.forward(msg, query, transport);

    const answers: dnsPacket.Answer[] = [];
    if (question.type === "A") for (const ip of hit.v4) answers.push({ type: "A", class: "IN", name: question.name, ttl: MESH_ANSWER_TTL, data: ip });
    if (question.type === "AAAA") for (const ip of hit.v6) answers.push({ type: "AAAA", class: "IN", name: question.name, ttl: MESH_ANSWER_TTL, data: ip });
    return this.encodeLocal(query, answers, transport);
  }

  private encodeLocal(query: dnsPacket.DecodedPacket, answers: dnsPacket.Answer[], transport: Transport): Buffer {
    const clientOpt = query.additionals?.find((a): a is dnsPacket.OptAnswer => a.type === "OPT");
    const additionals: dnsPacket.Answer[] = clientOpt
      ? [{ type: "OPT", name: ".", udpPayloadSize: OUR_EDNS_UDP_SIZE, extendedRcode: 0, ednsVersion: 0, flags: 0, flag_do: false, options: [] }]
      : [];
    const rd = query.flag_rd ? dnsPacket.RECURSION_DESIRED : 0;
    const flags = dnsPacket.AUTHORITATIVE_ANSWER | dnsPacket.RECURSION_AVAILABLE | rd;
    const packet: dnsPacket.Packet = { type: "response", id: query.id ?? 0, flags, questions: query.questions ?? [], answers, additionals };
    let reply = dnsPacket.encode(packet);
    if (transport === "udp") {
      const limit = Math.max(CLASSIC_UDP_LIMIT, Math.min(clientOpt?.udpPayloadSize ?? CLASSIC_UDP_LIMIT, 65535));
      if (reply.length > limit) {
        reply = dnsPacket.encode({ ...packet, flags: flags | dnsPacket.TRUNCATED_RESPONSE, answers: [] });
      }
    }
    return reply;
  }

  private async forward(msg: Buffer, query: dnsPacket.DecodedPacket, transport: Transport): Promise<Buffer> {
    const name = query.questions?.[0]?.name ?? "?";
    if (this.upstreams.length === 0) return headerOnly(msg, RCODE.REFUSED, query);
    if (this.inflight >= this.maxInflight) {
      this.log.debug(`forwarding ${name}: ${this.inflight} queries already waiting for upstreams; SERVFAIL`);
      return headerOnly(msg, RCODE.SERVFAIL, query);
    }
    this.inflight++;
    try {
      for (const upstream of this.upstreams) {
        try {
          return transport === "udp" ? await forwardUdp(msg, upstream, this.timeoutMs) : await forwardTcp(msg, upstream, this.timeoutMs);
        } catch (err) {
          this.log.debug(`forwarding ${name}: ${(err as Error).message}`);
        }
      }
    } finally {
      this.inflight--;
    }
    this.log.warn(`no upstream answered for ${name} (${this.upstreams.map(formatUpstream).join(", ")})`);
    return headerOnly(msg, RCODE.SERVFAIL, query);
  }
}

/**
 * An error reply: the query's header with QR set and the rcode, echoing the question when it could be decoded.
 * Written from the raw header so even an undecodable message gets its id back.
 */
function headerOnly(msg: Buffer, rcode: Rcode, query?: dnsPacket.DecodedPacket): Buffer {
  const queryFlags = msg.readUInt16BE(2);
  const opcodeAndRd = queryFlags & 0x7900; // opcode + RD
  const flags = 0x8000 | opcodeAndRd | 0x0080 /* RA */ | rcode;
  if (query?.questions && query.questions.length > 0) {
    const out = dnsPacket.encode({ type: "response", id: query.id ?? 0, flags: 0, questions: query.questions });
    out.writeUInt16BE(flags, 2);
    return out;
  }
  const out = Buffer.alloc(12);
  out.writeUInt16BE(msg.readUInt16BE(0), 0);
  out.writeUInt16BE(flags, 2);
  return out;
}
