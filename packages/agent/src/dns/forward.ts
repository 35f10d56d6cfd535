// Forwarding one DNS message to an upstream resolver, over UDP or TCP, unchanged: the upstream sees the
// application's own query (id, flags, EDNS options) and the application gets the upstream's answer as sent.
import dgram from "node:dgram";
import net from "node:net";
import type { Upstream } from "./upstreams.js";

export class ForwardError extends Error {}

/**
 * One query over UDP from a fresh socket (random source port), accepting only a reply from that upstream
 * (the socket is connected) that carries the query's id.
 */
export function forwardUdp(query: Buffer, upstream: Upstream, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = dgram.createSocket(net.isIPv6(upstream.host) ? "udp6" : "udp4");
    const id = query.readUInt16BE(0);
    let done = false;
    const finish = (err: Error | undefined, reply?: Buffer): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.removeAllListeners("message");
      socket.close();
      if (err) reject(err);
      else resolve(reply!);
    };
    const timer = setTimeout(() => finish(new ForwardError(`no answer from ${upstream.host}:${upstream.port} within ${timeoutMs} ms`)), timeoutMs);
    socket.on("error", (err) => finish(new ForwardError(`${upstream.host}:${upstream.port}: ${err.message}`)));
    socket.on("message", (msg) => {
      if (msg.length >= 12 && msg.readUInt16BE(0) === id) finish(undefined, msg);
    });
    socket.connect(upstream.port, upstream.host, () => socket.send(query));
  });
}

/** One query over TCP (RFC 1035 4.2.2 two-byte length framing), for clients that retried after truncation. */
export function forwardTcp(query: Buffer, upstream: Upstream, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: upstream.host, port: upstream.port });
    let buffered = Buffer.alloc(0);
    let done = false;
    const finish = (err: Error | undefined, reply?: Buffer): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      if (err) reject(err);
      else resolve(reply!);
    };
    const timer = setTimeout(() => finish(new ForwardError(`no answer from ${upstream.host}:${upstream.port} (tcp) within ${timeoutMs} ms`)), timeoutMs);
    socket.on("connect", () => {
      const len = Buffer.alloc(2);
      len.writeUInt16BE(query.length);
      socket.write(Buffer.concat([len, query]));
    });
    socket.on("data", (chunk) => {
      buffered = Buffer.concat([buffered, chunk]);
      if (buffered.length >= 2) {
        const n = buffered.readUInt16BE(0);
        if (buffered.length >= 2 + n) finish(undefined, buffered.subarray(2, 2 + n));
      }
    });
    socket.on("error", (err) => finish(new ForwardError(`${upstream.host}:${upstream.port} (tcp): ${err.message}`)));
    socket.on("close", () => finish(new ForwardError(`${upstream.host}:${upstream.port} (tcp) closed without an answer`)));
  });
}
