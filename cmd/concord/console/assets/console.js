// concord console: applies the sections the server pushes (server-sent
// events), keeps relative times current, and runs actions after a
// confirmation. No framework, no build step; the page never polls.
(function () {
  'use strict';
  var csrf = document.querySelector('meta[name=csrf]').content;
  var pageState = document.getElementById('page-state');

  function setState(text, cls) {
    pageState.textContent = 'page: ' + text;
    pageState.className = 'badge ' + (cls || '');
  }

  // Keep keyboard focus on the same control when its section is replaced.
  function focusKey(el) {
    if (!el || el === document.body || !el.closest('section')) return null;
    var parts = [el.tagName.toLowerCase()];
    ['data-action', 'data-lease', 'data-queue', 'data-id', 'data-semaphore', 'name'].forEach(function (a) {
      if (el.hasAttribute(a)) parts.push('[' + a + '="' + CSS.escape(el.getAttribute(a)) + '"]');
    });
    return parts.join('');
  }

  function applySection(msg) {
    var old = document.getElementById(msg.id);
    if (!old) return;
    var key = focusKey(document.activeElement);
    var holder = document.createElement('div');
    holder.innerHTML = msg.html;
    var fresh = holder.firstElementChild;
    if (!fresh) return;
    old.replaceWith(fresh);
    tick();
    if (key) {
      var again = fresh.querySelector(key);
      if (again) again.focus();
    }
  }

  function connect() {
    var es = new EventSource('events');
    es.addEventListener('open', function () { setState('live', 'ok'); });
    es.addEventListener('error', function () { setState('reconnecting…', 'bad'); });
    es.addEventListener('section', function (e) { applySection(JSON.parse(e.data)); });
  }

  function span(ms) {
    var s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return s + 's';
    var m = Math.floor(s / 60);
    if (m < 60) return m + 'm ' + (s % 60) + 's';
    var h = Math.floor(m / 60);
    if (h < 48) return h + 'h ' + (m % 60) + 'm';
    return Math.floor(h / 24) + 'd ' + (h % 24) + 'h';
  }

  // Relative times are computed here, from the timestamps the server sent.
  function tick() {
    var now = Date.now();
    document.querySelectorAll('time.since').forEach(function (t) {
      var at = Number(t.dataset.ms);
      t.textContent = 'for ' + (t.dataset.atleast ? '≥ ' : '') + span(now - at);
      t.title = (t.dataset.atleast ? 'before the console started, at ' : '') + new Date(at).toLocaleString();
    });
    document.querySelectorAll('time.until').forEach(function (t) {
      var left = Number(t.dataset.ms) - now;
      t.textContent = left > 0 ? span(left) : 'due now';
    });
  }

  var toast = document.getElementById('toast');
  function say(text, bad) {
    toast.textContent = text;
    toast.className = bad ? 'bad shown' : 'shown';
  }

  var dialog = document.getElementById('confirm');
  var pending = null;
  function ask(text, run) {
    document.getElementById('confirm-text').textContent = text;
    pending = run;
    dialog.returnValue = '';
    dialog.showModal();
    document.getElementById('confirm-cancel').focus();
  }
  dialog.addEventListener('close', function () {
    var run = pending;
    pending = null;
    if (dialog.returnValue === 'ok' && run) run();
  });

  function post(action, fields) {
    var body = new URLSearchParams(fields);
    fetch('action/' + encodeURIComponent(action), {
      method: 'POST',
      headers: { 'X-CSRF-Token': csrf },
      body: body,
      credentials: 'same-origin'
    }).then(function (r) {
      return r.json().then(function (j) { say(j.message, !r.ok); });
    }).catch(function (err) { say('request failed: ' + err, true); });
  }

  document.addEventListener('click', function (e) {
    var b = e.target.closest('button.action[data-action]');
    if (!b) return;
    var d = b.dataset, fields = {};
    ['lease', 'queue', 'id'].forEach(function (k) { if (d[k] !== undefined) fields[k] = d[k]; });
    ask(d.confirm, function () { post(d.action, fields); });
  });

  document.addEventListener('submit', function (e) {
    var f = e.target.closest('form.limit');
    if (!f) return;
    e.preventDefault();
    var n = f.elements.limit.value;
    ask(f.dataset.confirm + ' New limit: ' + n + '.', function () {
      post('limit', { semaphore: f.dataset.semaphore, limit: n });
    });
  });

  connect();
  tick();
  setInterval(tick, 1000);
})();
