import type { IPublishPacket } from 'mqtt';
import { checkConfig, diffPaths, mergeConfig, redactConfig, restartRequired, formatIssue, type AgentConfig } from '../config';
import { MessageError, parseJson, validateTopicLevel } from '../transport';
import { CorruptStateError, type AppliedConfig, type StateDir } from '../state';
import { logger, type Logger } from '../log';
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

/**
 * The highest layer version: 2^53 - 1, the largest whole number a JSON number (a double) holds
 * exactly. Beyond it `v + 1 === v` and distinct versions parse equal, so "only goes up" breaks.
 */
export const MAX_LAYER_VERSION = Number.MAX_SAFE_INTEGER;

const isLayerVersion = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 1;

/** `{version, config}` from a retained config topic; throws MessageError naming what is wrong. */
export function parseLayer(raw: unknown, what: string): ConfigLayer {
  const o = raw as { version?: unknown; config?: unknown };
  if (o === null || typeof o !== 'object' || Array.isArray(o)) throw new MessageError(`${what} must be a JSON object {version, config}`);
  if (!isLayerVersion(o.version)) throw new MessageError(`${what}: version must be a whole number from 1 to ${MAX_LAYER_VERSION} (2^53 - 1), got ${o.version === undefined ? 'none' : JSON.stringify(o.version)}`);
  if (o.config === null || typeof o.config !== 'object' || Array.isArray(o.config)) throw new MessageError(`${what}: config must be an object of settings`);
  return { version: o.version, config: o.config as Record<string, unknown> };
}

/** The response topic level for a request's action: the action itself if it is a valid topic level, else `unknown`. */
export function responseLevel(action: string): string {
  try {
    return validateTopicLevel(action, 'action');
  } catch {
    return 'unknown';
  }
}

/**
 * Settings that only the device itself may change: over MQTT, a wrong broker, fleet, node id or
 * state directory would cut the node off from the very channel needed to fix it.
 */
export const LOCAL_ONLY = /^(broker|fleet|node|stateDir)(\.|$)/;

const KINDS = ['fleet', 'node', 'local'] as const;
type Kind = (typeof KINDS)[number];

/** The settings that result from `layers` over the process's own (`base`), validated. */
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
 * The problems of one layer over `base` alone, or []. Every layer must be valid by itself, not just
 * in the stack: a value a higher layer hides today (a set_config) would come back into force the
 * moment that layer changes, and would be persisted meanwhile.
 */
export function layerIssues(base: AgentConfig, kind: Kind, layers: StoredLayers): string[] {
  return layers[kind] === undefined ? [] : layeredConfig(base, { [kind]: layers[kind] }).issues;
}

/**
 * The stored layers that can be used with `base`: a malformed one (a version beyond 2^53 - 1 or
 * settings that are not an object, as an older build could store) or one invalid by itself is
 * dropped; if the rest are invalid together, all are. Each problem is returned, naming its layer.
 */
export function restoreLayers(base: AgentConfig, stored: unknown): { layers: StoredLayers; issues: string[] } {
  const s = (stored ?? {}) as Record<string, unknown>;
  const layers: StoredLayers = {};
  const issues: string[] = [];
  for (const kind of ['fleet', 'node'] as const) {
    if (s[kind] === undefined) continue;
    try {
      layers[kind] = parseLayer(s[kind], `stored ${kind} config`);
    } catch (err) {
      issues.push((err as Error).message);
    }
  }
  if (s.local !== undefined) {
    if (s.local !== null && typeof s.local === 'object' && !Array.isArray(s.local)) layers.local = s.local as Record<string, unknown>;
    else issues.push('stored set_config settings: must be an object of settings');
  }
  for (const kind of KINDS) {
    const own = layerIssues(base, kind, layers);
    if (own.length) {
      issues.push(...own.map((i) => `stored ${kind === 'local' ? 'set_config settings' : `${kind} config`}: ${i}`));
      delete layers[kind];
    }
  }
  const together = layeredConfig(base, layers).issues;
  if (together.length) return { layers: {}, issues: [...issues, ...together.map((i) => `stored layers together: ${i}`)] };
  return { layers, issues };
}

