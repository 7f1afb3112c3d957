/**
 * agent/profile — what this gateway is and how it is doing (issue 3, sections 1 and 3).
 *
 * - readHardware: cores, CPU, effective memory (cgroup limits), load, temperature, battery; every
 *   unknown value is null, never NaN (sanitize.ts says which raw values count as unknown).
 * - calibrateTraining / LinkEstimator: measured training and link throughput.
 * - Profile / ProfileMonitor / materialChange: the retained profile message and when to re-publish it.
 * - HostGuard / decide: throttle or pause training when the host needs its CPU, memory or power.
 */
export { type HardwareProfile, type RawHardware, type ReadHardwareOptions, buildHardware, readHardware, kernelCpuMHz } from './hardware';
export { type CgroupLimits, readCgroupLimits } from './cgroup';
export { type CpuSnapshot, type LoadSample, LoadSampler, cpuSnapshot, loadBetween, parseProcStat } from './cpu-load';
export { knownNumber, knownPositive, knownCount, knownTemperature, knownPercent, knownFraction, knownString, knownBoolean, scrubNumbers } from './sanitize';
export { type CalibrateOptions, type Calibration, type Direction, type LinkEstimate, type LinkEstimatorOptions, LinkEstimator, calibrateTraining } from './calibrate';
export { type Profile, type ProfileExtras, type MaterialThresholds, PROFILE_VERSION, DEFAULT_MATERIAL, makeProfile, materialChange } from './profile';
export { type ProfileMonitorOptions, ProfileMonitor } from './monitor';
export {
  type GuardMode, type GuardCondition, type GuardCause, type GuardDecision, type GuardReading, type GuardThresholds,
  DEFAULT_GUARD, RUN, decide, guardThresholds, sameDecision,
} from './guard-decide';
export { type HostGuardOptions, HostGuard, readGuard, readingFromHardware } from './guard';
