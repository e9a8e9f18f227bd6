// Preload (node --require) that pins net.Server#listen(port) to 127.0.0.1.
// server-everything has no host option and calls app.listen(PORT), which binds
// every interface; tests must only ever listen on loopback.
'use strict';
const net = require('net');
const orig = net.Server.prototype.listen;
net.Server.prototype.listen = function (...a) {
  if (a.length === 0 || typeof a[0] === 'function' || a[0] === undefined || a[0] === null) {
    a.splice(0, a[0] === undefined || a[0] === null ? 1 : 0, 0, '127.0.0.1');
  } else if ((typeof a[0] === 'number' || /^\d+$/.test(String(a[0]))) &&
      (a.length === 1 || typeof a[1] === 'function')) {
    a.splice(1, 0, '127.0.0.1');
  } else if (a[0] && typeof a[0] === 'object' && 'port' in a[0] && !a[0].host) {
    a[0] = Object.assign({}, a[0], { host: '127.0.0.1' });
  }
  return orig.apply(this, a);
};
