export * from "./api.js";
export * from "./model.js";
export * from "./spiffe.js";
export * from "./visibility.js";
export * from "./consul/index.js";
export * from "./duration.js";
export * from "./parse/index.js";
export * from "./validate.js";
