// Reading a server's Prometheus metrics from its admin listener (--admin-port 0).

import assert from 'node:assert/strict';
import { request } from './http.js';
import type { RunningServer } from './server.js';

/** The admin listener's URL, from the server's "admin listening" log line. */
export async function adminOf(server: RunningServer): Promise<URL> {
  await server.waitForLog('admin listening');
  const line = server.stderr().split('\n').find((l) => l.includes('admin listening'))!;
  return new URL((JSON.parse(line) as { url: string }).url);
}

export async function scrape(admin: URL): Promise<Map<string, number>> {
  const res = await request(Number(admin.port), '/metrics');
  assert.equal(res.status, 200);
  const values = new Map<string, number>();
  for (const line of res.text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    values.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return values;
}

/** Scrapes until every `expected` series has its value (the server acts on its own time). */
export async function waitForMetrics(admin: URL, expected: Record<string, number>, timeoutMs = 5_000): Promise<Map<string, number>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const values = await scrape(admin);
    const wrong = Object.entries(expected).filter(([name, value]) => (values.get(name) ?? 0) !== value);
    if (wrong.length === 0) return values;
    if (Date.now() > deadline) {
      assert.fail(`metrics not reached: ${wrong.map(([n, v]) => `${n}=${values.get(n)} (want ${v})`).join(', ')}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
