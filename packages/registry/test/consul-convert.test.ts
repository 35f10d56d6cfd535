// Pure parts of the Consul source: conversion of health entries, and the blocking-query index and backoff rules.
import { expect } from "chai";
import {
  backoffDelay,
  consulHealth,
  consulLabels,
  consulProtocol,
  convertConsulService,
  nextIndex,
  resolveConsulOptions,
  consulDuration,
  type ConsulHealthEntry,
  type ConvertContext,
} from "../src/consul/index.js";

const ctx: ConvertContext = {
  domain: "consul",
  namespace: "default",
  trustDomain: "cluster.local",
  datacenter: "dc1",
  index: 42,
  problemFile: "http://127.0.0.1:8500",
};

function entry(p: {
  id: string;
  name?: string;
  node?: string;
  nodeAddress?: string;
  zone?: string;
  address?: string;
  port?: number;
  tags?: string[];
  meta?: Record<string, string>;
  weights?: { Passing?: number; Warning?: number };
  checks?: string[];
  kind?: string;
  modifyIndex?: number;
}): ConsulHealthEntry {
  const node = p.node ?? `node-${p.id}`;
  return {
    Node: { Node: node, Address: p.nodeAddress ?? "10.0.0.1", Datacenter: "dc1", Meta: p.zone ? { zone: p.zone } : {} },
    Service: {
      ID: p.id,
      Service: p.name ?? "web",
      Kind: p.kind ?? "",
      Tags: p.tags ?? [],
      Address: p.address ?? "",
      Port: p.port ?? 8080,
      Meta: p.meta ?? {},
      Weights: { Passing: p.weights?.Passing ?? 1, Warning: p.weights?.Warning ?? 1 },
      ModifyIndex: p.modifyIndex ?? 7,
    },
    Checks: (p.checks ?? ["passing"]).map((Status, i) => ({ CheckID: `c${i}`, Status, ServiceID: p.id })),
  };
}

