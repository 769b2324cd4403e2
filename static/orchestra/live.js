/* Orchestra live updates for a run: one WebSocket, no build step.
 *
 * The page root carries data-live-run="<run id>" and data-last-seq="<last event seq
 * rendered>". We connect to /ws/runs/<id>/?after=<last seq>; the server replays what we
 * missed and then streams new events, one JSON event per frame. Each frame carries the
 * event's feed line as HTML the server rendered (`html`: the run page's `event` partial), and
 * that line is inserted into the feed (#feed) once, by seq: this file never words an event.
 * On a dropped connection we reconnect with exponential backoff and resume after the last seq
 * we saw, so nothing is missed or shown twice.
 *
 * Elements with data-refresh-on="<kind prefixes>" are htmx partials: after an event whose
 * kind starts with one of the prefixes (and, with data-refresh-step, concerns that step),
 * we re-fetch the element and swap it in place. Refreshes are coalesced: at most one round
 * per GAP_MS (300 ms), however many events arrive; a round fetches every partial any of
 * those events touched in one request (the root's data-parts-url, each element naming its
 * data-part), rounds never overlap, and a refresh asked for during a round runs in the next,
 * so the last state always lands.
 *
 * A run that has ended (data-ended="true", or a run.completed/failed/cancelled/stopped
 * event) says so instead of "Live".
 */
