import type { IPublishPacket } from 'mqtt';
import { checkConfig, diffPaths, mergeConfig, redactConfig, restartRequired, formatIssue, type AgentConfig } from '../config';
import { MessageError, parseJson } from '../transport';
import type { StateDir } from '../state';
import type { Feature, FeatureContext } from './context';

/** A configuration layer from MQTT: `{version, config}`, versions only go up. */
export interface ConfigLayer {
  version: number;
  config: Record<string, unknown>;
}

export interface ManagementHooks {
  /** Replaces the effective configuration (already validated). */
  apply(config: AgentConfig, changed: string[]): void;
  status(): Record<string, unknown>;
  profile(): Record<string, unknown> | null;
  /** Leave the fleet: clear retained state and stop. */
  leave(): Promise<void>;
}

export interface StoredLayers {
  fleet?: ConfigLayer;
  node?: ConfigLayer;
  /** Partial settings from set_config requests. */
  local?: Record<string, unknown>;
}

export const ACTIONS = ['get_config', 'set_config', 'status', 'profile', 'pause', 'resume', 'leave'] as const;
export type Action = (typeof ACTIONS)[number];

export interface Response {
  status: 'ok' | 'error';
  data?: unknown;
  error?: string;
  transaction?: unknown;
}

/** `{version, config}` from a retained config topic; throws MessageError naming what is wrong. */
export function parseLayer(raw: unknown, what: string): ConfigLayer {
  const o = raw as { version?: unknown; config?: unknown };
  if (o === null || typeof o !== 'object') throw new MessageError(`${what} must be a JSON object {version, config}`);
  if (typeof o.version !== 'number' || !Number.isInteger(o.version) || o.version < 1) throw new MessageError(`${what}: version must be a whole number ≥ 1`);
  if (o.config === null || typeof o.config !== 'object' || Array.isArray(o.config)) throw new MessageError(`${what}: config must be an object of settings`);
  return { version: o.version, config: o.config as Record<string, unknown> };
}

/** The settings that result from `layers` over the process's own (`base`), validated. */
/**
 * Settings that only the device itself may change: over MQTT, a wrong broker, fleet, node id or
 * state directory would cut the node off from the very channel needed to fix it.
 */
export const LOCAL_ONLY = /^(broker|fleet|node|stateDir)(\.|$)/;

export function layeredConfig(base: AgentConfig, layers: StoredLayers): { config?: AgentConfig; issues: string[] } {
  let merged: unknown = base;
  for (const layer of [layers.fleet?.config, layers.node?.config, layers.local]) if (layer) merged = mergeConfig(merged as object, layer);
  const { config, issues } = checkConfig(merged, 'agent');
  if (!config) return { issues: issues.map(formatIssue) };
  const local = diffPaths(base, config).filter((p) => LOCAL_ONLY.test(p));
  if (local.length) return { issues: local.map((p) => `${p}: cannot be changed over MQTT (a wrong value would cut the node off); set it in the settings file, the environment or on the command line`) };
  return { config, issues: [] };
}

/**
 * The effective settings at start-up: the process's own with the layers applied over MQTT before
 * the last restart. Called before connecting, so settings that need a restart (broker, fleet,
 * threads, data) really take effect on the restart that the set_config response asked for.
 */
export async function restoredConfig(base: AgentConfig, state?: StateDir): Promise<{ config: AgentConfig; issues?: string[] }> {
  const stored = await state?.appliedConfig();
  if (!stored) return { config: base };
  const result = layeredConfig(base, (stored.config as StoredLayers) ?? {});
  return result.config ? { config: result.config } : { config: base, issues: result.issues };
}

/**
 * Configuration over MQTT and the management API (after Zigbee2MQTT's bridge requests).
 *
 * Effective settings = the process's own (file, environment, command line) ← the fleet's retained
 * layer ← the node's retained layer ← settings set by request. Retained layers carry a version that
 * only goes up: a replayed or older one is ignored, the same version twice does nothing. An invalid
 * layer or request is refused with every reason and the previous settings stay in force. Applied
 * layers are persisted in the state directory, so a restart comes back with them.
 *
 * Requests arrive on `node/<id>/request/<action>` as `{transaction, data}` and are answered on
 * `node/<id>/response/<action>` with `{status, data, error, transaction}`; on MQTT v5 the answer
 * also goes to the request's response topic, with its correlation data passed through untouched.
 */
export class ManagementFeature implements Feature {
  readonly name = 'management';
  private layers: StoredLayers = {};
  /** Layer changes run one at a time: concurrent ones (a fleet and a node retained config arrive together) would interleave their state writes. */
  private serial: Promise<unknown> = Promise.resolve();
  private requests: Promise<unknown> = Promise.resolve();

  constructor(private readonly ctx: FeatureContext, private readonly base: AgentConfig, private readonly hooks: ManagementHooks) {}

  async start(): Promise<void> {
    const stored = await this.ctx.state?.appliedConfig();
    if (stored) {
      this.layers = (stored.config as StoredLayers) ?? {};
      const result = this.effective(this.layers);
      if (result.config) {
        // Usually already in force (the agent started from restoredConfig); applies what is not.
        const changed = diffPaths(this.ctx.config(), result.config);
        if (changed.length) this.hooks.apply(result.config, changed);
      }
      else this.ctx.log.error({ issues: result.issues }, 'stored configuration layers are invalid now; ignoring them');
    }
    const { link, topics, nodeId } = this.ctx;
    await link.subscribe(topics.fleetConfig, (_t, payload) => this.onLayer('fleet', payload));
    await link.subscribe(topics.nodeConfig(nodeId), (_t, payload) => this.onLayer('node', payload));
    await link.subscribe(topics.nodeRequests(nodeId), (topic, payload, packet) => {
      // Requests are answered in the order they arrived (a status right after a pause reports the pause).
      this.requests = this.requests
        .then(() => this.onRequest(topic, payload, packet))
        .catch((err) => this.ctx.log.error({ err: (err as Error).message }, 'request handling failed'));
    });
  }

