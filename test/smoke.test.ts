import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer } from './helpers/server.js';
import { TestClient } from './helpers/client.js';

test('two members exchange messages (spec 3)', async () => {
  const server = await startServer();
  try {
    const alice = await TestClient.join(server.url, 'alice', 'smoke');
    alice.send('hello');
    const bob = await TestClient.join(server.url, 'bob', 'smoke');
    const [join, hello] = await bob.waitFor(2);
    assert.equal(JSON.parse(join!.text).uid, 'alice');
    assert.equal(hello!.text, 'hello');
    bob.send('hi');
    const got = await alice.waitFor(1);
    assert.equal(got[0]!.text, 'hi');
    await alice.close();
    await bob.close();
  } finally {
    assert.equal(await server.stop(), 0);
  }
});
