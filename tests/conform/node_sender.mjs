// A small mail sender in Node.js, written the way a user would write one, for
// `mxsandbox conform --sender-cmd`. Only Node's own modules: dns.promises.Resolver (pointed
// at one DNS server with setServers) and net.
//
//   node node_sender.mjs --dns HOST:PORT --smtp-port N --from ADDR --to A[,B] \
//       --message-file FILE [--self ADDR] [--timeout MS] \
//       [--queue --retry-interval MS --give-up MS] [--break MISTAKE …]
//
// Exit codes follow sendmail's convention: 0 delivered, 75 deferred, 69 failed, 2 usage.
//
// It walks the MX records in preference order (equal preferences shuffled), every address
// of every host, and moves on after a connection failure or a 4xx; a 5xx fails the
// recipients it names. It discards itself and worse from the MX list (--self). With --queue
// it keeps the message and retries every --retry-interval until --give-up.
//
// --break MISTAKE makes it wrong on purpose, so that the suite's tests can show that each
// mistake is caught: mx-order, no-failover-4xx, failover-5xx, implicit-mx-on-nxdomain,
// ignore-null-mx, no-retry, first-address-only, no-shuffle, servfail-bounces,
// dot-lost-delivered, no-self-check, mx-address-fallback, retry-too-soon, ignore-size,
// ignore-smtputf8, rcpt-5xx-fails-all, unresolved-mx-bounces, no-implicit-mx, nxdomain-defers,
// cname-not-followed, unreachable-bounces.
//
// It reads the host's EHLO reply: a message larger than its SIZE is not sent (RFC 1870), and
// an address that is not ASCII goes only to a host that offers SMTPUTF8 (RFC 6531), with
// SMTPUTF8 on MAIL FROM; otherwise those recipients fail.

import { promises as dnsPromises } from 'node:dns';
import { readFileSync } from 'node:fs';
import net from 'node:net';

const EXIT_OK = 0;
const EXIT_FAILED = 69;
const EXIT_DEFERRED = 75;
const EXIT_USAGE = 2;

function parseArgs(argv) {
  const options = {
    timeout: 3000, retryInterval: 18000, giveUp: 3888000, queue: false, breaks: new Set(),
  };
  const names = {
    '--dns': 'dns', '--smtp-port': 'smtpPort', '--from': 'from', '--to': 'to',
    '--message-file': 'messageFile', '--self': 'self', '--timeout': 'timeout',
    '--retry-interval': 'retryInterval', '--give-up': 'giveUp',
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--queue') options.queue = true;
    else if (arg === '--break') options.breaks.add(argv[++i]);
    else if (names[arg]) options[names[arg]] = argv[++i];
    else throw new Error(`unknown argument ${arg}`);
  }
  for (const key of ['dns', 'smtpPort', 'from', 'to', 'messageFile']) {
    if (options[key] === undefined) throw new Error(`missing --${key}`);
  }
  for (const key of ['timeout', 'retryInterval', 'giveUp', 'smtpPort']) {
    options[key] = Number(options[key]);
  }
  options.recipients = options.to.split(',').filter(Boolean);
  if (options.self === '127.0.0.1') options.self = undefined; // none of the MX hosts
  return options;
}

function log(text) {
  process.stderr.write(`node-sender: ${text}\n`);
}

function shuffle(items) {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [items[i], items[j]] = [items[j], items[i]];
  }
  return items;
}

// --- DNS: from a domain to the hosts to try ------------------------------------------------

class Permanent extends Error {}
class Temporary extends Error {}

