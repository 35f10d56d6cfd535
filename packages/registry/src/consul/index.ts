export { ConsulSource, type ConsulLogger } from "./source.js";
export { resolveConsulOptions, consulDuration, MAX_CONSUL_WAIT_MS, type ConsulSourceOptions, type ConsulTlsOptions, type ResolvedConsulOptions } from "./config.js";
export {
  convertConsulService,
  consulHealth,
  consulLabels,
  consulHostname,
  consulPortName,
  consulProtocol,
  isRoutableConsulService,
  type ConsulHealthEntry,
  type ConvertContext,
  type ConvertedService,
} from "./convert.js";
export { BlockingWatch, nextIndex, backoffDelay, type QueryFn, type QueryMeta, type QueryResult, type BlockingWatchOptions } from "./watch.js";
