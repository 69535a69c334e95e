// Peer links for every channel that has local users: opened when a channel gains its first
// user, closed when it loses its last (spec section 8, issue 5). On a cluster one node holds a
// channel's links at a time (src/link/link-claim.ts), and they move on when it lets go or dies.

import os from 'node:os';
import type { Logger } from 'pino';
import type { Hub } from '../hub/hub.js';
import { LinkClaim } from './link-claim.js';
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
  claim: LinkClaim;
  /** Links open, or undefined while another node holds them (or the claim is on its way). */
  links: PeerLink[] | undefined;
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
      const created: Linked = {
        claim: new LinkClaim(this.hub, channel, 'links', this.options.retryMs, () => (created.links = this.open(channel)), this.log),
        links: undefined,
      };
      this.channels.set(channel, created);
      created.claim.follow();
    } else if (users === 0 && linked) {
      this.channels.delete(channel);
      this.stop(linked);
    }
  }

  private open(channel: string): PeerLink[] {
    const { peers, retryMs: _retry, ...shared } = this.options;
    return peers.map((url) => new PeerLink(this.hub, { ...shared, url, channel }, this.log));
  }

  private stop(linked: Linked): void {
    for (const link of linked.links ?? []) link.close();
    linked.claim.release();
  }

  close(): void {
    this.closed = true;
    for (const linked of this.channels.values()) this.stop(linked);
    this.channels.clear();
  }
}