describe("Consul conversion", () => {
  it("names the service NAME.service.DOMAIN in the configured namespace, STATIC and MESH_INTERNAL", () => {
    const c = convertConsulService("web", [entry({ id: "a" })], { ...ctx, domain: "dc1.example", namespace: "shop" })!;
    expect(c.service).to.deep.equal({
      key: "shop/web.service.dc1.example",
      hostname: "web.service.dc1.example",
      namespace: "shop",
      addresses: [],
      ports: [{ number: 8080, protocol: "TCP", name: "tcp-8080" }],
      resolution: "STATIC",
      location: "MESH_INTERNAL",
      exportTo: ["*"],
      subjectAltNames: [],
      configKey: "ConsulService/shop/web",
      origin: { type: "consul", datacenter: "dc1", service: "web", index: 7 },
    });
    expect(c.endpoints[0]!.namespace).to.equal("shop");
  });

  it("makes one port per distinct instance port, protocol from meta `protocol`", () => {
    const c = convertConsulService(
      "web",
      [
        entry({ id: "a", port: 9090, meta: { protocol: "grpc" } }),
        entry({ id: "b", port: 8080, meta: { protocol: "HTTP" } }),
        entry({ id: "c", port: 8080, meta: { protocol: "http" }, nodeAddress: "10.0.0.2" }),
      ],
      ctx,
    )!;
    expect(c.service.ports).to.deep.equal([
      { number: 8080, protocol: "HTTP", name: "http-8080" },
      { number: 9090, protocol: "GRPC", name: "grpc-9090" },
    ]);
    expect(c.endpoints.map((e) => e.ports)).to.have.deep.members([{ "http-8080": 8080 }, { "http-8080": 8080 }, { "grpc-9090": 9090 }]);
    expect(c.problems).to.deep.equal([]);
  });

  it("reports an unknown protocol and a protocol conflict on one port, and keeps going", () => {
    const c = convertConsulService(
      "web",
      [entry({ id: "a", meta: { protocol: "thrift" } }), entry({ id: "b", nodeAddress: "10.0.0.2", meta: { protocol: "http" } })],
      ctx,
    )!;
    expect(c.service.ports).to.deep.equal([{ number: 8080, protocol: "TCP", name: "tcp-8080" }]);
    expect(c.problems.map((p) => p.message)).to.satisfy((m: string[]) => m.some((x) => x.includes('unknown protocol "thrift"')) && m.some((x) => x.includes("conflicts")));
    expect(c.problems.every((p) => p.severity === "warning" && p.file === ctx.problemFile)).to.equal(true);
  });

  it("uses the service address, else the node address, and skips instances without an IP", () => {
    const c = convertConsulService(
      "web",
      [entry({ id: "a", nodeAddress: "10.0.0.1", address: "10.1.1.1" }), entry({ id: "b", nodeAddress: "10.0.0.2" }), entry({ id: "c", address: "web.internal" })],
      ctx,
    )!;
    expect(c.endpoints.map((e) => e.address)).to.deep.equal(["10.0.0.2", "10.1.1.1"]);
    expect(c.problems).to.have.length(1);
    expect(c.problems[0]!.message).to.contain('"web.internal" is not an IP address');
  });

  it("reads labels from key|value and key=value tags, bare tags and service meta (meta wins)", () => {
    expect(consulLabels(["version|v1", "track=canary", "blue", "a=b=c", "|x", "version=v0"], { track: "stable", owner: "team-a" })).to.deep.equal({
      a: "b=c",
      owner: "team-a",
      "tag.consul/blue": "true",
      track: "stable",
      version: "v0",
    });
    expect(consulLabels(null, null)).to.deep.equal({});
  });

  it("maps check states to health: critical beats warning beats passing; no checks is healthy", () => {
    expect(consulHealth([])).to.equal("HEALTHY");
    expect(consulHealth(null)).to.equal("HEALTHY");
    expect(consulHealth([{ CheckID: "a", Status: "passing" }])).to.equal("HEALTHY");
    expect(consulHealth([{ CheckID: "a", Status: "passing" }, { CheckID: "b", Status: "warning" }])).to.equal("DEGRADED");
    expect(consulHealth([{ CheckID: "a", Status: "warning" }, { CheckID: "_node_maintenance", Status: "critical" }])).to.equal("UNHEALTHY");
    expect(consulHealth([{ CheckID: "a", Status: "maintenance" }])).to.equal("UNKNOWN");
  });

  it("keeps unhealthy instances, with weights from Weights.Passing / Weights.Warning", () => {
    const c = convertConsulService(
      "web",
      [
        entry({ id: "a", nodeAddress: "10.0.0.1", weights: { Passing: 5, Warning: 2 } }),
        entry({ id: "b", nodeAddress: "10.0.0.2", weights: { Passing: 5, Warning: 2 }, checks: ["passing", "warning"] }),
        entry({ id: "c", nodeAddress: "10.0.0.3", weights: { Passing: 5, Warning: 0 }, checks: ["warning"] }),
        entry({ id: "d", nodeAddress: "10.0.0.4", checks: ["critical"] }),
      ],
      ctx,
    )!;
    expect(c.endpoints.map((e) => [e.address, e.health, e.weight])).to.deep.equal([
      ["10.0.0.1", "HEALTHY", 5],
      ["10.0.0.2", "DEGRADED", 2],
      ["10.0.0.3", "UNHEALTHY", 5], // Warning weight 0: Consul's "no traffic while warning"
      ["10.0.0.4", "UNHEALTHY", 1],
    ]);
  });

  it("derives locality from datacenter and node meta zone, identity from meta service-account", () => {
    const c = convertConsulService(
      "web",
      [entry({ id: "a", nodeAddress: "10.0.0.1", zone: "us-east-1a", meta: { "service-account": "web" } }), entry({ id: "b", nodeAddress: "10.0.0.2" })],
      { ...ctx, trustDomain: "example.org" },
    )!;
    expect(c.endpoints[0]).to.deep.include({ locality: "dc1/us-east-1a", serviceAccount: "web", spiffeId: "spiffe://example.org/ns/default/sa/web" });
    expect(c.endpoints[1]!.locality).to.equal("dc1");
    expect(c.endpoints[1]).not.to.have.property("serviceAccount");
    expect(c.endpoints[1]).not.to.have.property("spiffeId");
    expect(c.endpoints[0]!.origin).to.deep.equal({ type: "consul", datacenter: "dc1", service: "web", index: 7 });
  });

  it("keeps a service with no instances, with no ports and no endpoints", () => {
    const c = convertConsulService("web", [], ctx)!;
    expect(c.service.ports).to.deep.equal([]);
    expect(c.endpoints).to.deep.equal([]);
  });

  it("skips Consul itself and services that are only Connect proxies or gateways", () => {
    expect(convertConsulService("consul", [entry({ id: "consul", name: "consul" })], ctx)).to.equal(undefined);
    expect(convertConsulService("web-sidecar-proxy", [entry({ id: "p", kind: "connect-proxy" })], ctx)).to.equal(undefined);
    const mixed = convertConsulService("web", [entry({ id: "a" }), entry({ id: "p", kind: "connect-proxy", nodeAddress: "10.0.0.9" })], ctx)!;
    expect(mixed.endpoints.map((e) => e.address)).to.deep.equal(["10.0.0.1"]);
  });

  it("converts equal catalogs to equal values whatever the entry order", () => {
    const a = entry({ id: "a", nodeAddress: "10.0.0.2" });
    const b = entry({ id: "b", nodeAddress: "10.0.0.1" });
    expect(convertConsulService("web", [a, b], ctx)).to.deep.equal(convertConsulService("web", [b, a], { ...ctx, index: 99 }));
  });

  it("knows Consul's protocol names", () => {
    expect(["http", "http2", "grpc", "tcp", "", undefined].map(consulProtocol)).to.deep.equal(["HTTP", "HTTP2", "GRPC", "TCP", "TCP", "TCP"]);
    expect(consulProtocol("thrift")).to.equal(undefined);
  });
});

