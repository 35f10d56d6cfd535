// VirtualService: HTTP, TLS and TCP routes.
import type { HTTPRoute, VirtualServiceSpec } from "../../api.js";
import { bool, duration, int, list, map, num, obj, req, str, type ObjectSchema, type RuleContext } from "../schema.js";
import { extraKey } from "../locate.js";
import * as syn from "../syntax.js";
import { checkExportTo, destination, exportTo, gatewayRef, labels, portNumber } from "./common.js";

/** Envoy's x-envoy-retry-on and x-envoy-retry-grpc-on policies, as Istio accepts them in `retryOn`. */
export const RETRY_ON_POLICIES = [
  "5xx",
  "gateway-error",
  "reset",
  "reset-before-request",
  "connect-failure",
  "envoy-ratelimited",
  "retriable-4xx",
  "refused-stream",
  "retriable-status-codes",
  "retriable-headers",
  "http3-post-connect-failure",
  "cancelled",
  "deadline-exceeded",
  "internal",
  "resource-exhausted",
  "unavailable",
] as const;

export const GRPC_STATUS = [
  "OK",
  "CANCELLED",
  "UNKNOWN",
  "INVALID_ARGUMENT",
  "DEADLINE_EXCEEDED",
  "NOT_FOUND",
  "ALREADY_EXISTS",
  "PERMISSION_DENIED",
  "RESOURCE_EXHAUSTED",
  "FAILED_PRECONDITION",
  "ABORTED",
  "OUT_OF_RANGE",
  "UNIMPLEMENTED",
  "INTERNAL",
  "UNAVAILABLE",
  "DATA_LOSS",
  "UNAUTHENTICATED",
] as const;

function retryOn(s: string): string | undefined {
  for (const raw of s.split(",")) {
    const p = raw.trim();
    if (/^\d{3}$/.test(p) && Number(p) >= 100 && Number(p) <= 599) continue; // status codes become retriable_status_codes
    if ((RETRY_ON_POLICIES as readonly string[]).includes(p)) continue;
    const close = syn.suggest(p, RETRY_ON_POLICIES);
    return `unknown retry policy '${p}'${close ? ` (did you mean '${close}'?)` : ""}; allowed: ${RETRY_ON_POLICIES.join(", ")} or an HTTP status code`;
  }
  return undefined;
}

/** exact | prefix | regex; `allowEmpty` for header presence matches (`{}`). */
const stringMatch = (allowEmpty = false) =>
  obj(
    { exact: str(), prefix: str(), regex: str({ check: syn.re2Regex }) },
    {
      rule: (m, r) => {
        const set = Object.keys(m);
        if (set.length > 1) r.error(m, extraKey(m, set), `exactly one of exact, prefix or regex may be set (found ${set.join(", ")})`, { key: true });
        else if (set.length === 0 && !allowEmpty) r.error(m, undefined, "one of exact, prefix or regex is required");
      },
    },
  );

const percent = () => obj({ value: req(num(0, 100)) });

const headerOperations = () =>
  obj({ set: map(str()), add: map(str()), remove: list(str({ nonEmpty: true })) });
const headers = () => obj({ request: headerOperations(), response: headerOperations() });

const httpMatch = () =>
  obj({
    name: str(),
    uri: stringMatch(),
    scheme: stringMatch(),
    method: stringMatch(),
    authority: stringMatch(),
    headers: map(stringMatch(true), { key: (k) => (k.length === 0 ? "header name must not be empty" : undefined) }),
    withoutHeaders: map(stringMatch(true)),
    queryParams: map(stringMatch(true)),
    port: portNumber(),
    sourceLabels: labels(),
    gateways: list(gatewayRef()),
    sourceNamespace: str({ check: syn.dns1123Label }),
    ignoreUriCase: bool(),
  }, { unsupported: ["statPrefix"] });

/** Destinations with weights 0..100 that total 100 when there is more than one, or when any weight is given. */
function checkWeights(routes: { weight?: number }[] | undefined, owner: object, r: RuleContext, what: string): void {
  if (!routes || routes.length === 0) return;
  const anyWeight = routes.some((d) => d.weight !== undefined);
  if (routes.length === 1 && !anyWeight) return;
  const total = routes.reduce((s, d) => s + (d.weight ?? 0), 0);
  if (total !== 100) {
    r.error(owner, "route", `${what}: destination weights must add up to 100 (they add up to ${total})`, { key: true });
  }
}

const httpRouteDestination = () => obj({ destination: req(destination()), weight: int(0, 100), headers: headers() });
const routeDestination = () => obj({ destination: req(destination()), weight: int(0, 100) });