async function route(resolver, domain, options) {
  const broken = options.breaks;
  let records;
  try {
    records = await resolver.resolveMx(domain);
  } catch (error) {
    if (error.code === 'ENODATA') records = [];
    else if (error.code === 'ENOTFOUND' && !broken.has('nxdomain-defers')) {
      if (!broken.has('implicit-mx-on-nxdomain')) throw new Permanent(`${domain}: no such domain`);
      records = [];
    } else if (broken.has('servfail-bounces')) throw new Permanent(`${domain}: ${error.code}`);
    else throw new Temporary(`MX ${domain}: ${error.code}`);
  }
  const nullMx = records.some((r) => r.exchange === '' || r.exchange === '.');
  if (nullMx && !broken.has('ignore-null-mx')) {
    throw new Permanent(`${domain} does not accept mail (null MX)`);
  }
  records = records.filter((r) => r.exchange !== '' && r.exchange !== '.');
  if (broken.has('cname-not-followed')) {
    // Keeps only the MX records owned by the name it asked for, as a hand-made DNS parser
    // does: those of an alias's target are dropped.
    const alias = await resolver.resolveCname(domain).catch(() => []);
    if (alias.length > 0) records = [];
  }
  let hosts;
  if (records.length === 0) {
    if (broken.has('no-implicit-mx')) throw new Permanent(`${domain} has no MX records`);
    hosts = [{ preference: 0, name: domain }];
    log(`no MX records for ${domain}: implicit MX`);
  } else {
    const byPreference = new Map();
    for (const r of records) {
      if (!byPreference.has(r.priority)) byPreference.set(r.priority, []);
      byPreference.get(r.priority).push(r.exchange);
    }
    const preferences = [...byPreference.keys()].sort((a, b) => a - b);
    if (broken.has('mx-order')) preferences.reverse();
    hosts = [];
    for (const p of preferences) {
      const group = byPreference.get(p);
      if (!broken.has('no-shuffle')) shuffle(group);
      for (const name of group) hosts.push({ preference: p, name });
    }
  }
  for (const host of hosts) host.addresses = await addresses(resolver, host.name);
  const unresolved = hosts.find((h) => h.addresses.length === 0);
  if (unresolved && broken.has('unresolved-mx-bounces')) {
    throw new Permanent(`${unresolved.name}: host not found`);
  }
  if (options.self && !broken.has('no-self-check')) {
    const mine = hosts.filter((h) => h.addresses.includes(options.self));
    if (mine.length > 0) {
      const own = Math.min(...mine.map((h) => h.preference));
      hosts = hosts.filter((h) => h.preference < own);
      if (hosts.length === 0) throw new Permanent(`mail for ${domain} loops back to myself`);
    }
  }
  const usable = hosts.filter((h) => h.addresses.length > 0);
  if (usable.length === 0 && records.length > 0) {
    if (broken.has('mx-address-fallback')) {
      const own = await addresses(resolver, domain);
      return [{ preference: 0, name: domain, addresses: own }];
    }
    throw new Permanent(`no MX host of ${domain} has an address`);
  }
  return usable;
}

async function addresses(resolver, name) {
  if (net.isIP(name)) return [name];
  try {
    return await resolver.resolve4(name);
  } catch (error) {
    if (error.code === 'ENODATA' || error.code === 'ENOTFOUND') return [];
    throw new Temporary(`A ${name}: ${error.code}`);
  }
}

// --- SMTP: one session --------------------------------------------------------------------

class Session {
  constructor(socket, timeout) {
    this.socket = socket;
    this.timeout = timeout;
    this.buffer = '';
    this.waiters = [];
    this.closed = false;
    socket.setEncoding('latin1');
    socket.on('data', (chunk) => { this.buffer += chunk; this.wake(); });
    socket.on('close', () => { this.closed = true; this.wake(); });
    socket.on('error', () => { this.closed = true; this.wake(); });
  }

