// The demo chat: join a channel with a name, see its history, who is online and who was here,
// chat live, and ride out server restarts, all through the client kit. The server is the page's
// own host, or `?server=ws://host:port`; `?channel=name` pre-fills the channel.

import { authHash, connect, type MlesClient } from '../client/index.js';
import { encodeChat, toEntry } from './entries.js';
import { View } from './view.js';

const params = new URLSearchParams(location.search);
const serverUrl = params.get('server') ?? `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/`;
const NAME_KEY = 'mles-demo-name';
// Mles requires uid and channel to be ASCII (spec section 2).
const ASCII = /^[\x20-\x7e]+$/;
/** How often the member list asks who is online while joined: cheap for the server, fresh enough for a chat. */
const PRESENCE_EVERY_MS = 3_000;

const view = new View();
let client: MlesClient | undefined;

/**
 * Keeps the member list's "online" part current from the server's /.mles/presence (outside the
 * Mles protocol, so other clients see no change). A server that cannot answer (an older one, a
 * cluster) leaves the list as history shows it. Returns what refreshes at once, and the stop.
 */
function watchPresence(uid: string, channel: string, key: string): { refresh: () => void; stop: () => void } {
  const url = new URL('/.mles/presence', serverUrl.replace(/^ws/, 'http'));
  url.search = new URLSearchParams({ channel, uid, ...(key ? { auth: authHash(uid, channel, key) } : {}) }).toString();
  let stopped = false;
  const refresh = (): void => {
    fetch(url, { cache: 'no-store' })
      .then(async (res) => (res.ok ? ((await res.json()) as { online: string[] }).online : undefined))
      .catch(() => undefined)
      .then((online) => {
        if (!stopped) view.setOnline(online);
      });
  };
  const timer = setInterval(refresh, PRESENCE_EVERY_MS);
  return { refresh, stop: () => { stopped = true; clearInterval(timer); } };
}

function join(uid: string, channel: string, key: string): void {
  view.showChat(uid, channel);
  view.setStatus('connecting', 'connecting…');
  const session = connect(serverUrl, { uid, channel, ...(key ? { key } : {}) });
  client = session;
  const presence = watchPresence(uid, channel, key);
  let joined = false;
  session.on('open', ({ reconnect }) => {
    view.setStatus('live', 'connected');
    if (reconnect) view.notice('reconnected');
  });
  session.on('message', (message) => {
    const entry = toEntry(message);
    view.add(entry);
    // Someone joining now: ask at once rather than list them as away until the next poll.
    if (joined && entry.kind === 'join') presence.refresh();
  });
  session.on('historyDone', () => {
    if (!joined) view.notice(`you joined #${channel}`);
    joined = true;
    presence.refresh();
  });
  session.on('close', (info) => {
    if (info.willReconnect) {
      view.setStatus('reconnecting', 'connection lost');
      return;
    }
    presence.stop();
    if (client !== session) return;
    client = undefined;
    view.showJoin(info.refused ? `The server refused to join: ${info.reason || `code ${info.code}`}` : undefined);
  });
  session.on('reconnecting', ({ delayMs }) => view.setStatus('reconnecting', `reconnecting in ${Math.ceil(delayMs / 1000)} s…`));
}

view.joinForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const uid = view.field(view.joinForm, 'uid').value.trim();
  const channel = view.field(view.joinForm, 'channel').value.trim();
  const key = view.field(view.joinForm, 'key').value;
  if (!ASCII.test(uid) || !ASCII.test(channel)) {
    view.showJoin('Name and channel may use only plain ASCII letters, digits and punctuation.');
    return;
  }
  localStorage.setItem(NAME_KEY, uid);
  join(uid, channel, key);
});

view.sendForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const input = view.field(view.sendForm, 'text');
  const text = input.value.trim();
  if (!client || text === '') return;
  const time = Date.now();
  client.send(encodeChat(client.uid, text, time));
  view.add({ kind: 'chat', uid: client.uid, text, time });
  input.value = '';
});

view.leaveButton.addEventListener('click', () => {
  const session = client;
  client = undefined;
  void session?.close();
  view.showJoin();
});

view.field(view.joinForm, 'uid').value = localStorage.getItem(NAME_KEY) ?? '';
const channel = params.get('channel');
if (channel) view.field(view.joinForm, 'channel').value = channel;
view.showJoin();
