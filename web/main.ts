// The demo chat: join a channel with a name, see its history and who joined, chat live, and
// ride out server restarts, all through the client kit. The server is the page's own host,
// or `?server=ws://host:port`; `?channel=name` pre-fills the channel.

import { connect, type MlesClient } from '../client/index.js';
import { encodeChat, toEntry } from './entries.js';
import { View } from './view.js';

const params = new URLSearchParams(location.search);
const serverUrl = params.get('server') ?? `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/`;
const NAME_KEY = 'mles-demo-name';
// Mles requires uid and channel to be ASCII (spec section 2).
const ASCII = /^[\x20-\x7e]+$/;

const view = new View();
let client: MlesClient | undefined;

function join(uid: string, channel: string, key: string): void {
  view.showChat(uid, channel);
  view.setStatus('connecting', 'connecting…');
  const session = connect(serverUrl, { uid, channel, ...(key ? { key } : {}) });
  client = session;
  let joined = false;
  session.on('open', ({ reconnect }) => {
    view.setStatus('live', 'connected');
    if (reconnect) view.notice('reconnected');
  });
  session.on('message', (message) => view.add(toEntry(message)));
  session.on('historyDone', () => {
    if (!joined) view.notice(`you joined #${channel}`);
    joined = true;
  });
  session.on('close', (info) => {
    if (info.willReconnect) {
      view.setStatus('reconnecting', 'connection lost');
      return;
    }
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
