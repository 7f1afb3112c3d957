import { describe, expect, it } from 'vitest';
import { crc32 } from 'node:zlib';
import {
  Topics, validateNodeId, assertPublishTopic, encodeFrames, decodeFrame, Reassembler, FrameKind, FrameError,
  FRAME_HEADER_BYTES, topicMatches, publishPacketBytes, parseTask, parseUpdateMeta, MessageError,
} from '../agent/transport';

describe('node ids and topics', () => {
  it.each([
    ['gw-01', true], ['a', true], ['x'.repeat(64), true],
    ['', 'must not be empty'], ['a+b', 'contains "+"'], ['a#', 'contains "#"'], ['a/b', 'contains "/"'],
    ['$SYS', 'starts with "$"'], ['x'.repeat(65), 'at most 64'], ['a b', 'white space'], ['a\u0000', 'NUL'],
  ])('%j', (id, want) => {
    if (want === true) expect(validateNodeId(id)).toBe(id);
    else expect(() => validateNodeId(id)).toThrow(want as string);
  });

  it('refuses non-strings with a TypeError', () => {
    expect(() => validateNodeId(42)).toThrow(TypeError);
  });

  it('builds the documented scheme and parses it back', () => {
    const t = new Topics('fedgate', 'plant-7');
    expect(t.nodeState('gw-1')).toBe('fedgate/plant-7/node/gw-1/state');
    expect(t.nodeTask('gw-1')).toBe('fedgate/plant-7/node/gw-1/task');
    expect(t.nodeUpdate('gw-1')).toBe('fedgate/plant-7/node/gw-1/update');
    expect(t.aggregatorState).toBe('fedgate/plant-7/aggregator/state');
    expect(t.allNodes('update')).toBe('fedgate/plant-7/node/+/update');
    expect(t.parseNodeTopic('fedgate/plant-7/node/gw-1/update')).toEqual({ id: 'gw-1', leaf: 'update' });
    expect(t.parseNodeTopic('fedgate/other/node/gw-1/update')).toBeUndefined();
    expect(() => t.nodeTask('gw/1')).toThrow('contains "/"');
    expect(() => new Topics('fedgate', 'a+b')).toThrow('fleet name');
  });

  it('refuses to publish to wildcard topics', () => {
    expect(() => assertPublishTopic('a/+/b')).toThrow('wildcards');
    expect(() => assertPublishTopic('a/#')).toThrow('wildcards');
    expect(() => assertPublishTopic('')).toThrow('empty');
  });

  it('matches subscription filters as MQTT does', () => {
    expect(topicMatches('a/+/c', 'a/b/c')).toBe(true);
    expect(topicMatches('a/+/c', 'a/b/d')).toBe(false);
    expect(topicMatches('a/#', 'a')).toBe(true);
    expect(topicMatches('a/#', 'a/b/c')).toBe(true);
    expect(topicMatches('#', '$SYS/x')).toBe(false);
    expect(topicMatches('+/x', '$SYS/x')).toBe(false);
    expect(topicMatches('a/b', 'a/b/c')).toBe(false);
  });

  it('computes the MQTT PUBLISH packet size', () => {
    // 1 fixed header byte + 1 length byte + (2 + 3 topic) + 2 packet id + 10 payload = 19
    expect(publishPacketBytes('a/b', 10, 1)).toBe(19);
    expect(publishPacketBytes('a/b', 10, 0)).toBe(17);
    // remaining length 200 needs two length bytes
    expect(publishPacketBytes('a/b', 193, 0)).toBe(1 + 2 + 5 + 193);
  });
});

function bytes(n: number, seed = 1): Uint8Array {
  const out = new Uint8Array(n);
  let s = seed;
  for (let i = 0; i < n; i++) out[i] = (s = (s * 1103515245 + 12345) >>> 0) >>> 24;
  return out;
}