  wake() {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  // The next reply: [code, text], or null when the connection is lost or times out.
  async reply() {
    const deadline = Date.now() + this.timeout;
    const lines = [];
    for (;;) {
      const end = this.buffer.indexOf('\n');
      if (end >= 0) {
        const line = this.buffer.slice(0, end).replace(/\r$/, '');
        this.buffer = this.buffer.slice(end + 1);
        lines.push(line);
        if (line.length < 4 || line[3] !== '-') return [Number(line.slice(0, 3)), lines.join(' | ')];
        continue;
      }
      if (this.closed) return null;
      const left = deadline - Date.now();
      if (left <= 0) return null;
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => { clearTimeout(timer); resolve(); });
      });
    }
  }

  async command(line) {
    if (this.closed) return null;
    this.socket.write(Buffer.from(`${line}\r\n`, 'utf8'));
    return this.reply();
  }

  async message(data) {
    if (this.closed) return null;
    const text = data.toString('latin1').replace(/\r?\n/g, '\r\n');
    const stuffed = text.split('\r\n').map((l) => (l.startsWith('.') ? `.${l}` : l));
    if (stuffed[stuffed.length - 1] === '') stuffed.pop();
    this.socket.write(`${stuffed.join('\r\n')}\r\n.\r\n`, 'latin1');
    return this.reply();
  }

  close() {
    if (!this.closed) {
      this.socket.write('QUIT\r\n');
      this.socket.end();
    }
    this.socket.destroy();
  }
}

// What an EHLO reply offers: its SIZE limit (0: none) and whether it has SMTPUTF8.
function extensions(text) {
  const offered = { size: 0, smtputf8: false };
  for (const line of text.split(' | ').slice(1)) {
    const words = line.slice(4).trim().toUpperCase().split(/\s+/);
    if (words[0] === 'SIZE' && Number(words[1]) > 0) offered.size = Number(words[1]);
    if (words[0] === 'SMTPUTF8') offered.smtputf8 = true;
  }
  return offered;
}

function isAscii(text) {
  return /^[\x00-\x7f]*$/.test(text);
}

function connect(address, port, timeout) {
  return new Promise((resolve) => {
    const socket = net.connect({ host: address, port });
    const timer = setTimeout(() => { socket.destroy(); resolve(null); }, timeout);
    socket.once('connect', () => { clearTimeout(timer); resolve(socket); });
    socket.once('error', () => { clearTimeout(timer); resolve(null); });
  });
}

// One session at one address, for the recipients still pending. Returns the recipients'
// new states: 'delivered', 'failed' or 'temporary' (try elsewhere or later).
async function deliverAt(address, pending, data, options) {
  const broken = options.breaks;
  const states = new Map(pending.map((r) => [r, 'temporary']));
  const tempfail = () => states; // every pending recipient stays temporary
  const permanent = (rcpts) => { for (const r of rcpts) states.set(r, 'failed'); return states; };
  const socket = await connect(address, options.smtpPort, options.timeout);
  if (socket === null) {
    log(`connect to ${address}: failed`);
    return Object.assign(tempfail(), { unreachable: true });
  }
  const session = new Session(socket, options.timeout);
  try {
    const greeting = await session.reply();
    if (greeting === null || greeting[0] >= 400) { log(`${address}: greeting ${greeting}`); return tempfail(); }
    let hello = await session.command('EHLO node-sender.test');
    if (hello !== null && hello[0] >= 500) hello = await session.command('HELO node-sender.test');
    if (hello === null || hello[0] >= 400) return tempfail();
    const offered = extensions(hello[1]);
    if (offered.size > 0 && data.length > offered.size && !broken.has('ignore-size')) {
      log(`${address}: the message (${data.length} bytes) is over the host's SIZE ${offered.size}`);
      return permanent(pending);
    }
    const international = [options.from, ...pending].some((a) => !isAscii(a));
    if (international && !offered.smtputf8 && !broken.has('ignore-smtputf8')) {
      log(`${address}: an address is not ASCII and the host does not offer SMTPUTF8`);
      return permanent(pending);
    }
    const params = international && offered.smtputf8 ? ' SMTPUTF8' : '';
    const mail = await session.command(`MAIL FROM:<${options.from}>${params}`);
    if (mail === null) return tempfail();
    if (mail[0] >= 500 && !broken.has('failover-5xx')) return permanent(pending);
    if (mail[0] >= 400) return tempfail();
    const accepted = [];
    for (const r of pending) {
      const reply = await session.command(`RCPT TO:<${r}>`);
      if (reply === null) return tempfail();
      if (reply[0] < 300) accepted.push(r);
      else if (reply[0] >= 500 && !broken.has('failover-5xx')) {
        if (broken.has('rcpt-5xx-fails-all')) return permanent(pending);
        states.set(r, 'failed');
      }
    }
    if (accepted.length === 0) return states;
    const dataReply = await session.command('DATA');
    if (dataReply === null) return tempfail();
    if (dataReply[0] >= 500 && !broken.has('failover-5xx')) return permanent(accepted);
    if (dataReply[0] !== 354) return states;
    const done = await session.message(data);
    if (done === null) {
      log(`${address}: no reply after the final dot`);
      if (broken.has('dot-lost-delivered')) for (const r of accepted) states.set(r, 'delivered');
      return states;
    }
    if (done[0] < 300) for (const r of accepted) states.set(r, 'delivered');
    else if (done[0] >= 500 && !broken.has('failover-5xx')) permanent(accepted);
    return states;
  } finally {
    session.close();
  }
}