/** The applied-config file, or undefined if there is none or it was corrupt (logged; the file is moved aside, so this happens once). */
async function readApplied(state: StateDir | undefined, log: Logger): Promise<AppliedConfig | undefined> {
  try {
    return await state?.appliedConfig();
  } catch (err) {
    if (!(err instanceof CorruptStateError)) throw err;
    log.error({ err: err.message }, 'stored configuration is corrupt; starting without the layers applied over MQTT');
    return undefined;
  }
}

/**
 * The effective settings at start-up: the process's own with the layers applied over MQTT before
 * the last restart. Called before connecting, so settings that need a restart (broker, fleet,
 * threads, data) really take effect on the restart that the set_config response asked for.
 */
export async function restoredConfig(base: AgentConfig, state?: StateDir, log: Logger = logger('management')): Promise<{ config: AgentConfig; issues?: string[] }> {
  const stored = await readApplied(state, log);
  if (!stored) return { config: base };
  const { layers, issues } = restoreLayers(base, stored.config);
  const config = layeredConfig(base, layers).config ?? base;
  return issues.length ? { config, issues } : { config };
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
  /** The version stored before this start: the state file's version never goes down, even when stored layers were dropped. */
  private storedVersion = 0;
  /** Layer changes run one at a time: concurrent ones (a fleet and a node retained config arrive together) would interleave their state writes. */
  private serial: Promise<unknown> = Promise.resolve();
  private requests: Promise<unknown> = Promise.resolve();

  constructor(private readonly ctx: FeatureContext, private readonly base: AgentConfig, private readonly hooks: ManagementHooks) {}

  async start(): Promise<void> {
    const stored = await readApplied(this.ctx.state, this.ctx.log);
    if (stored) {
      this.storedVersion = stored.version;
      const { layers, issues } = restoreLayers(this.base, stored.config);
      if (issues.length) this.ctx.log.error({ issues }, 'stored configuration layers are invalid now; ignoring those');
      this.layers = layers;
      const result = this.effective(layers);
      // Usually already in force (the agent started from restoredConfig); applies what is not.
      const changed = result.config ? diffPaths(this.ctx.config(), result.config) : [];
      if (result.config && changed.length) this.hooks.apply(result.config, changed);
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
    const version = Math.max(this.storedVersion, next.fleet?.version ?? 0, next.node?.version ?? 0);
    // Persisted first: layers that cannot be stored must not be in force (nor block the next ones).
    await this.ctx.state?.saveAppliedConfig(version, next as Record<string, unknown>, { fleet: next.fleet?.version ?? 0, node: next.node?.version ?? 0 });
    this.layers = next;
    if (changed.length) this.hooks.apply(result.config, changed);
    return { changed, restart: restartRequired(changed, 'agent') };
  }

  private onLayer(kind: 'fleet' | 'node', payload: Buffer): Promise<void> {
    return this.exclusive(() => this.onLayerNow(kind, payload));
  }

  private async onLayerNow(kind: 'fleet' | 'node', payload: Buffer): Promise<void> {
    if (payload.length === 0) {
      // A cleared retained topic carries no version, so it cannot be told from "nothing retained";
      // the layer in force stays. Dropping a layer takes a higher version with an empty config.
      const current = this.layers[kind];
      if (current) this.ctx.log.info({ kind, version: current.version }, `retained ${kind} config cleared; the layer in force (version ${current.version}) stays: publish version ${current.version + 1} with "config": {} to drop it`);
      return;
    }
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
      const own = layerIssues(this.base, kind, { [kind]: layer });
      if (own.length) throw new Error(`invalid configuration, nothing changed: ${own.join('; ')}`);
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
    // On response/<action>, whatever the action, known or not (README: request/<action> -> response/<action>);
    // response/unknown only for a level the topic scheme refuses (empty, white space, too long).
    await link.publish(topics.nodeResponse(nodeId, responseLevel(action)), body, { qos: 1 });
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