  async stop(): Promise<void> {}

  get appliedLayers(): StoredLayers {
    return this.layers;
  }

  /** The settings that result from `layers` over the process's own, validated. */
  private effective(layers: StoredLayers): { config?: AgentConfig; issues: string[] } {
    return layeredConfig(this.base, layers);
  }

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.serial.then(fn, fn);
    this.serial = run.catch(() => undefined);
    return run;
  }

  /** Tries the layers `next(current)`: applies and persists them if valid; returns what changed and what needs a restart. */
  private tryLayers(next: (current: StoredLayers) => StoredLayers): Promise<{ changed: string[]; restart: string[] }> {
    return this.exclusive(() => this.tryLayersNow(next(this.layers)));
  }

  private async tryLayersNow(next: StoredLayers): Promise<{ changed: string[]; restart: string[] }> {
    const result = this.effective(next);
    if (!result.config) throw new Error(`invalid configuration, nothing changed: ${result.issues.join('; ')}`);
    const changed = diffPaths(this.ctx.config(), result.config);
    this.layers = next;
    const version = Math.max(next.fleet?.version ?? 0, next.node?.version ?? 0);
    await this.ctx.state?.saveAppliedConfig(version, next as Record<string, unknown>, { fleet: next.fleet?.version ?? 0, node: next.node?.version ?? 0 });
    if (changed.length) this.hooks.apply(result.config, changed);
    return { changed, restart: restartRequired(changed, 'agent') };
  }

  private onLayer(kind: 'fleet' | 'node', payload: Buffer): Promise<void> {
    return this.exclusive(() => this.onLayerNow(kind, payload));
  }

  private async onLayerNow(kind: 'fleet' | 'node', payload: Buffer): Promise<void> {
    if (payload.length === 0) return; // a cleared retained topic
    let layer: ConfigLayer;
    try {
      layer = parseLayer(parseJson(payload, `${kind} config`), `${kind} config`);
    } catch (err) {
      this.ctx.log.error({ err: (err as Error).message }, `${kind} config refused`);
      return;
    }
    const current = this.layers[kind];
    if (current && layer.version <= current.version) {
      if (layer.version < current.version) this.ctx.log.info({ kind, version: layer.version, applied: current.version }, 'older config ignored');
      else this.ctx.log.debug({ kind, version: layer.version }, 'config version already applied');
      return;
    }
    try {
      const { changed, restart } = await this.tryLayersNow({ ...this.layers, [kind]: layer });
      this.ctx.log.info({ kind, version: layer.version, changed, restartRequired: restart }, 'config applied');
    } catch (err) {
      this.ctx.log.error({ kind, version: layer.version, err: (err as Error).message }, 'config refused; previous settings stay in force');
    }
  }

  private async onRequest(topic: string, payload: Buffer, packet: IPublishPacket): Promise<void> {
    const action = topic.slice(topic.lastIndexOf('/') + 1);
    let transaction: unknown;
    let response: Response;
    try {
      const req = payload.length ? (parseJson(payload, 'request') as { transaction?: unknown; data?: unknown }) : {};
      if (req === null || typeof req !== 'object' || Array.isArray(req)) throw new MessageError('a request must be a JSON object {transaction, data}');
      transaction = req.transaction;
      response = { status: 'ok', data: await this.handle(action, req.data), transaction };
    } catch (err) {
      response = { status: 'error', error: (err as Error).message, transaction };
    }
    if (response.transaction === undefined) delete response.transaction;
    this.ctx.log.debug({ action, transaction, status: response.status, error: response.error }, 'request answered');
    const body = JSON.stringify(response);
    const { link, topics, nodeId } = this.ctx;
    const safeAction = (ACTIONS as readonly string[]).includes(action) ? action : 'unknown';
    await link.publish(topics.nodeResponse(nodeId, safeAction), body, { qos: 1 });
    const props = packet.properties;
    // MQTT v5 request/response: answer on the response topic with the correlation data, untouched.
    if (props?.responseTopic && !/[+#]/.test(props.responseTopic)) {
      await link.publish(props.responseTopic, body, { qos: 1, correlationData: props.correlationData as Buffer | undefined });
    }
    if (action === 'leave' && response.status === 'ok') await this.hooks.leave();
  }

  private async handle(action: string, data: unknown): Promise<unknown> {
    switch (action as Action) {
      case 'get_config':
        return { config: redactConfig(this.ctx.config()), versions: { fleet: this.layers.fleet?.version ?? 0, node: this.layers.node?.version ?? 0 } };
      case 'set_config': {
        if (data === null || typeof data !== 'object' || Array.isArray(data)) throw new Error('set_config needs data: an object of settings to change, e.g. {"training": {"threads": 2}}');
        const { changed, restart } = await this.tryLayers((layers) => ({ ...layers, local: mergeConfig(layers.local ?? {}, data) }));
        return { changed, restartRequired: restart, config: redactConfig(this.ctx.config()) };
      }
      case 'status':
        return this.hooks.status();
      case 'profile':
        return this.hooks.profile();
      case 'pause':
      case 'resume': {
        const { changed } = await this.tryLayers((layers) => ({ ...layers, local: mergeConfig(layers.local ?? {}, { training: { paused: action === 'pause' } }) }));
        return { paused: action === 'pause', changed };
      }
      case 'leave':
        return { leaving: true };
      default:
        throw new Error(`unknown action "${action}"; actions: ${ACTIONS.join(', ')}`);
    }
  }
}
