import type { Role } from './schema';

/** Mirrors the schemas in schema.ts (defaults filled in: only the optional fields may be absent). */
export interface BrokerSettings {
  url: string;
  username?: string;
  password?: string;
  clientId?: string;
  tls: { ca?: string; cert?: string; key?: string; rejectUnauthorized: boolean };
  maxPacketBytes: number;
  protocolVersion: 4 | 5;
}

export interface FleetSettings {
  prefix: string;
  name: string;
}

export type LogLevelSetting = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
export type CodecSetting = 'none' | 'int8' | 'int4' | 'topk' | 'topk-int8';

export interface AgentConfig {
  broker: BrokerSettings;
  fleet: FleetSettings;
  node: { id?: string };
  data: {
    dataset: 'mnist' | 'femnist' | 'csv';
    dataDir?: string;
    shard: string;
    partition: string;
    seed: number;
    maxSamples?: number;
    csv: { file?: string; labelColumn: string; ownerColumn: string; owner?: string; classes?: string[]; missing?: 'drop' | 'mean' };
  };
  training: { threads: number; maxCpuLoad: number; minBatteryPercent: number; maxTemperatureC: number; paused: boolean };
  compression: { codec?: CodecSetting; k?: number; blockSize?: number; stochastic?: boolean };
  logging: { level: LogLevelSetting };
  stateDir?: string;
}

export interface AggregatorConfig {
  broker: BrokerSettings;
  fleet: FleetSettings;
  data: { dataset: 'mnist' | 'femnist'; dataDir?: string };
  model: { hidden: number[] };
  job: {
    rounds: number;
    clientsPerRound: number;
    minClients: number;
    waitSeconds: number;
    epochs: number;
    batchSize: number;
    lr: number;
    deadlineSeconds: number;
    seed: number;
    checkpoint?: string;
    resume: 'never' | 'auto' | 'always';
    modelOut: string;
    strategy: 'balanced' | 'fedavg';
    overcommit: number;
    targetQuantile: number;
    maxIdleRounds: number;
    foldLate: boolean;
  };
  compression: { codec: CodecSetting | 'auto'; k: number; blockSize?: number; stochastic: boolean };
  logging: { level: LogLevelSetting };
  stateDir?: string;
}

export type Config = AgentConfig | AggregatorConfig;
export type ConfigFor<R extends Role> = R extends 'agent' ? AgentConfig : AggregatorConfig;
