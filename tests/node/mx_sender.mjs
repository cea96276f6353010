// A small MX-walking sender, the way a Node.js service might send mail, with nothing but
// Node's own modules: DNS through node:dns's Resolver pointed at the sandbox's DNS server,
// SMTP over node:net. It does what RFC 5321 §5.1 asks and no more: MX records in
// preference order (the domain itself when there are none, nothing for a null MX), each
// host's addresses in turn; a refused or lost connection or a 4xx moves on to the next
// address; a 5xx bounces; nothing left to try defers.
import { Resolver } from 'node:dns/promises';
import net from 'node:net';

const TIMEOUT_MS = 5000;

export async function deliver({ dns, smtpPort, from, to, message }) {
  const resolver = new Resolver({ timeout: TIMEOUT_MS, tries: 1 });
  resolver.setServers([`${dns.host}:${dns.port}`]);
  const domain = to.slice(to.lastIndexOf('@') + 1);
  const log = [];
  const hosts = await mailHosts(resolver, domain);
  if (hosts.length === 0) {
    return { status: 'bounced', host: null, log: [`${domain} accepts no mail (null MX)`] };
  }
  for (const host of hosts) {
    for (const address of await resolver.resolve4(host)) {
      const reply = await smtpSend(address, smtpPort, { from, to, message }).catch((error) => ({
        code: 0,
        text: error.code || error.message,
      }));
      log.push(`${host}[${address}]: ${reply.code} ${reply.text}`.trim());
      if (reply.code >= 200 && reply.code < 300) {
        return { status: 'delivered', host, address, log };
      }
      if (reply.code >= 500) {
        return { status: 'bounced', host, address, log };
      }
    }
  }
  return { status: 'deferred', host: null, log };
}

async function mailHosts(resolver, domain) {
  let records;
  try {
    records = await resolver.resolveMx(domain);
  } catch (error) {
    if (error.code === 'ENODATA') {
      return [domain]; // no MX: the domain itself is the mail host (implicit MX)
    }
    throw error;
  }
  if (records.length === 1 && records[0].exchange === '') {
    return [];
  }
  return records.sort((a, b) => a.priority - b.priority).map((r) => r.exchange);
}

// One SMTP transaction; resolves with the reply that ended it: {code, text}.
function smtpSend(address, port, { from, to, message }) {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: address, port });
    socket.setEncoding('utf8');
    socket.setTimeout(TIMEOUT_MS, () => socket.destroy(new Error('timeout')));
    let buffer = '';
    let waiting = null;
    const replies = [];
    const finish = (reply) => {
      socket.end('QUIT\r\n');
      resolve(reply);
    };
    socket.on('error', reject);
    socket.on('close', () => {
      if (waiting) {
        reject(new Error('connection lost'));
      }
    });
    socket.on('data', (chunk) => {
      buffer += chunk;
      let end;
      while ((end = buffer.indexOf('\r\n')) >= 0) {
        const line = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        if (line.charAt(3) === '-') {
          continue; // a multi-line reply goes on
        }
        const reply = { code: Number(line.slice(0, 3)), text: line.slice(4) };
        if (waiting) {
          const step = waiting;
          waiting = null;
          step(reply);
        } else {
          replies.push(reply);
        }
      }
    });
    const next = () =>
      new Promise((done) => {
        if (replies.length) {
          done(replies.shift());
        } else {
          waiting = done;
        }
      });
    const say = (line) => {
      socket.write(line + '\r\n');
      return next();
    };
    (async () => {
      let reply = await next();
      if (reply.code !== 220) return finish(reply);
      reply = await say('EHLO node-sender.example.net');
      if (reply.code !== 250) return finish(reply);
      reply = await say(`MAIL FROM:<${from}>`);
      if (reply.code !== 250) return finish(reply);
      reply = await say(`RCPT TO:<${to}>`);
      if (reply.code !== 250) return finish(reply);
      reply = await say('DATA');
      if (reply.code !== 354) return finish(reply);
      const body = message.replace(/\r?\n/g, '\r\n').replace(/^\./gm, '..');
      reply = await say(body + (body.endsWith('\r\n') ? '' : '\r\n') + '.');
      return finish(reply);
    })().catch(reject);
  });
}