// --- one attempt over the whole MX list --------------------------------------------------------

async function attempt(resolver, states, data, options) {
  const byDomain = new Map();
  for (const [r, state] of states) {
    if (state !== 'temporary') continue;
    const domain = r.slice(r.lastIndexOf('@') + 1);
    if (!byDomain.has(domain)) byDomain.set(domain, []);
    byDomain.get(domain).push(r);
  }
  for (const [domain, recipients] of byDomain) {
    let hosts;
    try {
      hosts = await route(resolver, domain, options);
    } catch (error) {
      log(error.message);
      const final = error instanceof Permanent ? 'failed' : 'temporary';
      for (const r of recipients) states.set(r, final);
      continue;
    }
    let pending = recipients;
    let reached = false;
    for (const host of hosts) {
      const list = options.breaks.has('first-address-only') ? host.addresses.slice(0, 1) : host.addresses;
      for (const address of list) {
        const result = await deliverAt(address, pending, data, options);
        reached ||= !result.unreachable;
        for (const [r, state] of result) states.set(r, state);
        pending = pending.filter((r) => states.get(r) === 'temporary');
        const stop = pending.length === 0
          || (options.breaks.has('no-failover-4xx') && [...result.values()].includes('temporary'));
        if (stop) break;
      }
      if (pending.length === 0 || options.breaks.has('no-failover-4xx')) break;
    }
    if (pending.length > 0 && !reached && options.breaks.has('unreachable-bounces')) {
      log(`no MX host of ${domain} could be reached`);
      for (const r of pending) states.set(r, 'failed');
    }
  }
}

function verdict(states) {
  const values = [...states.values()];
  if (values.includes('failed')) return EXIT_FAILED;
  if (values.includes('temporary')) return EXIT_DEFERRED;
  return EXIT_OK;
}

async function main() {
  let options;
  try {
    options = parseArgs(process.argv.slice(2));
  } catch (error) {
    process.stderr.write(`usage: ${error.message}\n`);
    return EXIT_USAGE;
  }
  const resolver = new dnsPromises.Resolver({ timeout: Math.max(200, options.timeout / 2), tries: 2 });
  resolver.setServers([options.dns]);
  const data = readFileSync(options.messageFile);
  const states = new Map(options.recipients.map((r) => [r, 'temporary']));
  const started = Date.now();
  for (;;) {
    await attempt(resolver, states, data, options);
    const code = verdict(states);
    if (code !== EXIT_DEFERRED || !options.queue || options.breaks.has('no-retry')) return code;
    const wait = options.breaks.has('retry-too-soon') ? 100 : options.retryInterval;
    if (Date.now() + wait - started > options.giveUp) {
      log('giving up');
      return EXIT_FAILED;
    }
    log(`deferred; next try in ${wait} ms`);
    await new Promise((resolve) => setTimeout(resolve, wait));
  }
}

process.exitCode = await main();
