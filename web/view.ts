// The demo's DOM: which view shows, the status line, the message list and the members list.
// Everything received is inserted as text, never as HTML. The members list holds everyone seen
// in the channel (join frames and chat lines, history included); once the server has said who
// is online, those come first and the rest are greyed as "away".

import type { Entry } from './entries.js';

export type Status = 'offline' | 'connecting' | 'live' | 'reconnecting';

function byId<T extends HTMLElement>(id: string): T {
  const element = document.getElementById(id);
  if (!element) throw new Error(`#${id} missing from the page`);
  return element as T;
}

function element(tag: string, className: string, text?: string): HTMLElement {
  const node = document.createElement(tag);
  node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

const clock = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });

export class View {
  readonly joinForm = byId<HTMLFormElement>('join-form');
  readonly sendForm = byId<HTMLFormElement>('send-form');
  readonly leaveButton = byId<HTMLButtonElement>('leave');
  private readonly joinView = byId('join-view');
  private readonly chatView = byId('chat-view');
  private readonly joinError = byId('join-error');
  private readonly where = byId('where');
  private readonly status = byId('status');
  private readonly messages = byId('messages');
  private readonly members = byId('members');
  /** Everyone seen, in the order first seen. */
  private readonly memberNames = new Set<string>();
  /** Who the server last said is joined now; undefined until it has (or if it cannot say). */
  private online: ReadonlySet<string> | undefined;
  private self = '';

  showJoin(error?: string): void {
    this.chatView.hidden = true;
    this.where.hidden = true;
    this.joinView.hidden = false;
    this.joinError.hidden = error === undefined;
    this.joinError.textContent = error ?? '';
    this.setStatus('offline');
    this.field(this.joinForm, 'uid').focus();
  }

  showChat(uid: string, channel: string): void {
    this.self = uid;
    this.messages.replaceChildren();
    this.members.replaceChildren();
    this.memberNames.clear();
    this.online = undefined;
    this.addMember(uid);
    this.where.textContent = `#${channel} as ${uid}`;
    this.where.hidden = false;
    this.joinView.hidden = true;
    this.chatView.hidden = false;
    this.field(this.sendForm, 'text').focus();
  }

  setStatus(status: Status, text: string = status): void {
    this.status.dataset.state = status;
    this.status.textContent = text;
  }

  add(entry: Entry): void {
    if (entry.kind === 'join') {
      // Every session stores a join frame; a rejoin of someone already listed is not news.
      if (this.addMember(entry.uid)) this.notice(`${entry.uid} joined`);
      return;
    }
    const item = element('li', 'message');
    if (entry.kind === 'chat') {
      this.addMember(entry.uid);
      if (entry.uid === this.self) item.classList.add('mine');
      const meta = element('div', 'meta');
      meta.append(element('span', 'from', entry.uid), element('time', 'time', clock.format(entry.time)));
      item.append(meta, element('div', 'text', entry.text));
    } else {
      item.append(element('div', 'text', entry.text));
    }
    this.append(item);
  }

  /** Shows who is online now; undefined when presence is unknown (everyone seen is listed alike). */
  setOnline(uids: readonly string[] | undefined): void {
    this.online = uids && new Set(uids);
    for (const uid of uids ?? []) this.memberNames.add(uid);
    this.renderMembers();
  }

  notice(text: string): void {
    this.append(element('li', 'notice', text));
  }

  field(form: HTMLFormElement, name: string): HTMLInputElement {
    return form.elements.namedItem(name) as HTMLInputElement;
  }

  /** Lists `uid` unless it is there already; true if it was new. */
  private addMember(uid: string): boolean {
    if (this.memberNames.has(uid)) return false;
    this.memberNames.add(uid);
    this.renderMembers();
    return true;
  }

  private renderMembers(): void {
    const online = this.online;
    const names = [...this.memberNames];
    const here = (uid: string): boolean => online === undefined || online.has(uid);
    const items = [...names.filter(here), ...names.filter((uid) => !here(uid))].map((uid) => {
      const item = element('li', here(uid) ? (online ? 'online' : '') : 'away', uid);
      if (uid === this.self) item.classList.add('me');
      if (!here(uid)) item.title = 'not in the channel now';
      return item;
    });
    this.members.replaceChildren(...items);
  }

  private append(item: HTMLElement): void {
    const list = this.messages;
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    list.append(item);
    if (atBottom) list.scrollTop = list.scrollHeight;
  }
}
