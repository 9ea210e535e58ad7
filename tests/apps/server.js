// A dependency-free HTTP server for drove's tests and examples.
// Listens on $HOST (default all interfaces) port $PORT0 (or $PORT, or 3000). GET /health answers 200, or 500 when UNHEALTHY=1.
// GET /headers answers the request's headers, one `name: value` per line.
// Every other path answers "<MESSAGE> <instance>\n" (after ?delay_ms=N): its task id under drove
// (each container's own pid is 2), else its pid. A WebSocket upgrade is
// accepted and the connection held open (frames are ignored) until the client closes it.
// On SIGTERM it stops accepting connections, finishes the requests in flight and exits.
'use strict';
const http = require('http');

const port = Number(process.env.PORT0 || process.env.PORT || 3000);
const message = process.env.MESSAGE || 'hello';
const unhealthy = process.env.UNHEALTHY === '1';
const instance = process.env.MESOS_TASK_ID || String(process.pid);

const server = http.createServer((req, res) => {
  if (req.url === '/health') {
    res.writeHead(unhealthy ? 500 : 200, { 'Content-Type': 'text/plain' });
    res.end(unhealthy ? 'unhealthy\n' : 'ok\n');
    return;
  }
  if (req.url === '/headers') {
    res.writeHead(200, { 'Content-Type': 'text/plain' });
    res.end(Object.entries(req.headers).map(([k, v]) => `${k}: ${v}`).join('\n') + '\n');
    return;
  }
  const delay = Number(new URL(req.url, 'http://x').searchParams.get('delay_ms') || 0);
  setTimeout(() => {
    res.writeHead(200, { 'Content-Type': 'text/plain' });
    res.end(`${message} ${instance}\n`);
  }, delay);
});

server.on('upgrade', (req, socket) => {
  const key = req.headers['sec-websocket-key'] || '';
  const accept = require('crypto')
    .createHash('sha1')
    .update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11')
    .digest('base64');
  socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n' +
    `Connection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
  socket.on('data', () => {});
  socket.on('error', () => {});
});

server.keepAliveTimeout = 5000;
server.listen(port, process.env.HOST || '0.0.0.0', () => {
  console.log(`listening on ${port}`);
});

process.on('SIGTERM', () => {
  console.log('SIGTERM: draining');
  server.close(() => process.exit(0));
  server.closeIdleConnections && server.closeIdleConnections();
  setTimeout(() => process.exit(0), 10000).unref();
});
