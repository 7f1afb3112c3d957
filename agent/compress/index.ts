/**
 * Gradient compression for model updates: blockwise int8/int4 quantization and top-k
 * sparsification in a self-describing format (FORMAT.md), with error feedback.
 *
 * Two backends produce identical bytes: the native addon (native/compress.cc, built at install)
 * and a pure-TypeScript fallback. FEDGATE_COMPRESS_BACKEND=typescript forces the fallback;
 * FEDGATE_COMPRESS_BACKEND=native makes a missing addon an error at import.
 */
import { active } from './codec';
import { readHeader } from './format';

export type { CodecName } from './format';
export { CorruptPayloadError, FORMAT_VERSION, maxIndexBytes } from './format';
export type { Bytes, Codec, CodecOptions, Floats } from './codec';
export {
  ASYNC_THRESHOLD, DEFAULT_BLOCK_SIZE, DEFAULT_K, backend, backendReason, codecOf, nativeCodec, typescriptCodec,
} from './codec';
export { ErrorFeedback, RESIDUAL_BOUND_FACTOR } from './error-feedback';
export { chooseCodec, codecLabel, payloadBytes, framedBytes, CODEC_LADDER, UNKNOWN_LINK_CODEC, DEFAULT_MAX_FRAME_BYTES, DEFAULT_FRAME_OVERHEAD_BYTES, type ChooseCodecInput, type CodecDecision } from './choose';

import type { Bytes, CodecOptions, Floats } from './codec';

export function encode(x: Float32Array, opts: CodecOptions): Bytes {
  return active.encode(x, opts);
}

export function encodeAsync(x: Float32Array, opts: CodecOptions): Promise<Bytes> {
  return active.encodeAsync(x, opts);
}

export function decode(bytes: Uint8Array): Floats {
  return active.decode(bytes);
}

/**
 * Number of values a payload decodes to, from its checked header, without decoding it. A receiver
 * compares this with the size it expects before decoding, so a forged header cannot make it
 * allocate gigabytes.
 */
export function decodedLength(bytes: Uint8Array): number {
  return readHeader(bytes).n;
}
