// Who is connected where: the channels of a scenario, their members, which members publish and
// probe, and which generator process holds each member.

import type { ChannelPlan, ClientPlan } from '../messages.js';

export interface Shape {
  channels: ChannelPlan[];
  clients: ClientPlan[];
  /** Generator index per client. */
  generatorOf: number[];
}

/** A small deterministic generator (mulberry32), so channel sizes are the same every run. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

class ShapeBuilder {
  readonly shape: Shape = { channels: [], clients: [], generatorOf: [] };
  private publishers = 0;

  /** Adds a channel of `members` (the first `publishing` of them publish, the first probes). */
  channel(name: string, members: number, publishing: number, generatorOf: (member: number) => number): void {
    const index = this.shape.channels.length;
    const plan: ChannelPlan = { name, members, publishers: [] };
    this.shape.channels.push(plan);
    for (let m = 0; m < members; m++) {
      const publisher = m < publishing ? this.publishers++ : -1;
      if (publisher >= 0) plan.publishers.push(publisher);
      this.shape.clients.push({ uid: `c${this.shape.clients.length}`, channel: index, publisher, prober: m === 0 });
      this.shape.generatorOf.push(generatorOf(m));
    }
  }
}

/** One channel: `publishers` publishers and `subscribers` listeners, spread over the generators. */
export function fanoutShape(subscribers: number, publishers: number, generators: number): Shape {
  const builder = new ShapeBuilder();
  builder.channel('fanout', publishers + subscribers, publishers, (m) => m % generators);
  return builder.shape;
}

/**
 * `channels` channels of 2 to 10 members (sizes drawn from `seed`), every member chatting. A
 * channel lives in one generator, so its flow control needs no other process.
 */
export function manyChannelsShape(channels: number, generators: number, seed: number): Shape {
  const random = seededRandom(seed);
  const builder = new ShapeBuilder();
  for (let c = 0; c < channels; c++) {
    const members = 2 + Math.floor(random() * 9);
    builder.channel(`chat-${c}`, members, members, () => c % generators);
  }
  return builder.shape;
}

/** `connections` listeners in channels of up to 10 (at least 2), whole channels per generator. */
export function idleShape(connections: number, generators: number): Shape {
  const builder = new ShapeBuilder();
  const channels = Math.max(1, Math.round(connections / 10));
  for (let c = 0; c < channels; c++) {
    const members = Math.floor(((c + 1) * connections) / channels) - Math.floor((c * connections) / channels);
    builder.channel(`idle-${c}`, members, 0, () => c % generators);
  }
  return builder.shape;
}
