/**
 * Loads build/Release/fedgate_compress.node (built by native/build.js at `npm install`) and adapts
 * it to the RawBackend shape. Never throws: a missing or broken addon becomes a reason string.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { FORMAT_VERSION, type Params } from './format';
import type { RawBackend } from './ts-codec';

interface Addon {
  formatVersion: number;
  encode(x: Float32Array, codec: number, blockSize: number, stochastic: boolean, seed: number, k: number): Uint8Array;
  encodeAsync(x: Float32Array, codec: number, blockSize: number, stochastic: boolean, seed: number, k: number): Promise<Uint8Array>;
  decode(bytes: Uint8Array): Float32Array;
  simd(level?: 'baseline' | 'avx2'): string;
  /** sd_notify(3) over $NOTIFY_SOCKET (native/sdnotify.cc); used by agent/service. */
  sdNotify?(socket: string, message: string): void;
}

export const ADDON_FILE = path.join('build', 'Release', 'fedgate_compress.node');

/** The package root: the nearest ancestor holding package.json (works from agent/ and dist/agent/). */
function packageRoot(): string | undefined {
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, 'package.json'))) return dir;
    if (path.dirname(dir) === dir) return undefined;
  }
}

/** `simd` picks the kernel set (tests check that every CPU path gives the same bytes). */
export function loadNative(): { backend?: RawBackend; simd?: Addon['simd']; sdNotify?: Addon['sdNotify']; reason: string } {
  const root = packageRoot();
  if (!root) return { reason: `no package.json above ${__dirname}` };
  const file = path.join(root, ADDON_FILE);
  if (!fs.existsSync(file)) return { reason: `native addon not built (${file} is missing; run: node native/build.js)` };
  let addon: Addon;
  try {
    const mod = { exports: {} as Addon };
    process.dlopen(mod, file);
    addon = mod.exports;
  } catch (err) {
    return { reason: `native addon failed to load from ${file}: ${(err as Error).message}` };
  }
  if (addon.formatVersion !== FORMAT_VERSION) {
    return { reason: `native addon at ${file} speaks format ${addon.formatVersion}, not ${FORMAT_VERSION} (stale build; run: node native/build.js)` };
  }
  const backend: RawBackend = {
    encode: (x: Float32Array, p: Params) => addon.encode(x, p.codec, p.blockSize, p.stochastic, p.seed, p.k),
    encodeAsync: (x: Float32Array, p: Params) => addon.encodeAsync(x, p.codec, p.blockSize, p.stochastic, p.seed, p.k),
    decode: (bytes: Uint8Array) => addon.decode(bytes),
  };
  return {
    backend,
    simd: (level) => (level === undefined ? addon.simd() : addon.simd(level)),
    sdNotify: addon.sdNotify?.bind(addon),
    reason: `native addon loaded from ${file}`,
  };
}
