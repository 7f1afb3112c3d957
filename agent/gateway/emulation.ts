import type { DeviceTier } from '../sim/tiers';
import { trainFlopsPerSample } from '../sim/tiers';

/**
 * Slows a real agent to a device tier, for real-time fleet simulation: transfers take as long as
 * they would over the tier's link and training runs at the tier's speed (through the trainer's duty
 * cycle), all divided by `timeScale` so a demo does not take hours.
 */
export interface TierEmulation {
  tier: DeviceTier;
  /** Simulated seconds per real second (10: ten times faster than the real device). */
  timeScale: number;
}

export function transferSeconds(e: TierEmulation, bytes: number, direction: 'up' | 'down'): number {
  const bw = direction === 'up' ? e.tier.upBytesPerSecond : e.tier.downBytesPerSecond;
  return (e.tier.latencySeconds + bytes / bw) / e.timeScale;
}

/** Duty cycle that makes a host doing `hostSamplesPerSecond` train at the tier's speed (× timeScale). */
export function tierDutyCycle(e: TierEmulation, params: number, hostSamplesPerSecond: number): number {
  const tierSps = (e.tier.gflops * 1e9) / trainFlopsPerSample(params);
  if (!(hostSamplesPerSecond > 0)) return 1;
  return Math.min(1, Math.max(0.01, (tierSps * e.timeScale) / hostSamplesPerSecond));
}
