// Preload (node --require bench/node_loopback.cjs ...) for Node peers whose CLI has no
// host option (Portkey's start-server.js calls serve({port}) and so listens on every
// interface): any listen() without an explicit host binds to BIND_HOST (127.0.0.1).
// Runs once per listen() call, so it costs nothing per request.
'use strict';
const net = require('net');
const HOST = process.env.BIND_HOST || '127.0.0.1';
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  const a0 = args[0];
  if (typeof a0 === 'number' || (typeof a0 === 'string' && /^\d+$/.test(a0))) {
    if (args.length > 1 && (args[1] === undefined || args[1] === null)) {
      args[1] = HOST;                       // listen(port, undefined, cb)  (hono node-server)
    } else if (typeof args[1] !== 'string') {
      args.splice(1, 0, HOST);              // listen(port[, backlog][, cb])
    }
  } else if (a0 && typeof a0 === 'object' && a0.port !== undefined && !a0.host && !a0.path) {
    args[0] = Object.assign({}, a0, { host: HOST });
  }
  return listen.apply(this, args);
};
