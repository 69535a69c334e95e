// The demo web app in headless Chromium, used like a person would: two people chat in one
// channel and see each other online, a third joins later and sees the history, the pages ride
// out a server restart, and one who leaves is shown as away to the others.
// The real server serves the freshly built app from public/. Screenshots go to test-output/.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { ROOT, startServer } from './helpers/server.js';
import { requirePrograms } from './helpers/programs.js';

const CHROMIUM = '/usr/bin/chromium';
const FLAGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const OUTPUT = path.join(ROOT, 'test-output');

async function buildDemo(): Promise<void> {
  const build = spawn(process.execPath, [path.join(ROOT, 'scripts/build-web.mjs')], { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit'] });
  const [code] = await once(build, 'exit');
  assert.equal(code, 0, 'the demo build failed');
}

interface Person {
  name: string;
  page: Page;
  errors: Error[];
}

async function openDemo(browser: Browser, url: string, name: string, viewport = { width: 1100, height: 720 }): Promise<Person> {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  const errors: Error[] = [];
  page.on('pageerror', (error) => errors.push(error));
  await page.goto(url);
  return { name, page, errors };
}

async function join({ page, name }: Person, channel: string): Promise<void> {
  await page.fill('#join-form input[name=uid]', name);
  await page.fill('#join-form input[name=channel]', channel);
  await page.click('#join-form button[type=submit]');
  await page.locator('#messages .notice', { hasText: `you joined #${channel}` }).waitFor();
  await page.locator('#status[data-state="live"]').waitFor();
}

async function say({ page }: Person, text: string): Promise<void> {
  await page.fill('#send-form input[name=text]', text);
  await page.press('#send-form input[name=text]', 'Enter');
}

/** Waits until the member list shows exactly `names` online (presence is polled every few seconds). */
async function online({ page }: Person, names: string[]): Promise<void> {
  await page.waitForFunction(
    (expected) => Array.from(document.querySelectorAll('#members li.online'), (li) => li.textContent).join() === expected,
    names.join(),
  );
}

function sees({ page }: Person, text: string): Promise<void> {
  return page.locator('#messages .message .text', { hasText: text }).waitFor();
}

async function screenshot({ page }: Person, name: string): Promise<void> {
  await page.screenshot({ path: path.join(OUTPUT, `browser-${name}.png`) });
}

test('the demo app: chat and presence between two pages, history for a later third, reconnect after a server restart, leaving', { timeout: 90_000 }, async (t) => {
  if (!requirePrograms(t, 'chromium', ['chromium'])) return;
  mkdirSync(OUTPUT, { recursive: true });
  await buildDemo();
  let server = await startServer();
  t.after(() => server.stop());
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: FLAGS });
  t.after(() => browser.close());
  const home = server.url.replace(/^ws/, 'http') + '/';

  const alice = await openDemo(browser, home, 'alice');
  const bob = await openDemo(browser, home, 'bob');
  await screenshot(alice, 'join');
  await join(alice, 'garden');
  await join(bob, 'garden');
  await online(alice, ['alice', 'bob']);
  await online(bob, ['bob', 'alice']);

  await say(alice, 'Hello from Alice');
  await sees(bob, 'Hello from Alice');
  await say(bob, 'Hi Alice, Bob here');
  await sees(alice, 'Hi Alice, Bob here');
  await say(alice, 'Shall we meet at noon?');
  await sees(bob, 'Shall we meet at noon?');
  assert.equal(await alice.page.locator('#messages .message.mine').count(), 2);
  await screenshot(alice, 'alice');
  await screenshot(bob, 'bob');

  // A later joiner gets the history, including who joined before her.
  const carol = await openDemo(browser, home + '?channel=garden', 'carol', { width: 390, height: 760 });
  await join(carol, 'garden');
  for (const text of ['Hello from Alice', 'Hi Alice, Bob here', 'Shall we meet at noon?']) await sees(carol, text);
  assert.deepEqual(await carol.page.locator('#messages .message .text').allTextContents(), [
    'Hello from Alice',
    'Hi Alice, Bob here',
    'Shall we meet at noon?',
  ]);
  assert.deepEqual(await carol.page.locator('#members li').allTextContents(), ['carol', 'alice', 'bob']);
  await carol.page.locator('#messages .notice', { hasText: 'bob joined' }).waitFor();
  await screenshot(carol, 'carol-mobile');

  // The server restarts on the same port: the pages reconnect on their own and chat on.
  await server.stop();
  await alice.page.locator('#status[data-state="reconnecting"]').waitFor();
  server = await startServer(['--port', String(server.port)]);
  for (const person of [alice, bob]) {
    await person.page.locator('#messages .notice', { hasText: 'reconnected' }).waitFor();
    await person.page.locator('#status[data-state="live"]').waitFor();
  }
  await say(alice, 'Still there after the restart?');
  await sees(bob, 'Still there after the restart?');
  await screenshot(bob, 'bob-after-restart');

  // Bob leaves: the others still see him in the history, but greyed, no longer online.
  await online(carol, ['carol', 'alice', 'bob']);
  await bob.page.click('#leave');
  await online(carol, ['carol', 'alice']);
  await online(alice, ['alice', 'carol']);
  await alice.page.locator('#members li.away', { hasText: 'bob' }).waitFor();
  await screenshot(carol, 'carol-after-bob-left');

  for (const person of [alice, bob, carol]) assert.deepEqual(person.errors, [], `${person.name}'s page threw`);
});
