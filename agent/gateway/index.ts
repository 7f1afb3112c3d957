export { Agent, VERSION, type AgentOptions } from './agent';
export { GatewayBus, type FeatureContext, type Feature, type GatewayEvents } from './context';
export { ManagementFeature, parseLayer, layeredConfig, restoredConfig, ACTIONS, type ConfigLayer, type Action, type Response } from './management';
export { TrainingFeature, type TrainingStatus } from './training';
export { ProfileFeature, guardSettings } from './profile';
export { tierDutyCycle, transferSeconds, type TierEmulation } from './emulation';