describe('frames and chunking', () => {
  it('round-trips a small payload in one frame with exact sizes', () => {
    const payload = bytes(1000);
    const meta = { round: 3, node: 'gw-1' };
    const frames = encodeFrames(FrameKind.Update, meta, payload, 64 * 1024, 77);
    expect(frames).toHaveLength(1);
    expect(frames[0].length).toBe(FRAME_HEADER_BYTES + JSON.stringify(meta).length + 1000);
    const f = decodeFrame(frames[0]);
    expect(f).toMatchObject({ kind: FrameKind.Update, meta, transferId: 77, totalLength: 1000, offset: 0, index: 0, count: 1, payloadCrc: crc32(payload) });
    expect(Buffer.from(f.chunk).equals(Buffer.from(payload))).toBe(true);
  });

  it('splits above the frame limit and reassembles in any order, ignoring duplicates', () => {
    const payload = bytes(10_000, 9);
    const frames = encodeFrames(FrameKind.Task, { r: 1 }, payload, 1000);
    const room = 1000 - FRAME_HEADER_BYTES - JSON.stringify({ r: 1 }).length;
    expect(frames).toHaveLength(Math.ceil(10_000 / room));
    for (const f of frames) expect(f.length).toBeLessThanOrEqual(1000);
    const r = new Reassembler();
    const order = frames.map((_, i) => i).reverse();
    let out;
    for (const i of order) {
      expect(out).toBeUndefined();
      out = r.push('gw-1', frames[i]);
      if (i === order[0]) expect(r.push('gw-1', frames[i])).toBeUndefined(); // a redelivered chunk is ignored
    }
    expect(out?.kind).toBe(FrameKind.Task);
    expect(out?.meta).toEqual({ r: 1 });
    expect(Buffer.from(out!.payload).equals(Buffer.from(payload))).toBe(true);
    expect(out!.wireBytes).toBe(frames.reduce((s, f) => s + f.length, 0));
    expect(r.pendingCount).toBe(0);
  });

  it('keeps transfers from different sources apart', () => {
    const a = encodeFrames(FrameKind.Update, {}, bytes(3000, 1), 1000, 5);
    const b = encodeFrames(FrameKind.Update, {}, bytes(3000, 2), 1000, 5);
    const r = new Reassembler();
    a.slice(0, -1).forEach((f) => r.push('a', f));
    b.slice(0, -1).forEach((f) => r.push('b', f));
    expect(r.pendingCount).toBe(2);
    expect(Buffer.from(r.push('b', b[b.length - 1])!.payload).equals(Buffer.from(bytes(3000, 2)))).toBe(true);
    expect(Buffer.from(r.push('a', a[a.length - 1])!.payload).equals(Buffer.from(bytes(3000, 1)))).toBe(true);
  });

  it('detects corruption, truncation and foreign data', () => {
    const [frame] = encodeFrames(FrameKind.Update, { a: 1 }, bytes(100), 4096);
    const flipped = Buffer.from(frame);
    flipped[frame.length - 1] ^= 1;
    expect(() => decodeFrame(flipped)).toThrow('checksum mismatch');
    expect(() => decodeFrame(frame.subarray(0, 20))).toThrow('shorter than');
    expect(() => decodeFrame(Buffer.from('{"json": true, "not": "a frame", "padding": 1234567}'))).toThrow('bad magic');
    const v2 = Buffer.from(frame);
    v2[4] = 2;
    expect(() => decodeFrame(v2)).toThrow('version 2');
  });

  it('drops stale partial transfers after the timeout', () => {
    let now = 0;
    const r = new Reassembler({ timeoutMs: 1000, now: () => now });
    const frames = encodeFrames(FrameKind.Update, {}, bytes(3000), 1000);
    r.push('a', frames[0]);
    expect(r.pendingCount).toBe(1);
    now = 5000;
    r.push('b', encodeFrames(FrameKind.Update, {}, bytes(3000), 1000)[0]);
    expect(r.pendingCount).toBe(1);
  });

  it('refuses payloads above the limit and frame limits too small for the header', () => {
    const r = new Reassembler({ maxPayloadBytes: 100 });
    expect(() => r.push('a', encodeFrames(FrameKind.Update, {}, bytes(101), 4096)[0])).toThrow(FrameError);
    expect(() => encodeFrames(FrameKind.Update, { long: 'x'.repeat(100) }, bytes(10), 100)).toThrow('no room');
  });
});

describe('protocol messages', () => {
  const task = { round: 1, taskId: 't1', spec: {}, steps: 10, batchSize: 32, lr: 0.1, deadlineSeconds: 30, codec: { codec: 'int8' }, seed: 3, paramCount: 100 };

  it('accepts a valid task', () => {
    expect(parseTask(task)).toEqual(task);
  });

  it('names the bad field', () => {
    expect(() => parseTask({ ...task, lr: -1 })).toThrow('/lr must be > 0');
    expect(() => parseTask({ ...task, codec: { codec: 'zip' } })).toThrow('/codec/codec must be equal to one of the allowed values');
    expect(() => parseTask({ ...task, round: 1.5 })).toThrow('/round must be integer');
    const { steps: _s, ...noSteps } = task;
    expect(() => parseTask(noSteps)).toThrow("must have required property 'steps'");
    expect(() => parseUpdateMeta({})).toThrow(MessageError);
  });
});
