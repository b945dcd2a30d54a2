// A jailed Node client. Node 20 ignores HTTPS_PROXY, so this does what proxy-aware
// Node tools do: CONNECT through the proxy named in HTTPS_PROXY, then TLS over that
// socket. The CA comes only from NODE_EXTRA_CA_CERTS (read by node at start-up).
// Usage: node nodefetch.js https://host:port/path
// Prints one JSON line: {"status", "headers", "body"} or {"error"}.
'use strict';
const http = require('http');
const tls = require('tls');

const target = new URL(process.argv[2]);
const proxy = new URL(process.env.HTTPS_PROXY);
const authority = `${target.hostname}:${target.port || 443}`;

function fail(err) {
  console.log(JSON.stringify({ error: String(err && err.message || err) }));
  process.exit(0);
}

const connect = http.request({
  host: proxy.hostname,
  port: proxy.port,
  method: 'CONNECT',
  path: authority,
  headers: { host: authority },
});
connect.on('error', fail);
connect.on('connect', (res, socket) => {
  if (res.statusCode !== 200) return fail(`CONNECT answered ${res.statusCode}`);
  const secure = tls.connect({ socket, servername: target.hostname }, () => {
    // http.request over the TLS socket we made: with createConnection and no agent,
    // node dials nothing itself. `lookup` is a tripwire: it must never be called, since
    // a test name resolved by the system would leak a DNS query.
    const req = http.request({
      host: target.hostname,
      port: target.port || 443,
      path: target.pathname + target.search,
      method: 'GET',
      createConnection: () => secure,
      lookup: () => fail('node tried to resolve a name itself'),
    }, (response) => {
      const chunks = [];
      response.on('data', (c) => chunks.push(c));
      response.on('end', () => {
        console.log(JSON.stringify({
          status: response.statusCode,
          headers: response.headers,
          body: Buffer.concat(chunks).toString(),
        }));
        secure.end();
      });
    });
    req.on('error', fail);
    req.end();
  });
  secure.on('error', fail);
});
connect.end();
