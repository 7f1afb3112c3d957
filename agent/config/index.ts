/**
 * agent/config — the agent's and the aggregator's settings: one JSON Schema per role (defaults,
 * rules, which settings need a restart, which are secret), files in YAML or JSON merged over the
 * defaults, environment overrides derived from the schema, validation that lists every problem.
 */
export { type Role, ROLES, type SchemaNode, agentSchema, aggregatorSchema, schemaFor, schemaAt, leaves } from './schema';
export type { Config, ConfigFor, AgentConfig, AggregatorConfig, BrokerSettings, FleetSettings, LogLevelSetting, CodecSetting } from './types';
export { ConfigError } from './errors';
export { validateConfig, checkConfig, defaultConfig, formatIssue, type ConfigIssue } from './validate';
export { loadConfigFile, formatOf, type LoadOptions } from './load';
export { mergeConfig, diffPaths } from './merge';
export { restartRequired } from './restart';
export { redactConfig, REDACTED } from './redact';
export { envName, envVariables, envOverrides, unknownVariables, OTHER_VARIABLES, type EnvOverrides } from './env';
