// Peer links for every channel that has local users: opened when a channel gains its first
// user, closed when it loses its last (spec section 8, issue 5).

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
}

export class PeerLinks {
  private readonly links = new Map<string, PeerLink[]>();
  private closed = false;

  constructor(
    private readonly hub: Hub,
    private readonly options: PeersOptions,
    private readonly log: Logger,
  ) {}

  /** The hub's notice that a channel's count of local users changed. */
  usersChanged(channel: string, users: number): void {
    if (this.closed) return;
    const links = this.links.get(channel);
    if (users > 0 && !links) {
      const { peers, ...shared } = this.options;
      this.links.set(channel, peers.map((url) => new PeerLink(this.hub, { ...shared, url, channel }, this.log)));
    } else if (users === 0 && links) {
      this.links.delete(channel);
      for (const link of links) link.close();
    }
  }

  close(): void {
    this.closed = true;
    for (const links of this.links.values()) for (const link of links) link.close();
    this.links.clear();
  }
}
