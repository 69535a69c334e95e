// Prometheus metrics. The hot path only bumps plain-number counters (hub.stats, endpoint.stats,
// the HTTP router's stats); prom-client reads them in collect callbacks at scrape time, so a
// message never costs a metrics call.

import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { Hub } from '../hub/hub.js';
import type { EndpointStats } from './mles-endpoint.js';
import type { HttpRouter } from './http/router.js';
import type { MqttBridgeStats } from '../link/mqtt-bridge.js';

export interface MetricSources {
  hub: Hub;
  endpoint: { readonly stats: EndpointStats };
  http: HttpRouter;
  /** Present on a cluster node (--redis). */
  cluster?: { readonly connected: number; readonly outages: number; readonly catchUps: number; readonly refused: number };
  /** Present with --mqtt. */
  mqtt?: MqttBridgeStats | undefined;
}

/** A counter whose value is read from `value()` whenever it is scraped. */
function counterOf(registry: Registry, name: string, help: string, value: () => number): void {
  new Counter({
    name,
    help,
    registers: [registry],
    collect() {
      this.reset();
      this.inc(value());
    },
  });
}

/** A counter with one label, read from a Map of label value -> count. */
function labelledCounterOf(registry: Registry, name: string, help: string, label: string, values: () => Map<string | number, number>): void {
  new Counter({
    name,
    help,
    labelNames: [label],
    registers: [registry],
    collect() {
      this.reset();
      for (const [key, count] of values()) this.inc({ [label]: String(key) }, count);
    },
  });
}

function gaugeOf(registry: Registry, name: string, help: string, value: () => number | Promise<number>): void {
  new Gauge({
    name,
    help,
    registers: [registry],
    async collect() {
      try {
        this.set(await value());
      } catch {
        // Its source is away (Redis in an outage): keep the last value rather than fail every
        // metric; mles_cluster_connected says why.
      }
    },
  });
}

/** A registry with the server's metrics and the process's default ones (CPU, memory, event loop). */
export function createMetrics({ hub, endpoint, http, cluster, mqtt }: MetricSources): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const { stats } = endpoint;
  gaugeOf(registry, 'mles_connections_open', 'WebSocket connections open now', () => stats.connectionsOpen);
  counterOf(registry, 'mles_joins_total', 'Joins accepted', () => hub.stats.joins);
  labelledCounterOf(registry, 'mles_refusals_total', 'Connections refused, by reason', 'reason', () => stats.refusals);
  counterOf(registry, 'mles_messages_in_total', 'Messages received from members', () => hub.stats.messagesIn);
  counterOf(registry, 'mles_messages_out_total', 'Messages delivered to members by fan-out (history replays excluded)', () => hub.stats.deliveries);
  counterOf(registry, 'mles_bytes_in_total', 'WebSocket payload bytes received', () => stats.bytesIn);
  counterOf(registry, 'mles_bytes_out_total', 'WebSocket payload bytes sent, history replays included', () => stats.bytesOut);
  gaugeOf(registry, 'mles_channels', 'Channels with members or pending messages', () => hub.channelCount);
  gaugeOf(registry, 'mles_sessions', 'Sessions of the duplicate rule held on this node', () => hub.sessionCount);
  if (hub.store.countMessages) {
    const store = hub.store as Required<typeof hub.store>;
    gaugeOf(registry, 'mles_history_messages', 'Messages held in history, all channels', () => store.countMessages());
  }
  counterOf(registry, 'mles_slow_consumer_closes_total', 'Connections closed for reading too slowly', () => stats.slowConsumerCloses);
  counterOf(registry, 'mles_store_errors_total', 'History store failures', () => hub.stats.storeErrors);
  labelledCounterOf(registry, 'mles_http_requests_total', 'HTTP responses on the public port, by status', 'status', () => http.stats.responses);
  gaugeOf(registry, 'mles_compression_cache_bytes', 'Compressed bodies held in the compression cache', () => http.compressionCache.size);
  counterOf(registry, 'mles_compression_cache_hits_total', 'Compressed bodies served from the cache', () => http.compressionCache.stats.hits);
  if (cluster) {
    gaugeOf(registry, 'mles_cluster_connected', '1 while this node is part of the Redis cluster, 0 while it serves its members alone', () => cluster.connected);
    counterOf(registry, 'mles_cluster_outages_total', 'Times this node lost its Redis connection', () => cluster.outages);
    counterOf(registry, 'mles_cluster_catch_ups_total', 'Times this node found a gap in a channel\'s sequence and fetched what it missed', () => cluster.catchUps);
    counterOf(registry, 'mles_cluster_refused_total', 'Messages refused (sender closed with 1011) because what waited for Redis was at --max-buffered', () => cluster.refused);
  }
  if (mqtt) {
    gaugeOf(registry, 'mles_mqtt_connected', '1 while the MQTT bridge is connected to its broker and subscribed, else 0', () => mqtt.connected);
    counterOf(registry, 'mles_mqtt_outages_total', 'Times the MQTT bridge lost an established broker connection', () => mqtt.outages);
    counterOf(registry, 'mles_mqtt_messages_in_total', 'MQTT messages published into channels', () => mqtt.messagesIn);
    counterOf(registry, 'mles_mqtt_messages_out_total', 'Channel messages published to MQTT and acknowledged by the broker', () => mqtt.messagesOut);
    counterOf(registry, 'mles_mqtt_duplicates_total', 'Payloads not bridged because they already went one way or the other (echoes, loops)', () => mqtt.duplicates);
    labelledCounterOf(registry, 'mles_mqtt_dropped_total', 'Messages the MQTT bridge dropped, by reason', 'reason', () => mqtt.dropped);
    gaugeOf(registry, 'mles_mqtt_queued_messages', 'Channel messages waiting for the MQTT broker or its acknowledgement', () => mqtt.queued);
  }
  return registry;
}
