import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import type { Dataset } from './dataset';

/**
 * The IDX format (LeCun's MNIST files): two zero bytes, a type byte, a dimension count, one
 * big-endian uint32 per dimension, then the values row-major. Only type 0x08 (unsigned byte) is
 * supported, which covers MNIST, EMNIST and FEMNIST. Gzipped input (magic 1f 8b) is gunzipped first.
 */
export interface IdxArray {
  dims: number[];
  /** The values; a view into the (gunzipped) input, not a copy. */
  data: Uint8Array;
}

const IDX_TYPE_NAMES: Record<number, string> = { 0x08: 'uint8', 0x09: 'int8', 0x0b: 'int16', 0x0c: 'int32', 0x0d: 'float32', 0x0e: 'float64' };

export function isGzip(buf: Uint8Array): boolean {
  return buf.length >= 2 && buf[0] === 0x1f && buf[1] === 0x8b;
}

export function readIdx(buf: Uint8Array, source = 'IDX buffer'): IdxArray {
  let bytes = buf;
  if (isGzip(bytes)) {
    try {
      bytes = gunzipSync(bytes);
    } catch (err) {
      throw new Error(`${source}: gzip data is corrupt or truncated (${(err as Error).message})`);
    }
  }
  if (bytes.length < 4) throw new Error(`${source}: truncated IDX header (${bytes.length} bytes, need at least 4)`);
  if (bytes[0] !== 0 || bytes[1] !== 0) {
    const magic = Array.from(bytes.subarray(0, 4), (b) => b.toString(16).padStart(2, '0')).join(' ');
    throw new Error(`${source}: not an IDX file (magic ${magic}, expected 00 00 <type> <ndims>)`);
  }
  const type = bytes[2];
  if (type !== 0x08) {
    const name = IDX_TYPE_NAMES[type];
    throw new Error(`${source}: IDX element type 0x${type.toString(16).padStart(2, '0')}${name ? ` (${name})` : ' (invalid)'} is not supported; only 0x08 (uint8)`);
  }
  const ndims = bytes[3];
  if (ndims === 0) throw new Error(`${source}: IDX header declares 0 dimensions`);
  const headerBytes = 4 + 4 * ndims;
  if (bytes.length < headerBytes) throw new Error(`${source}: truncated IDX header (${bytes.length} bytes, need ${headerBytes} for ${ndims} dimensions)`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const dims: number[] = [];
  let size = 1;
  for (let d = 0; d < ndims; d++) {
    const dim = view.getUint32(4 + 4 * d, false);
    dims.push(dim);
    size *= dim;
  }
  const available = bytes.length - headerBytes;
  if (available < size) throw new Error(`${source}: truncated IDX data: dims [${dims.join(', ')}] need ${size} bytes, only ${available} present`);
  if (available > size) throw new Error(`${source}: ${available - size} unexpected trailing bytes after IDX data of dims [${dims.join(', ')}]`);
  return { dims, data: new Uint8Array(bytes.buffer, bytes.byteOffset + headerBytes, size) };
}

/** Reads an IDX file from disk (plain or gzipped). */
export function readIdxFile(file: string): IdxArray {
  return readIdx(readFileSync(file), file);
}

/**
 * Pairs an image IDX array (dims [n, rows, cols], or [n, features]) with a label IDX array (dims [n])
 * into a classification dataset, checking that counts agree and every label is below `classes`.
 */
export function datasetFromIdx(images: IdxArray, labels: IdxArray, classes: number, name: string): Dataset {
  if (images.dims.length < 2) throw new Error(`${name}: image IDX must have at least 2 dimensions, got [${images.dims.join(', ')}]`);
  if (labels.dims.length !== 1) throw new Error(`${name}: label IDX must have 1 dimension, got [${labels.dims.join(', ')}]`);
  const n = images.dims[0];
  if (labels.dims[0] !== n) throw new Error(`${name}: ${n} images but ${labels.dims[0]} labels`);
  const features = images.dims.slice(1).reduce((a, b) => a * b, 1);
  for (let i = 0; i < n; i++) {
    if (labels.data[i] >= classes) throw new Error(`${name}: label ${labels.data[i]} at row ${i} is not below ${classes} classes`);
  }
  return { n, features, classes, x: images.data, labels: labels.data, name };
}
