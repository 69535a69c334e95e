// GET /.mles/presence?channel=<ch>&uid=<uid>[&auth=<auth>] on the public port: who is joined to a
// channel now, as {"online": ["alice", ...]}, for the demo's member list. The Mles wire protocol
// stays as it is. Anyone may join a channel and read its join frames from history, so without
// MLES_KEY this tells nothing new; with MLES_KEY it answers only a caller whose auth would let it
// join as (uid, channel), so only those who could join can look. It is a cheap read (in memory, or
// one Redis call on a cluster node) behind the same request guard and per-IP connection limit as every other request.

import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { Hub } from '../../hub/hub.js';
import { authMatches, isName } from '../../protocol/join.js';
import { sendJson } from './respond.js';

export const PRESENCE_PATH = '/.mles/presence';


export interface PresenceOptions {
  hub: Pick<Hub, 'online'>;
  /** MLES_KEY: when set, a caller must prove it as a join would. */
  key: string | undefined;
  log: Logger;
}



export function presenceHandler(options: PresenceOptions): (req: IncomingMessage, res: ServerResponse, url: URL) => void {
  return (req, res, url) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      return sendJson(res, 405, { error: 'use GET' }, { Allow: 'GET, HEAD' });
    }
    const channel = url.searchParams.get('channel');
    const uid = url.searchParams.get('uid');
    if (channel === null || uid === null || !isName(channel) || !isName(uid)) {
      return sendJson(res, 400, { error: 'channel and uid are required, as non-empty ASCII' });
    }
    if (options.key !== undefined && !authMatches(url.searchParams.get('auth') ?? '', uid, channel, options.key)) {
      return sendJson(res, 403, { error: 'auth does not match this uid and channel' });
    }
    options.hub.online(channel).then(
      // Someone joined twice (two tabs, different auth) is one person online.
      (uids) => sendJson(res, 200, { online: [...new Set(uids)] }),
      (error: unknown) => {
        options.log.warn({ err: error, channel }, 'presence unavailable');
        sendJson(res, 503, { error: 'presence unavailable' });
      },
    );
  };
}
