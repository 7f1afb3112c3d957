import { EventEmitter } from 'node:events';
import type { NodeState, Heartbeat, CodecChoice } from '../transport';

/** What a node's published profile says about it; null = unknown. */
export interface NodeProfileSummary {
  trainSamplesPerSecond: number | null;
  upBytesPerSecond: number | null;
  downBytesPerSecond: number | null;
  /** CPU load from other processes, 0..1. */
  cpuLoad?: number | null;
  temperatureC?: number | null;
  batteryPercent?: number | null;
  onBattery?: boolean | null;
}

export interface NodeInfo {
  id: string;
  online: boolean;
  session: number;
  samples: number;
  /** Shape of the node's data, when it says (see NodeState). */
  features?: number;
  labels?: number;
  backend?: string;
  busy: boolean;
  profile?: NodeProfileSummary;
  /** A codec the node's own configuration pins. */
  pinnedCodec?: CodecChoice;
  /** ms timestamp (local clock) of the last message from the node. */
  lastSeen: number;
}

/**
 * The aggregator's view of the fleet, fed by retained state messages and heartbeats. A node is live
 * while it is online and has been heard from within `livenessMs` (a last will can go missing).
 * A state from an older session than the one already known is stale and ignored.
 */
export class Fleet extends EventEmitter {
  private readonly nodes = new Map<string, NodeInfo>();

  constructor(private readonly livenessMs = 30_000, private readonly now: () => number = Date.now) {
    super();
  }

  onState(state: NodeState, opts: { retained?: boolean } = {}): void {
    const known = this.nodes.get(state.node);
    if (known && state.session < known.session) return;
    const wasLive = known ? this.isLive(known) : false;
    const info: NodeInfo = {
      id: state.node,
      online: state.online,
      session: state.session,
      samples: state.samples ?? known?.samples ?? 0,
      features: state.features ?? known?.features,
      labels: state.labels ?? known?.labels,
      backend: state.backend ?? known?.backend,
      busy: false,
      profile: known?.profile,
      pinnedCodec: state.codec ?? undefined,
      lastSeen: opts.retained ? (known?.lastSeen ?? -Infinity) : this.now(),
    };
    this.nodes.set(state.node, info);
    if (wasLive && !info.online) this.emit('offline', info.id);
    if (!wasLive && info.online) this.emit('online', info.id);
  }

  onHeartbeat(hb: Heartbeat): void {
    const known = this.nodes.get(hb.node);
    if (!known || hb.session < known.session) return;
    if (hb.session > known.session) known.session = hb.session;
    known.lastSeen = this.now();
    known.busy = hb.busy ?? false;
  }

  onProfile(id: string, profile: NodeProfileSummary): void {
    const known = this.nodes.get(id);
    if (known) known.profile = profile;
  }

  all(): NodeInfo[] {
    return [...this.nodes.values()];
  }

  get(id: string): NodeInfo | undefined {
    return this.nodes.get(id);
  }

  isLive(info: NodeInfo): boolean {
    return info.online && this.now() - info.lastSeen <= this.livenessMs;
  }

  /** Nodes that are online and recently heard from, sorted by id (a stable order for seeded selection). */
  live(): NodeInfo[] {
    return [...this.nodes.values()].filter((n) => this.isLive(n)).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }
}
