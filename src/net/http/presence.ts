// GET /.mles/presence?channel=<ch>&uid=<uid>[&auth=<auth>] on the public port: who is joined to a
// channel now, as {"online": ["alice", ...]}, for the demo's member list. The Mles wire protocol
// stays as it is. Anyone may join a channel and read its join frames from history, so without
// MLES_KEY this tells nothing new; with MLES_KEY it answers only a caller whose auth would let it
// join as (uid, channel), so only those who could join can look. It is a cheap in-memory read
// behind the same request guard and per-IP connection limit as every other request.

import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Hub } from '../../hub/hub.js';
import { authHash } from '../../protocol/join.js';

export const PRESENCE_PATH = '/.mles/presence';

const ASCII = /^[\x00-\x7f]+$/;
const HEX = /^[0-9a-fA-F]{1,16}$/;

export interface PresenceOptions {
  hub: Pick<Hub, 'membersOf'>;
  /** MLES_KEY: when set, a caller must prove it as a join would. */
  key: string | undefined;
  /** Cluster mode: the hub knows only this server's members, so presence would be wrong. */
  clustered: boolean;
}

function sendJson(req: IncomingMessage, res: ServerResponse, status: number, value: unknown): void {
  const body = JSON.stringify(value) + '\n';
  res.writeHead(status, {
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': Buffer.byteLength(body),
    // Presence changes from one second to the next: no cache may answer for us.
    'Cache-Control': 'no-store',
    'X-Content-Type-Options': 'nosniff',
  });
  res.end(req.method === 'HEAD' ? undefined : body);
}

/** Compared as numbers, as a join compares them: case and leading zeros do not matter. */
function authValid(auth: string | null, uid: string, channel: string, key: string): boolean {
  return auth !== null && HEX.test(auth) && BigInt('0x' + auth) === BigInt('0x' + authHash(uid, channel, key));
}

export function presenceHandler(options: PresenceOptions): (req: IncomingMessage, res: ServerResponse, url: URL) => void {
  return (req, res, url) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('Allow', 'GET, HEAD');
      return sendJson(req, res, 405, { error: 'use GET' });
    }
    if (options.clustered) return sendJson(req, res, 501, { error: 'presence is not cluster-wide yet' });
    const channel = url.searchParams.get('channel');
    const uid = url.searchParams.get('uid');
    if (!channel || !uid || !ASCII.test(channel) || !ASCII.test(uid)) {
      return sendJson(req, res, 400, { error: 'channel and uid are required, as non-empty ASCII' });
    }
    if (options.key !== undefined && !authValid(url.searchParams.get('auth'), uid, channel, options.key)) {
      return sendJson(req, res, 403, { error: 'auth does not match this uid and channel' });
    }
    // Someone joined twice (two tabs, different auth) is one person online.
    const online = [...new Set(options.hub.membersOf(channel).map((member) => member.uid))];
    sendJson(req, res, 200, { online });
  };
}
