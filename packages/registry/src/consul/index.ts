export { ConsulSource, type ConsulLogger } from "./source.js";
export { resolveConsulOptions, consulDuration, MAX_CONSUL_WAIT_MS, DEFAULT_WORKLOAD_SERVICE_PREFIX, type ConsulSourceOptions, type ConsulTlsOptions, type ResolvedConsulOptions } from "./config.js";
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
export {
  AUTO_REGISTERED_META,
  AUTO_REGISTERED_TAG,
  registrationOf,
  remoteWorkloadOf,
  isAutoRegisteredInstance,
  serviceIdOf,
  livenessCheckId,
  healthCheckId,
  consulServiceName,
  publishableNamespace,
  sanitizeReplicaName,
  type WorkloadRegistrationOptions,
} from "./workload-records.js";
export { ConsulWorkloadPublisher, type WorkloadPublisherOptions } from "./workload-publisher.js";
