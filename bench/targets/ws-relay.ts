// The floor people compare against: a bare relay written with `ws`. A client's room is its URL
// path; every message goes to every other member of the room, nothing else (no join frame, no
// history, no limits). Prints `listening on <url>` once it accepts connections. With
// BENCH_TLS_CERT and BENCH_TLS_KEY (PEM files) it serves wss:// from Node's https server.

import fs from 'node:fs';
import https from 'node:https';
import { WebSocketServer, type WebSocket } from 'ws';

const rooms = new Map<string, Set<WebSocket>>();
const certFile = process.env.BENCH_TLS_CERT;
const keyFile = process.env.BENCH_TLS_KEY;
const server = certFile && keyFile ? https.createServer({ cert: fs.readFileSync(certFile), key: fs.readFileSync(keyFile) }) : undefined;
const wss = server
  ? new WebSocketServer({ server, perMessageDeflate: false, clientTracking: false })
  : new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false, clientTracking: false });

wss.on('connection', (ws, req) => {
  const name = req.url ?? '/';
  let room = rooms.get(name);
  if (!room) rooms.set(name, (room = new Set()));
  const members = room;
  members.add(ws);
  ws.on('message', (data: Buffer, isBinary: boolean) => {
    for (const other of members) if (other !== ws) other.send(data, { binary: isBinary });
  });
  ws.on('close', () => {
    members.delete(ws);
    if (members.size === 0) rooms.delete(name);
  });
  ws.on('error', () => ws.terminate());
});

if (server) {
  server.listen(0, '127.0.0.1', () => {
    const { port } = server.address() as { port: number };
    process.stdout.write(`listening on wss://127.0.0.1:${port}\n`);
  });
} else {
  wss.on('listening', () => {
    const { port } = wss.address() as { port: number };
    process.stdout.write(`listening on ws://127.0.0.1:${port}\n`);
  });
}
