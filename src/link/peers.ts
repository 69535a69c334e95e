// Peer links for every channel that has local users: opened when a channel gains its first
// user, closed when it loses its last (spec section 8, issue 5). On a cluster one node holds a
// channel's links at a time (Hub.claimLinks); a node with users that does not hold them asks
// again now and then, so the links move on when their node's users leave or the node dies.

import os from 'node:os';
import type { Logger } from 'pino';
import type { Hub } from '../hub/hub.js';
import { PeerLink, type LinkOptions } from './peer-link.js';

export type PeerTuning = Pick<LinkOptions, 'replayQuietMs' | 'replayMaxMs' | 'backoffMinMs' | 'backoffMaxMs'>;

export const defaultPeerTuning: PeerTuning = {
  replayQuietMs: 250,
  replayMaxMs: 3_000,
  backoffMinMs: 200,
  backoffMaxMs: 30_000,
};

/** The uid a server uses on its peers unless --peer-uid says otherwise: host and port, ASCII. */
export function defaultPeerUid(port: number, hostname = os.hostname()): string {
  return `mles-peer-${hostname.replace(/[^A-Za-z0-9.-]/g, '_')}-${port}`;
}

export interface PeersOptions extends PeerTuning {
  peers: string[];
  uid: string;
  key: string | undefined;
  peerKey: string | undefined;
  maxBuffered: number;
  maxMessageSize: number;
  /** How often a node with users asks again for links another node holds. */
  retryMs: number;
}

interface Linked {
  /** Links open, or undefined while another node holds them (or the claim is on its way). */
  links: PeerLink[] | undefined;
  claiming: boolean;
  retry: NodeJS.Timeout | undefined;
}

export class PeerLinks {
  private readonly channels = new Map<string, Linked>();
  private closed = false;

  constructor(
    private readonly hub: Hub,
    private readonly options: PeersOptions,
    private readonly log: Logger,
  ) {}

  /** The hub's notice that a channel's count of local users changed. */
  usersChanged(channel: string, users: number): void {
    if (this.closed) return;
    const linked = this.channels.get(channel);
    if (users > 0 && !linked) {
      const created: Linked = { links: undefined, claiming: false, retry: undefined };
      this.channels.set(channel, created);
      this.claim(channel, created);
    } else if (users === 0 && linked) {
      this.channels.delete(channel);
      this.stop(channel, linked);
    }
  }

  private claim(channel: string, linked: Linked): void {
    linked.claiming = true;
    Promise.resolve(this.hub.claimLinks(channel)).then((won) => {
      linked.claiming = false;
      if (this.channels.get(channel) !== linked) {
        if (won) this.hub.releaseLinks(channel); // its users left meanwhile
        return;
      }
      if (won) return this.open(channel, linked);
      linked.retry = setTimeout(() => this.claim(channel, linked), this.options.retryMs);
      linked.retry.unref();
    }, (error: unknown) => this.log.warn({ err: error, channel }, 'peer links not claimed'));
  }

  private open(channel: string, linked: Linked): void {
    const { peers, retryMs: _retry, ...shared } = this.options;
    linked.links = peers.map((url) => new PeerLink(this.hub, { ...shared, url, channel }, this.log));
  }

  private stop(channel: string, linked: Linked): void {
    clearTimeout(linked.retry);
    if (!linked.links) return; // not held here; a claim on its way releases itself
    for (const link of linked.links) link.close();
    this.hub.releaseLinks(channel);
  }

  close(): void {
    this.closed = true;
    for (const [channel, linked] of this.channels) this.stop(channel, linked);
    this.channels.clear();
  }
}