(function () {
  "use strict";

  var root = document.querySelector("[data-live-run]");
  if (!root || !window.WebSocket) return;

  var runId = root.getAttribute("data-live-run");
  var lastSeq = Number(root.getAttribute("data-last-seq") || 0);
  var feed = document.getElementById("feed");
  var feedScroll = document.getElementById("feed-scroll");
  var statusEl = document.getElementById("live-status");
  var seen = new Set();
  var FEED_MAX = 2000;
  var REFUSED = { 4403: "Live updates refused", 4400: "Live updates unavailable" };
  var ENDS = ["run.completed", "run.failed", "run.cancelled", "run.stopped"];
  var ended = root.getAttribute("data-ended") === "true";
  // Counted for the browser tests and the load figures: events received, partials fetched.
  var counts = { events: 0, fetches: 0, rounds: 0 };

  if (feed) {
    feed.querySelectorAll("li[data-seq]").forEach(function (li) {
      seen.add(Number(li.getAttribute("data-seq")));
    });
  }

  // Start at the newest events, where the live ones will appear.
  if (feedScroll) feedScroll.scrollTop = feedScroll.scrollHeight;

  var socket = null;
  var failures = 0;
  var retryTimer = null;
  var stableTimer = null;
  var stopped = false;

  function setStatus(state, text) {
    if (!statusEl) return;
    statusEl.setAttribute("data-state", state);
    statusEl.textContent = text;
  }

  function socketUrl() {
    var scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return scheme + "//" + location.host + "/ws/runs/" + runId + "/?after=" + lastSeq;
  }

  function connect() {
    retryTimer = null;
    if (stopped) return;
    setStatus("connecting", failures ? "Reconnecting…" : "Connecting…");
    var ws = new WebSocket(socketUrl());
    socket = ws;
    ws.onopen = function () {
      if (ws !== socket) return;
      if (ended) setStatus("ended", "Run ended"); else setStatus("live", "Live");
      // A connection that stays up a while earns a fresh backoff.
      stableTimer = setTimeout(function () { failures = 0; }, 5000);
    };
    ws.onmessage = function (message) {
      if (ws !== socket) return;
      var event;
      try { event = JSON.parse(message.data); } catch (e) { return; }
      // A model's streaming text (not an event): for live_tokens.js.
      if (event.live) { document.dispatchEvent(new CustomEvent("orc:live-text", { detail: event })); return; }
      receive(event);
    };
    ws.onclose = function (close) {
      if (ws !== socket) return;
      socket = null;
      clearTimeout(stableTimer);
      if (stopped) return;
      if (REFUSED[close.code]) {
        setStatus("off", REFUSED[close.code]);
        return;
      }
      var delay = Math.min(15000, 500 * Math.pow(2, failures)) * (0.8 + Math.random() * 0.4);
      failures += 1;
      setStatus("reconnecting", "Reconnecting in " + Math.max(1, Math.round(delay / 1000)) + " s…");
      retryTimer = setTimeout(connect, delay);
    };
  }

  function receive(event) {
    if (typeof event.seq !== "number" || seen.has(event.seq)) return;
    seen.add(event.seq);
    if (event.seq > lastSeq) lastSeq = event.seq;
    root.setAttribute("data-last-seq", String(lastSeq));
    counts.events += 1;
    if (feed) append(event);
    scheduleRefresh(event);
    document.dispatchEvent(new CustomEvent("orc:event", { detail: event }));
    if (ENDS.indexOf(event.kind) !== -1) {
      ended = true;
      root.setAttribute("data-ended", "true");
      setStatus("ended", "Run ended");
      var title = document.getElementById("feed-title");
      if (title && title.textContent === "Live events") title.textContent = "Events";
    }
  }

  // --- the feed ------------------------------------------------------------------------
  // The server's line for the event: one <li data-seq>, or null when the frame has none.
  function lineOf(event) {
    if (typeof event.html !== "string") return null;
    var holder = document.createElement("template");
    holder.innerHTML = event.html.trim();
    var li = holder.content.firstElementChild;
    return li && li.tagName === "LI" && Number(li.getAttribute("data-seq")) === event.seq ? li : null;
  }

  function append(event) {
    var li = lineOf(event);
    if (!li) return;
    var atBottom = !feedScroll ||
      feedScroll.scrollHeight - feedScroll.scrollTop - feedScroll.clientHeight < 40;
    li.classList.add("fresh");
    // Events arrive in seq order; a stray older one still lands in its place.
    var after = null;
    var items = feed.children;
    for (var i = items.length - 1; i >= 0; i--) {
      if (Number(items[i].getAttribute("data-seq")) < event.seq) { after = items[i]; break; }
    }
    if (after) after.after(li); else feed.prepend(li);
    while (feed.children.length > FEED_MAX) feed.firstElementChild.remove();
    if (feedScroll && atBottom) feedScroll.scrollTop = feedScroll.scrollHeight;
  }

  // --- partial refreshes ---------------------------------------------------------------
  // One round at a time, at most one per GAP_MS: the partials (data-part) any event since the
  // last round touched come back in ONE request to data-parts-url and are swapped by id;
  // other refreshable elements (the step page's) are fetched with htmx as before.
  var wanted = new Set();
  var flushTimer = null;
  var GAP_MS = Number(root.getAttribute("data-refresh-gap") || 300);
  var STUCK_MS = 10000;
  var partsUrl = root.getAttribute("data-parts-url");
  var lastRound = 0;
  var roundStarted = 0; // while a round is in flight
  var inFlight = new Map(); // element id -> start time, for single fetches
  var again = new Set();

  function scheduleRefresh(event) {
    document.querySelectorAll("[data-refresh-on]").forEach(function (el) {
      if (!el.id) return;
      var step = el.getAttribute("data-refresh-step");
      if (step && event.step !== step) return;
      var prefixes = el.getAttribute("data-refresh-on").split(/\s+/);
      for (var i = 0; i < prefixes.length; i++) {
        if (prefixes[i] && event.kind.indexOf(prefixes[i]) === 0) { wanted.add(el.id); return; }
      }
    });
    schedule();
  }

  // Coalesce: a burst (a replay, parallel steps) becomes one round, at most one per GAP_MS.
  function schedule() {
    if (wanted.size && !flushTimer) {
      flushTimer = setTimeout(flush, Math.max(60, lastRound + GAP_MS - Date.now()));
    }
  }

  function flush() {
    flushTimer = null;
    if (roundStarted && Date.now() - roundStarted < STUCK_MS) {
      schedule(); // the last round is still coming back; the next one follows it
      return;
    }
    lastRound = Date.now();
    counts.rounds += 1;
    var names = [];
    var ids = Array.from(wanted);
    wanted.clear();
    ids.forEach(function (id) {
      var el = document.getElementById(id);
      var name = el && el.getAttribute("data-part");
      if (name && partsUrl) names.push(name); else refresh(id);
    });
    if (names.length) fetchParts(names);
  }

  function fetchParts(names) {
    roundStarted = Date.now();
    counts.fetches += 1;
    var query = names.map(function (n) { return "name=" + encodeURIComponent(n); }).join("&");
    var done = function () { roundStarted = 0; schedule(); };
    fetch(partsUrl + "?" + query, { credentials: "same-origin", headers: { "HX-Request": "true" } })
      .then(function (response) { return response.ok ? response.text() : ""; })
      .then(function (html) { swapParts(html); done(); }, done);
  }

  function swapParts(html) {
    var holder = document.createElement("template");
    holder.innerHTML = html;
    Array.from(holder.content.children).forEach(function (fresh) {
      var old = fresh.id && document.getElementById(fresh.id);
      if (!old) return;
      old.replaceWith(fresh);
      if (window.htmx) window.htmx.process(fresh);
    });
  }

  function refresh(id) {
    var started = inFlight.get(id);
    if (started !== undefined && Date.now() - started < STUCK_MS) { again.add(id); return; }
    var el = document.getElementById(id);
    var url = el && el.getAttribute("hx-get");
    if (!url || !window.htmx) return;
    inFlight.set(id, Date.now());
    counts.fetches += 1;
    var done = function () {
      inFlight.delete(id);
      if (again.delete(id)) { wanted.add(id); schedule(); }
    };
    window.htmx.ajax("GET", url, { source: el, target: el, swap: "outerHTML" }).then(done, done);
  }

  // --- lifecycle -----------------------------------------------------------------------
  window.addEventListener("pagehide", function () {
    stopped = true;
    clearTimeout(retryTimer);
    if (socket) socket.close(1000);
  });
  window.addEventListener("pageshow", function (e) {
    if (e.persisted && stopped) { stopped = false; failures = 0; connect(); }
  });
  window.addEventListener("online", function () {
    if (retryTimer) { clearTimeout(retryTimer); connect(); }
  });

  // For people debugging in the console, and for the browser tests.
  window.orchestraLive = {
    get socket() { return socket; },
    get lastSeq() { return lastSeq; },
    counts: counts,
    seqs: function () { return Array.from(seen).sort(function (a, b) { return a - b; }); }
  };

  connect();
})();
