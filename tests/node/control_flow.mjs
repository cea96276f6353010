// The control API from Node.js with nothing but fetch: mx1 refuses, so the first message
// goes to mx2; mx1 is switched to accept halfway through and takes the second; then the
// sessions are read back, and the event stream (read with fetch too) saw both sessions.
// Prints one JSON object with what happened; exits 1 when a check fails.
//
// Usage: node control_flow.mjs CONTROL_HOST:PORT
import assert from 'node:assert/strict';
import { deliver } from './mx_sender.mjs';

const api = `http://${process.argv[2]}/api/v1`;

async function call(method, path, body) {
  const answer = await fetch(api + path, {
    method,
    headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: answer.status, body: await answer.json() };
}

// The event stream, read with fetch: { open, events }. `open` resolves once the first SSE
// block has come (the stream is listening); `events` with the events of `kinds` seen until
// `wanted` host sessions have come.
function watch(kinds, wanted) {
  let opened, failed;
  const open = new Promise((resolve, reject) => ((opened = resolve), (failed = reject)));
  const events = (async () => {
    const answer = await fetch(api + '/events');
    assert.equal(answer.headers.get('content-type'), 'text/event-stream; charset=utf-8');
    const reader = answer.body.pipeThrough(new TextDecoderStream()).getReader();
    const seen = [];
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return seen;
      buffer += value;
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        opened();
        for (const line of block.split('\n')) {
          if (!line.startsWith('data: ')) continue;
          const event = JSON.parse(line.slice(6));
          if (kinds.includes(event.kind)) seen.push(event);
        }
        if (seen.filter((e) => e.kind === 'host_session').length >= wanted) {
          await reader.cancel();
          return seen;
        }
      }
    }
  })();
  events.catch(failed);
  return { open, events };
}

const message = 'From: bob@example.net\nTo: alice@example.test\nSubject: Hello from Node\n\nHi Alice.\n';
const world = (await call('GET', '/world')).body;
const hosts = Object.fromEntries(world.hosts.map((h) => [h.name, h.behaviour]));
assert.deepEqual(hosts, { 'mx1.example.test': 'refuse', 'mx2.example.test': 'accept' });
const send = () =>
  deliver({ dns: world.dns, smtpPort: world.smtp_port, from: 'bob@example.net', to: 'alice@example.test', message });

const stream = watch(['host_session', 'control'], 2);
await stream.open;
const first = await send();
const put = await call('PUT', '/hosts/mx1.example.test/behaviour', 'accept');
const second = await send();
const sessions = {};
for (const name of ['mx1.example.test', 'mx2.example.test']) {
  sessions[name] = (await call('GET', `/hosts/${name}/sessions`)).body.sessions;
}
const messages = (await call('GET', '/hosts/mx1.example.test/messages')).body.messages;
const events = await stream.events;
const bad = await call('PUT', '/hosts/mx1.example.test/behaviour', { rcpt: 'later' });

const summary = {
  first,
  put: { status: put.status, behaviour: put.body.hosts[0].behaviour },
  second,
  sessions: Object.fromEntries(
    Object.entries(sessions).map(([name, list]) => [name, list.map((s) => s.outline)]),
  ),
  subjects: messages.map((m) => /^Subject: (.*)$/m.exec(m.text)[1]),
  events: events.map((e) => (e.kind === 'control' ? `control ${e.target}: ${e.value}` : `${e.kind} ${e.host}`)),
  bad,
};
console.log(JSON.stringify(summary));

assert.equal(first.status, 'delivered');
assert.equal(first.host, 'mx2.example.test');
assert.match(first.log[0], /^mx1\.example\.test\[[\d.]+\]: 0 ECONNREFUSED$/);
assert.equal(put.status, 200);
assert.equal(second.host, 'mx1.example.test');
assert.equal(sessions['mx1.example.test'].length, 1);
assert.equal(sessions['mx2.example.test'].length, 1);
assert.equal(bad.status, 400);
