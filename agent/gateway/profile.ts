import { HostGuard, ProfileMonitor, readGuard, type GuardThresholds, type Profile } from '../profile';
import type { AgentConfig } from '../config';
import type { Feature, FeatureContext } from './context';

/** Guard thresholds from the agent's training settings. maxCpuLoad ≥ 1 turns the load check off (simulated fleets share one host). */
export function guardSettings(t: AgentConfig['training']): { thresholds: Partial<GuardThresholds>; ignoreLoad: boolean } {
  const ignoreLoad = t.maxCpuLoad >= 1;
  const maxOtherLoad = Math.min(t.maxCpuLoad, 0.9);
  return {
    ignoreLoad,
    thresholds: {
      maxOtherLoad,
      pauseOtherLoad: Math.min(1, maxOtherLoad + 0.1),
      maxTemperatureC: t.maxTemperatureC,
      throttleTemperatureC: t.maxTemperatureC - 10,
      minBatteryPercent: t.minBatteryPercent,
    },
  };
}

/**
 * Profile and self-protection: publishes the retained profile (hardware, measured training and link
 * throughput) when it changes materially, and runs the host guard, which throttles or pauses
 * training when the host's own work needs the CPU, memory runs low, it runs hot or on a low battery.
 */
export class ProfileFeature implements Feature {
  readonly name = 'profile';
  readonly monitor: ProfileMonitor;
  private guard?: HostGuard;

  constructor(private readonly ctx: FeatureContext) {
    this.monitor = new ProfileMonitor({ node: ctx.nodeId });
  }

  async start(): Promise<void> {
    const { bus, link, topics, nodeId, log } = this.ctx;
    this.monitor.on('change', (p: Profile, reasons: string[]) => {
      link.publishJson(topics.nodeProfile(nodeId), p, { retain: true }).catch((err) => log.warn({ err: (err as Error).message }, 'profile not published'));
      log.debug({ reasons }, 'profile published');
    });
    bus.on('calibrated', (model, sps) => this.monitor.setTrainThroughput(sps, model));
    bus.on('trained', (model, samples, busy) => this.monitor.observeTraining(model, samples, busy));
    bus.on('transfer', (dir, bytes, seconds) => this.monitor.observeTransfer(dir, bytes, seconds));
    bus.on('connected', () => {
      const p = this.monitor.profile;
      if (p) link.publishJson(topics.nodeProfile(nodeId), p, { retain: true }).catch(() => undefined);
    });
    bus.on('configChanged', (cfg, paths) => {
      if (paths.some((p) => /^training\.(maxCpuLoad|maxTemperatureC|minBatteryPercent)/.test(p))) this.startGuard(cfg);
    });
    await this.monitor.start();
    this.startGuard(this.ctx.config());
  }

  get busy(): boolean {
    return this.guard?.busy ?? false;
  }

  guardState(): unknown {
    return this.guard?.state;
  }

  private startGuard(cfg: AgentConfig): void {
    this.guard?.stop();
    const { thresholds, ignoreLoad } = guardSettings(cfg.training);
    const guard = new HostGuard({ thresholds, read: async (sampler) => ({ ...(await readGuard(sampler)), ...(ignoreLoad ? { otherLoad: null } : {}) }) });
    guard.on('state', (decision) => {
      this.ctx.log.info({ mode: decision.mode, dutyCycle: decision.dutyCycle, causes: decision.causes.map((c) => c.detail) }, 'host guard');
      this.ctx.bus.emit('guardDutyCycle', decision.dutyCycle);
      this.ctx.bus.emit('busyChanged', decision.mode === 'pause');
    });
    guard.start();
    this.guard = guard;
  }

  async stop(): Promise<void> {
    this.guard?.stop();
    this.monitor.stop();
  }
}
