// Theseus dashboard: confirmations, live refresh over one EventSource per tab (polling where
// that fails), followed logs that never pull a reader who scrolled up back down, and the
// deploy form's file upload. No library, no build: served as it is.
"use strict";
(function () {
  var live = document.getElementById("live");
  var state = document.getElementById("live-state");
  var POLL_MS = 5000;

  // --- confirmations: every action form says what it will do first ---------------------
  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    var button = ev.submitter;
    var text = (button && button.getAttribute("data-confirm-button")) || form.getAttribute("data-confirm");
    if (text && !window.confirm(text)) ev.preventDefault();
  });

  // --- live refresh ----------------------------------------------------------------------
  var busy = false, again = false, pending = null;
  function editing() {
    var el = document.activeElement;
    return el && live && live.contains(el) && /^(INPUT|TEXTAREA|SELECT)$/.test(el.tagName);
  }
  function refresh() {
    if (!live || live.getAttribute("data-live") !== "on") return;
    if (busy) { again = true; return; }
    if (editing()) { again = true; return; }  // not while someone types in a form
    busy = true;
    fetch(location.href, { headers: { "X-Fragment": "1" }, credentials: "same-origin" })
      .then(function (r) {
        if (r.status === 401) { location.href = "/ui/login"; return null; }  // session ended
        return r.ok ? r.text() : null;
      })
      .then(function (html) {
        if (html !== null && !editing()) {
          var open = [];
          live.querySelectorAll("details[open]").forEach(function (d, i) { open.push(i); });
          live.innerHTML = html;
          var all = live.querySelectorAll("details");
          open.forEach(function (i) { if (all[i]) all[i].open = true; });
        }
      })
      .catch(function () {})
      .then(function () { busy = false; if (again) { again = false; soon(); } });
  }
  function soon() {
    if (pending) return;
    pending = setTimeout(function () { pending = null; refresh(); }, 100);
  }
  document.addEventListener("focusout", function () { if (again) { again = false; soon(); } });

  var source = null, poller = null, failures = 0;
  // The other servers (theseus server --peer): when this one stops answering, the tab goes
  // to the first of them that answers, on the same page (a session is good on every server;
  // the browser sends its cookie to another server of the same host, and asks to sign in
  // again on another host).
  var peersMeta = document.querySelector('meta[name="peers"]');
  var peers = peersMeta ? peersMeta.content.split(" ").filter(Boolean) : [];
  function moveIfGone() {
    if (!peers.length || !window.fetch) return;
    fetch("/v1/health", { cache: "no-store" }).catch(function () {
      var i = 0;
      (function next() {
        if (i >= peers.length) return;  // none answers: keep polling here
        var peer = peers[i++];
        fetch(peer + "/v1/health", { mode: "no-cors", cache: "no-store" })
          .then(function () { location.assign(peer + location.pathname + location.search); })
          .catch(next);
      })();
    });
  }
  function mark(text, title) { if (state) { state.textContent = text; state.title = title; } }
  function poll() {
    if (poller) return;
    mark("◌", "polling every 5 s");
    poller = setInterval(refresh, POLL_MS);
  }
  function connect() {
    if (!live || live.getAttribute("data-live") !== "on") return;
    if (!window.EventSource) { poll(); return; }
    source = new EventSource("/ui/stream");
    source.addEventListener("open", function () {
      failures = 0;
      if (poller) { clearInterval(poller); poller = null; }
      mark("●", "live");
    });
    source.addEventListener("changed", soon);
    source.addEventListener("error", function () {
      failures += 1;
      mark("○", "reconnecting");
      // EventSource retries by itself; when it gives up (or keeps failing) poll instead,
      // and try the stream again later: the server may be back, or another behind it.
      if (source.readyState === EventSource.CLOSED || failures >= 3) {
        source.close();
        source = null;
        poll();
        moveIfGone();
        setTimeout(connect, 15000);
      }
    });
  }
  document.addEventListener("visibilitychange", function () {
    if (document.hidden) {
      if (source) { source.close(); source = null; }
    } else if (!source) {
      connect();
      soon();
    }
  });
  connect();

  // --- logs --------------------------------------------------------------------------------
  var log = document.getElementById("log");
  if (log) {
    var follow = document.getElementById("log-follow");
    var wrap = document.getElementById("log-wrap");
    var status = document.getElementById("log-status");
    var MAX = 200000;
    var controller = null;
    wrap.checked = localStorage.getItem("theseus.log.wrap") === "1";
    log.classList.toggle("wrap", wrap.checked);
    wrap.addEventListener("change", function () {
      localStorage.setItem("theseus.log.wrap", wrap.checked ? "1" : "0");
      log.classList.toggle("wrap", wrap.checked);
    });
    var atBottom = function () { return log.scrollTop + log.clientHeight >= log.scrollHeight - 8; };
    var kept = 0;
    var append = function (text) {
      var stick = atBottom();  // only a reader at the bottom is kept there
      // Appended, never rewritten: the lines a reader looks at stay where they are.
      log.appendChild(document.createTextNode(text));
      kept += text.length;
      while (kept > MAX && log.firstChild && log.firstChild !== log.lastChild) {
        kept -= log.firstChild.textContent.length;
        log.removeChild(log.firstChild);
      }
      if (stick) log.scrollTop = log.scrollHeight;
    };
    var open = function () {
      if (controller) controller.abort();
      controller = new AbortController();
      var decoder = new TextDecoder();
      log.textContent = "";
      kept = 0;
      status.textContent = "following";
      var src = log.getAttribute("data-src") + "?tail=500&follow=" + (follow.checked ? "true" : "false");
      fetch(src, { credentials: "same-origin", signal: controller.signal }).then(function (r) {
        if (!r.ok) { return r.text().then(function (t) { status.textContent = "logs unavailable: " + t; }); }
        var reader = r.body.getReader();
        var pump = function () {
          return reader.read().then(function (chunk) {
            if (chunk.done) { status.textContent = follow.checked ? "stream ended" : ""; return; }
            append(decoder.decode(chunk.value, { stream: true }));
            return pump();
          });
        };
        return pump();
      }).catch(function (e) { if (e.name !== "AbortError") status.textContent = "logs unavailable"; });
    };
    follow.addEventListener("change", open);
    open();
  }

  // --- the task's CPU and memory: its charts fetched again every 5 s ------------------------
  var charts = document.getElementById("charts");
  if (charts) {
    var draw = function () {
      if (document.hidden) return;
      fetch(charts.getAttribute("data-src"), { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) { if (html !== null) charts.innerHTML = html; })
        .catch(function () {});
    };
    draw();
    setInterval(draw, POLL_MS);
  }

  // --- deploy: a file read into the document -----------------------------------------------
  var upload = document.getElementById("upload");
  if (upload) {
    upload.addEventListener("change", function () {
      var file = upload.files && upload.files[0];
      if (!file) return;
      file.text().then(function (text) { document.getElementById("document").value = text; });
    });
  }
})();
