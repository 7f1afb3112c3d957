export { Topics, validateNodeId, validateTopicLevel, assertPublishTopic, MAX_ID_LENGTH } from './topics';
export { FrameKind, FrameError, encodeFrames, decodeFrame, Reassembler, FRAME_HEADER_BYTES } from './frame';
export type { Frame, FrameMeta, Reassembled, ReassemblerOptions } from './frame';
export { MqttLink, topicMatches, publishPacketBytes, backoffDelay, DEFAULT_MAX_PACKET_BYTES, DEFAULT_BACKOFF } from './link';
export type { LinkOptions, MessageHandler, PublishOptions, BackoffOptions } from './link';
export * from './messages';
export { loadTls, permanentTlsFailure, type TlsSettings, type TlsMaterial } from './tls';
