import { EventEmitter } from 'node:events';
import type { Logger } from '../log';
import type { AgentConfig } from '../config';
import type { MqttLink, Topics } from '../transport';
import type { StateDir } from '../state';

/** Events features use to talk to each other (never by calling into each other's internals). */
export interface GatewayEvents {
  /** The effective configuration changed; `paths` are the settings that differ. */
  configChanged: [config: AgentConfig, paths: string[]];
  /** The aggregator's retained state: which round is under way and whether it still takes updates. */
  roundState: [state: { round: number; open: boolean; session: number }];
  /** The link (re)connected. */
  connected: [];
  /** Training was paused or resumed (by the operator or by the host guard). */
  busyChanged: [busy: boolean];
  /** The host guard's duty cycle for training (1 = full speed, 0 = paused). */
  guardDutyCycle: [dutyCycle: number];
  /** Measured: training throughput of a model, and transfers over the link. */
  calibrated: [model: string, samplesPerSecond: number];
  trained: [model: string, samples: number, busySeconds: number];
  transfer: [direction: 'up' | 'down', bytes: number, seconds: number];
}

export class GatewayBus extends EventEmitter<GatewayEvents> {}

/** What every feature is given: one context object rather than many positional arguments. */
export interface FeatureContext {
  readonly nodeId: string;
  readonly topics: Topics;
  readonly link: MqttLink;
  readonly bus: GatewayBus;
  readonly log: Logger;
  readonly state?: StateDir;
  /** The effective configuration right now (it can change at run time). */
  config(): AgentConfig;
}

/** A feature starts and stops; its constructor only stores what it is given. */
export interface Feature {
  readonly name: string;
  start(): Promise<void>;
  stop(): Promise<void>;
}
