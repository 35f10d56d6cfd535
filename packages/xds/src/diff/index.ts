// `vmpilot diff`'s engine: pure comparison of what two configs generate for a set of proxy views.
export { compareConfigs, GenerateError, type ConfigDiff, type DiffGroup, type Generate } from "./compare.js";
export { diffFields, formatFieldChange, formatValue, jsonEqual, type FieldChange, type Json } from "./fields.js";
export { loadConfigDir, type LoadedConfig } from "./load.js";
export { formatText, jsonReport, type ReportOptions, type Side } from "./report.js";
export { diffResources, RESOURCE_TYPES, type GeneratedResources, type ResourceAction, type ResourceChange, type ResourceType } from "./resources.js";
export { defaultViews, formatLabels, mergeViews, namespacesOf, parseProxySpec, ProxySpecError, type DiffView } from "./views.js";