describe("Consul blocking-query rules", () => {
  it("resets an index that goes backwards to 0, lifts 0 to 1, else takes the returned index", () => {
    expect(nextIndex(0, 17)).to.equal(17);
    expect(nextIndex(17, 17)).to.equal(17);
    expect(nextIndex(17, 20)).to.equal(20);
    expect(nextIndex(17, 3)).to.equal(0);
    expect(nextIndex(0, 0)).to.equal(1);
  });

  it("backs off exponentially, capped, with at least half of each step fixed", () => {
    const lo = () => 0;
    const hi = () => 0.999999;
    expect([1, 2, 3, 4, 5, 6].map((n) => backoffDelay(n, 100, 1000, lo))).to.deep.equal([50, 100, 200, 400, 500, 500]);
    expect(backoffDelay(3, 100, 1000, hi)).to.be.closeTo(400, 0.01);
    expect(backoffDelay(1000, 100, 1000, hi)).to.be.at.most(1000);
  });

  it("resolves options with Consul's limits and sane floors", () => {
    const o = resolveConsulOptions({ address: "http://127.0.0.1:8500/" });
    expect(o).to.deep.include({ address: "http://127.0.0.1:8500", wait: 300_000, domain: "consul", namespace: "default", stale: false, minInterval: 100 });
    expect(resolveConsulOptions({ address: "http://x:1", wait: 3_600_000 }).wait).to.equal(600_000);
    expect(resolveConsulOptions({ address: "http://x:1", wait: 0 }).wait).to.equal(1000);
    expect(() => resolveConsulOptions({ address: "ftp://x" })).to.throw(/http or https/);
    expect(() => resolveConsulOptions({ address: "http://x:1", minInterval: -1 })).to.throw(/minInterval/);
    expect([consulDuration(5000), consulDuration(1500)]).to.deep.equal(["5s", "1500ms"]);
  });
});