const httpRoute = (): ObjectSchema =>
  obj(
    {
      name: str(),
      match: list(httpMatch()),
      route: list(httpRouteDestination()),
      redirect: obj({
        uri: str(),
        authority: str(),
        port: portNumber(),
        scheme: str({ enum: ["http", "https"] }),
        redirectCode: int(300, 399),
      }),
      directResponse: obj(
        { status: req(int(200, 599)), body: obj({ string: str(), bytes: str() }) },
        {
          rule: (d, r) => {
            if (d.body && d.body.string !== undefined && d.body.bytes !== undefined) r.error(d.body, "bytes", "only one of body.string or body.bytes may be set", { key: true });
          },
        },
      ),
      rewrite: obj(
        { uri: str(), authority: str(), uriRegexRewrite: obj({ match: req(str({ check: syn.re2Regex })), rewrite: req(str()) }) },
        {
          rule: (w, r) => {
            if (w.uri !== undefined && w.uriRegexRewrite !== undefined) r.error(w, "uriRegexRewrite", "only one of rewrite.uri or rewrite.uriRegexRewrite may be set", { key: true });
          },
        },
      ),
      timeout: duration(0),
      retries: obj({
        attempts: req(int(0, 2_147_483_647)),
        perTryTimeout: duration(1),
        retryOn: str({ check: retryOn }),
        retryRemoteLocalities: bool(),
      }),
      fault: obj(
        {
          delay: obj({
            fixedDelay: req(duration(1)),
            percentage: percent(),
            percent: int(0, 100, { deprecated: "fault.delay.percent is deprecated; use percentage.value" }),
          }),
          abort: obj(
            { httpStatus: int(200, 599), grpcStatus: str({ enum: GRPC_STATUS }), percentage: percent() },
            {
              rule: (a, r) => {
                const set = ["httpStatus", "grpcStatus"].filter((k) => a[k] !== undefined);
                if (set.length !== 1) r.error(a, extraKey(a, set), `fault.abort: exactly one of httpStatus or grpcStatus must be set${set.length ? ` (found ${set.join(", ")})` : ""}`, { key: true });
              },
            },
          ),
        },
        {
          rule: (f, r) => {
            if (!f.delay && !f.abort) r.error(f, undefined, "fault: needs a delay or an abort");
          },
        },
      ),
      mirror: destination(),
      mirrorPercentage: percent(),
      headers: headers(),
    },
    {
      unsupported: ["corsPolicy", "delegate", "mirrors", "mirrorPercent", "mirror_percent"],
      rule: (h, r) => checkHttpRoute(h as HTTPRoute, r),
    },
  );

function checkHttpRoute(h: HTTPRoute, r: RuleContext): void {
  const actions = (["route", "redirect", "directResponse"] as const).filter((k) => h[k] !== undefined);
  if (actions.length === 0) r.error(h, undefined, "an HTTP route needs one of 'route', 'redirect' or 'directResponse'");
  if (actions.length > 1) r.error(h, extraKey(h, actions), `only one of 'route', 'redirect' or 'directResponse' may be set (found ${actions.join(", ")})`, { key: true });
  if (h.route && h.route.length === 0) r.error(h, "route", "route: needs at least one destination");
  if (h.redirect && h.rewrite) r.error(h, "rewrite", "'rewrite' cannot be combined with 'redirect'", { key: true });
  if (h.mirrorPercentage && !h.mirror) r.error(h, "mirrorPercentage", "'mirrorPercentage' needs 'mirror'", { key: true });
  checkWeights(h.route, h, r, "route");
}

const l4Match = () => ({
  destinationSubnets: list(str({ check: syn.ipOrCidr })),
  port: portNumber(),
  sourceLabels: labels(),
  gateways: list(gatewayRef()),
  sourceNamespace: str({ check: syn.dns1123Label }),
});

const tlsRoute = () =>
  obj(
    {
      match: req(list(obj({ ...l4Match(), sniHosts: req(list(str({ check: (s) => syn.wildcardHost(s, true) }), { nonEmpty: true })) }), { nonEmpty: true })),
      route: req(list(routeDestination(), { nonEmpty: true })),
    },
    { rule: (t, r) => checkWeights(t.route, t, r, "route") },
  );

const tcpRoute = () =>
  obj(
    { match: list(obj(l4Match())), route: req(list(routeDestination(), { nonEmpty: true })) },
    { rule: (t, r) => checkWeights(t.route, t, r, "route") },
  );

export const virtualServiceSpec = () =>
  obj(
    {
      hosts: req(list(str({ check: (h) => syn.wildcardHost(h, true) }), { nonEmpty: true, unique: true })),
      gateways: list(gatewayRef(), { unique: true }),
      http: list(httpRoute()),
      tls: list(tlsRoute()),
      tcp: list(tcpRoute()),
      exportTo: exportTo(),
    },
    { rule: (spec, r) => checkVirtualService(spec as VirtualServiceSpec, r) },
  );

function checkVirtualService(vs: VirtualServiceSpec, r: RuleContext): void {
  const meshBound = !vs.gateways || vs.gateways.length === 0 || vs.gateways.includes("mesh");
  (vs.hosts ?? []).forEach((h, i) => {
    if (h === "*" && meshBound) {
      r.error(vs.hosts!, i, "spec.hosts: '*' is only allowed in a VirtualService bound to gateways (not to 'mesh')");
    }
  });
  if (!vs.http?.length && !vs.tls?.length && !vs.tcp?.length) {
    r.error(vs, undefined, "spec: a VirtualService needs at least one of 'http', 'tls' or 'tcp' routes");
  }
  checkExportTo(vs, r);
}
