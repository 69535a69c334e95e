// Channel names and MQTT topics (docs/mqtt.md): channel C is topic <prefix>C, and topic
// <prefix>C is channel C, so the mapping is the same both ways. A `/` in a channel name
// becomes a topic level separator (channel "home/kitchen" is topic "mles/home/kitchen").

import { isName } from '../protocol/join.js';

/** MQTT topics are at most 65 535 bytes of UTF-8 (a length-prefixed string). */
const MAX_TOPIC_BYTES = 65_535;

/** The topic of `channel` under `prefix`, or why the channel cannot be bridged. */
export function topicFor(prefix: string, channel: string): { topic: string } | { refused: string } {
  if (/[+#]/.test(channel)) return { refused: 'a topic name cannot contain the wildcards + or #' };
  if (channel.includes('\0')) return { refused: 'a topic name cannot contain NUL' };
  // Only a topic's first character makes it a broker topic ($SYS), but a name bridges the same
  // way whatever the prefix, and `$`-levels are the broker's convention, not data.
  if (channel.startsWith('$')) return { refused: 'a channel name starting with $ is not bridged (the broker\'s own topics start with $)' };
  const topic = prefix + channel;
  if (Buffer.byteLength(topic) > MAX_TOPIC_BYTES) return { refused: `the topic would be longer than ${MAX_TOPIC_BYTES} bytes` };
  return { topic };
}

/**
 * The channel of a topic the bridge's subscription `<prefix>#` delivered, or why it is not
 * bridged. (`#` also matches the parent level: with prefix "mles/" the topic "mles" arrives.)
 */
export function channelFor(prefix: string, topic: string): { channel: string } | { refused: string } {
  if (!topic.startsWith(prefix)) return { refused: 'outside the prefix' };
  const channel = topic.slice(prefix.length);
  if (channel === '') return { refused: 'the prefix alone names no channel' };
  if (!isName(channel)) return { refused: 'Mles channel names are ASCII' };
  const back = topicFor(prefix, channel);
  return 'refused' in back ? back : { channel };
}

/** The subscription that covers every bridged channel. */
export function subscriptionFor(prefix: string): string {
  return `${prefix}#`;
}
