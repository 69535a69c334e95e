// Socket.IO 4 the way a chat is usually written with it: a `join` event puts the socket in a
// room (acknowledged once joined), and each `m` event goes to the others in the room with
// socket.to(room).emit. WebSocket transport only, as the clients use. Prints
// `listening on <url>` once it accepts connections.

import http from 'node:http';
import { Server } from 'socket.io';

const httpServer = http.createServer();
const io = new Server(httpServer, { serveClient: false, transports: ['websocket'] });

io.on('connection', (socket) => {
  let room: string | undefined;
  socket.on('join', (name: string, ack: () => void) => {
    room = name;
    void socket.join(name);
    ack();
  });
  socket.on('m', (data: unknown) => {
    if (room !== undefined) socket.to(room).emit('m', data);
  });
});

httpServer.listen(0, '127.0.0.1', () => {
  const { port } = httpServer.address() as { port: number };
  process.stdout.write(`listening on http://127.0.0.1:${port}\n`);
});
