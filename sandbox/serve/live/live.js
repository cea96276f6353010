// The live page of `mxsandbox serve --control`: a lane per mail host address that fills in
// as sessions happen, from the event stream (/api/v1/events), and a switch per lane that
// changes the host's behaviour (PUT /api/v1/hosts/{address}/behaviour).
//
// On every (re)connection of the stream the page loads the state first (the world, each
// host's sessions, the DNS queries) while it holds the events that arrive meanwhile, then
// plays those events, skipping the sessions it already drew. Every lane keeps its last
// MAX_MARKS marks and the tables their last MAX_ROWS rows, so a long run stays light.
//
// For tests: window.__live.ready resolves once the first load is done (and body gets
// data-ready="true"); every mark carries data-session and data-shown-at (Date.now() when
// it was drawn).
(function () {
  'use strict';
  var API = '/api/v1';
  var MAX_MARKS = 300;
  var MAX_ROWS = 100;
  var WORLD_EVERY_MS = 3000; // phases change behaviours on their own: look again this often

  var lanes = {}; // zone address -> lane
  var laneList = document.getElementById('lanes');
  var sessionsBody = document.getElementById('sessions');
  var dnsBody = document.getElementById('dns');
  var statusChip = document.getElementById('status');
  var notice = document.getElementById('notice');
  var loading = false;
  var held = [];
  var drawn = {}; // session keys drawn by the load, for the events held meanwhile
  var resolveReady;
  var ready = new Promise(function (resolve) { resolveReady = resolve; });
  window.__live = { ready: ready, shown: 0 };

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  function clock(t) {
    var s = Math.floor(t);
    var h = Math.floor(s / 3600);
    var m = Math.floor(s / 60) % 60;
    var pad = function (n) { return (n < 10 ? '0' : '') + n; };
    return h + ':' + pad(m) + ':' + pad(s % 60) + '.' + String(Math.floor((t % 1) * 10));
  }

  function getJson(path) {
    return fetch(API + path, { cache: 'no-store' }).then(function (answer) {
      return answer.json().then(function (body) {
        if (!answer.ok) { throw new Error(body.error || answer.statusText); }
        return body;
      });
    });
  }

  function setStatus(text, kind) {
    statusChip.textContent = text;
    statusChip.className = 'chip ' + kind;
  }

  // --- what a session was -------------------------------------------------------------------

  function outcome(transcript) {
    var afterDot = false;
    var worst = '';
    for (var i = 0; i < transcript.length; i++) {
      var side = transcript[i][1];
      var line = transcript[i][2];
      if (side === 'C') { afterDot = line.indexOf('<message') === 0; continue; }
      if (line.charAt(3) === '-') { continue; }
      var code = line.charAt(0);
      if (afterDot && code === '2') { return 'accepted'; }
      if (code === '5') { worst = 'rejected'; } else if (code === '4' && !worst) { worst = 'tempfail'; }
    }
    return worst || 'lost';
  }

  function outline(transcript) {
    var parts = [];
    var pending = null;
    transcript.forEach(function (entry) {
      var line = entry[2];
      if (entry[1] === 'C') {
        if (pending !== null) { parts.push(pending + '→…'); }
        pending = line.indexOf('<message') === 0 ? '<message>' : (line.split(' ')[0] || '').toUpperCase();
      } else if (line.charAt(3) !== '-') {
        parts.push(pending === null ? line.slice(0, 3) : pending + '→' + line.slice(0, 3));
        pending = null;
      }
    });
    if (pending !== null) { parts.push(pending + '→…'); }
    return parts.join(', ') || '(nothing said)';
  }

  var MARKS = { accepted: '●', tempfail: '▲', rejected: '■', lost: '◆' };

  function sessionKey(zoneAddress, client, transcript) {
    var first = transcript.length ? Math.round(transcript[0][0] * 1000) : 'none';
    return zoneAddress + '|' + client + '|' + first;
  }

  // --- lanes ----------------------------------------------------------------------------------

  function behaviourKind(words) {
    if (words === 'accept') { return 'k-up'; }
    if (words === 'refuse' || words === 'timeout' || words === 'silent') { return 'k-' + words; }
    return 'k-scripted';
  }

  function makeLane(host) {
    var node = document.getElementById('lane-template').content.firstElementChild.cloneNode(true);
    node.setAttribute('data-lane', host.zone_address);
    var lane = {
      node: node,
      host: host,
      strip: node.querySelector('[data-strip]'),
      chip: node.querySelector('.behaviour'),
      counts: node.querySelector('.counts'),
      earlier: 0,
      sessions: 0,
      accepted: 0
    };
    node.querySelector('.lane-title').textContent = host.name;
    node.querySelector('.lane-where').textContent =
      host.zone_address + ' → ' + host.address + ':' + host.port;
    var form = node.querySelector('form');
    var preset = node.querySelector('.preset');
    var custom = node.querySelector('.custom');
    var result = node.querySelector('.switch-result');
    custom.value = preset.value;
    preset.addEventListener('change', function () { custom.value = preset.value; });
    form.addEventListener('submit', function (event) {
      event.preventDefault();
      result.className = 'switch-result quiet';
      result.textContent = '…';
      fetch(API + '/hosts/' + encodeURIComponent(host.zone_address) + '/behaviour', {
        method: 'PUT',
        headers: { 'Content-Type': 'application/json' },
        body: custom.value
      }).then(function (answer) {
        return answer.json().then(function (body) {
          if (!answer.ok) { throw new Error(body.error || answer.statusText); }
          result.textContent = 'now: ' + body.hosts[0].behaviour;
          updateHosts(body.hosts);
        });
      }).catch(function (error) {
        result.className = 'switch-result bad';
        result.textContent = error.message;
      });
    });
    laneList.appendChild(node);
    lanes[host.zone_address] = lane;
    showHost(lane, host);
    return lane;
  }

  function showHost(lane, host) {
    lane.host = host;
    lane.chip.textContent = host.behaviour;
    lane.chip.className = 'chip behaviour ' + behaviourKind(host.behaviour);
    lane.node.setAttribute('data-behaviour', host.behaviour);
  }

  function showCounts(lane) {
    lane.counts.textContent = lane.sessions + ' session(s), ' + lane.accepted + ' accepted';
  }

  function updateHosts(hosts) {
    hosts.forEach(function (host) {
      var lane = lanes[host.zone_address] || makeLane(host);
      showHost(lane, host);
    });
  }

  function addSession(zoneAddress, host, client, transcript, closed) {
    var lane = lanes[zoneAddress];
    if (!lane) { return; }
    var kind = outcome(transcript);
    var words = outline(transcript);
    var mark = el('span', 'm o-' + kind + ' fresh', MARKS[kind]);
    mark.setAttribute('data-session', sessionKey(zoneAddress, client, transcript));
    mark.setAttribute('data-outcome', kind);
    mark.setAttribute('data-shown-at', String(Date.now()));
    mark.title = clock(closed) + '  ' + host + ' from ' + client + ': ' + words;
    lane.strip.appendChild(mark);
    lane.sessions += 1;
    if (lane.strip.querySelectorAll('.m').length > MAX_MARKS) {
      lane.strip.removeChild(lane.strip.querySelector('.m'));
      lane.earlier += 1;
      var earlier = lane.strip.querySelector('.earlier');
      if (!earlier) {
        earlier = el('span', 'earlier');
        lane.strip.insertBefore(earlier, lane.strip.firstChild);
      }
      earlier.textContent = '+' + lane.earlier + ' earlier';
    }
    showCounts(lane);
    var row = el('tr');
    row.appendChild(el('td', '', clock(closed)));
    row.appendChild(el('td', '', host));
    row.appendChild(el('td', '', client));
    row.appendChild(el('td', '', words));
    prepend(sessionsBody, row);
    window.__live.shown += 1;
  }

  function addQuery(query) {
    var row = el('tr');
    row.appendChild(el('td', '', clock(query.t)));
    row.appendChild(el('td', '', query.rdtype + ' ' + query.name + '?'));
    var answer = query.rcode + (query.rcode === 'NOERROR' ? ', ' + query.answers + ' answer(s)' : '');
    row.appendChild(el('td', '', answer));
    row.appendChild(el('td', 'quiet', query.client + ' (' + query.transport + ')'));
    prepend(dnsBody, row);
  }

  function prepend(body, row) {
    body.insertBefore(row, body.firstChild);
    while (body.rows.length > MAX_ROWS) { body.deleteRow(body.rows.length - 1); }
  }

  function clearAll() {
    Object.keys(lanes).forEach(function (key) {
      var lane = lanes[key];
      while (lane.strip.firstChild) { lane.strip.removeChild(lane.strip.firstChild); }
      lane.sessions = 0;
      lane.accepted = 0;
      lane.earlier = 0;
      showCounts(lane);
    });
    while (sessionsBody.firstChild) { sessionsBody.removeChild(sessionsBody.firstChild); }
    while (dnsBody.firstChild) { dnsBody.removeChild(dnsBody.firstChild); }
  }

  // --- events -----------------------------------------------------------------------------

  function play(event) {
    if (event.kind === 'host_session') {
      var key = sessionKey(event.address, event.client, event.transcript);
      if (drawn[key]) { return; }
      addSession(event.address, event.host, event.client, event.transcript, event.t);
    } else if (event.kind === 'host_accepted') {
      var lane = lanes[event.address];
      if (lane) { lane.accepted += 1; showCounts(lane); }
    } else if (event.kind === 'dns_served') {
      addQuery(event);
    } else if (event.kind === 'control') {
      if (event.action === 'reset') { clearAll(); }
      refreshWorld().catch(function (error) { showNotice(error.message); });
    } else if (event.kind === 'warning') {
      showNotice(event.text);
    }
  }

  function showNotice(text) {
    notice.hidden = false;
    notice.textContent = text;
  }

  function refreshWorld() {
    return getJson('/world').then(function (world) { updateHosts(world.hosts); });
  }

  function load() {
    loading = true;
    held = [];
    drawn = {};
    return getJson('/world').then(function (world) {
      document.getElementById('title').textContent = world.scenario + ' · live';
      document.title = world.scenario + ' · MX Sandbox live';
      document.getElementById('description').textContent = world.title || '';
      document.getElementById('where').textContent =
        'DNS ' + world.dns.host + ':' + world.dns.port + ' · SMTP port ' + world.smtp_port;
      updateHosts(world.hosts);
      clearAll();
      var asks = world.hosts.map(function (host) {
        return getJson('/hosts/' + encodeURIComponent(host.zone_address) + '/sessions');
      });
      asks.push(getJson('/dns/queries'));
      return Promise.all(asks).then(function (answers) {
        var queries = answers.pop().queries;
        var sessions = [];
        answers.forEach(function (answer) { sessions = sessions.concat(answer.sessions); });
        sessions.sort(function (a, b) { return a.opened - b.opened; });
        sessions.forEach(function (s) {
          if (s.closed === null) { return; } // still open: its event will come
          drawn[sessionKey(s.zone_address, s.client, s.transcript)] = true;
          addSession(s.zone_address, s.host, s.client, s.transcript, s.closed);
        });
        world.hosts.forEach(function (host) {
          var lane = lanes[host.zone_address];
          lane.accepted = host.accepted;
          showCounts(lane);
        });
        queries.slice(-MAX_ROWS).forEach(addQuery);
      });
    }).then(function () {
      loading = false;
      var events = held;
      held = [];
      events.forEach(play);
      drawn = {};
      document.body.setAttribute('data-ready', 'true');
      resolveReady(true);
    }).catch(function (error) {
      loading = false;
      setStatus('cannot load: ' + error.message, 'bad');
    });
  }

  var stream = new EventSource(API + '/events');
  stream.onopen = function () {
    setStatus('live', 'ok');
    load();
  };
  stream.onerror = function () {
    setStatus('reconnecting…', 'bad');
  };
  stream.onmessage = function (message) {
    var event = JSON.parse(message.data);
    if (loading) { held.push(event); } else { play(event); }
  };
  stream.addEventListener('dropped', function (message) {
    var data = JSON.parse(message.data);
    showNotice(data.count + ' event(s) were not shown: the page fell behind the sandbox.');
  });

  document.getElementById('reset').addEventListener('click', function () {
    fetch(API + '/reset', { method: 'POST' }).catch(function (error) { showNotice(error.message); });
  });
  setInterval(function () {
    if (!loading) { refreshWorld().catch(function () {}); }
  }, WORLD_EVERY_MS);
})();
