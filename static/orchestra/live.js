/* Orchestra live updates for a run: one WebSocket, no build step.
 *
 * The page root carries data-live-run="<run id>" and data-last-seq="<last event seq
 * rendered>". We connect to /ws/runs/<id>/?after=<last seq>; the server replays what we
 * missed and then streams new events, one JSON event per frame. Each event is appended to
 * the feed (#feed) once, by seq; on a dropped connection we reconnect with exponential
 * backoff and resume after the last seq we saw, so nothing is missed or shown twice.
 *
 * Elements with data-refresh-on="<kind prefixes>" are htmx partials: after an event whose
 * kind starts with one of the prefixes (and, with data-refresh-step, concerns that step),
 * we re-fetch the element from its hx-get URL and swap it in place. Refreshes are
 * coalesced and never overlap for one element, and a refresh asked for during a fetch runs
 * once more after it, so the last state always lands.
 */
(function () {
  "use strict";

  // How each decision reads after "checkpoint #n": present.DECISIONS.
  var DECISIONS = {
    approve: "approved",
    approve_run: "approved for the rest of the run",
    approve_pattern: "approved for matching arguments",
    reject: "rejected",
    reject_stop: "rejected and the step stopped",
    respond: "answered without running the tool"
  };

  // Also on pages without a live run: the tests compare it with describe_event.
  window.orchestraDescribe = describe;

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
      setStatus("live", "Live");
      // A connection that stays up a while earns a fresh backoff.
      stableTimer = setTimeout(function () { failures = 0; }, 5000);
    };
    ws.onmessage = function (message) {
      if (ws !== socket) return;
      var event;
      try { event = JSON.parse(message.data); } catch (e) { return; }
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
    if (feed) append(event);
    scheduleRefresh(event);
  }

  // --- the feed ------------------------------------------------------------------------
  function span(cls, text, tag) {
    var el = document.createElement(tag || "span");
    el.className = cls;
    el.textContent = text;
    return el;
  }

  function append(event) {
    var atBottom = !feedScroll ||
      feedScroll.scrollHeight - feedScroll.scrollTop - feedScroll.clientHeight < 40;
    var li = document.createElement("li");
    li.setAttribute("data-seq", String(event.seq));
    li.setAttribute("data-kind", event.kind);
    li.className = "fresh";
    li.appendChild(span("seq", "#" + event.seq));
    var time = span("", (event.at || "").slice(11, 19), "time");
    time.setAttribute("datetime", event.at || "");
    li.appendChild(time);
    li.appendChild(span("kind", event.kind));
    li.appendChild(span("who", (event.step ? event.step + " · " : "") + (event.actor || "")));
    li.appendChild(span("what", describe(event.kind, event.data || {})));
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

  function clip(text) {
    text = String(text).split(/\s+/).filter(Boolean).join(" ");
    return text.length <= 160 ? text : text.slice(0, 159) + "…";
  }

  function label(status) { return String(status || "").replace(/_/g, " "); }

  // The twin of orchestra.dashboard.present.describe_event: keep them in step.
  function describe(kind, d) {
    var text = "";
    switch (kind) {
      case "run.created": text = "task “" + (d.title || "") + "”"; break;
      case "phase.changed": text = "now in " + (d.phase || "?"); break;
      case "plan.proposed": text = "version " + d.version + " with " + d.steps + " steps"; break;
      case "plan.rejected": text = (d.reasons || []).join("; "); break;
      case "plan.accepted": text = "version " + d.version + " with " + (d.steps || []).length + " steps"; break;
      case "step.dispatched": text = "to " + (d.agent || "?"); break;
      case "step.started":
      case "review.started": text = "attempt " + d.attempt; break;
      case "step.output": text = d.chars + " characters"; break;
      case "step.revising": text = "round " + d.round + (d.by_human ? " (human feedback)" : ""); break;
      case "step.completed": text = "after " + d.attempts + " attempt(s)"; break;
      case "step.retrying":
      case "step.failed":
      case "run.failed": text = d.error || ""; break;
      case "model.called":
        text = d.model + ": " + d.input_tokens + " in / " + d.output_tokens + " out, " +
          d.latency_ms + " ms";
        if (d.error) text += " — " + d.error;
        break;
      case "tool.called": text = d.tool + " → " + label(d.status); break;
      case "approval.requested":
        text = label(d.kind) + " checkpoint #" + d.checkpoint;
        if (d.tool) text += " for " + d.tool;
        break;
      case "approval.decided":
        var verb = DECISIONS[d.decision] || label(d.status);
        if (d.status === "expired") verb = "expired and was " + verb;
        text = "checkpoint #" + d.checkpoint + " " + verb;
        if (d.edited_arguments !== null && d.edited_arguments !== undefined) text += " with edited arguments";
        if (d.comment) text += ": " + d.comment;
        break;
      case "approval.voted":
        text = "checkpoint #" + d.checkpoint + ": " + d.approvals + " of " + d.approvals_required + " approvals";
        if (d.edited_arguments !== null && d.edited_arguments !== undefined) text += " (arguments edited: earlier approvals reset)";
        break;
      case "approval.reminder":
        text = "checkpoint #" + d.checkpoint + " is still waiting";
        if (d.escalated_to) text += "; the " + d.escalated_to + " group may decide too";
        break;
      case "policy.rule_added": text = "rule “" + (d.name || "") + "”"; break;
      case "policy.rule_revoked": text = "rule “" + (d.name || "") + "” revoked"; break;
      case "plan.edited":
        var changes = (d.diff || []).length;
        text = "version " + d.version + " from version " + d.based_on + ": " + changes +
          " change" + (changes === 1 ? "" : "s");
        break;
      case "merge.queued": text = (d.branch || "?") + " waits to merge"; break;
      case "step.merged":
        var files = (d.files || []).length;
        text = (d.branch || "?") + " merged as " + String(d.commit || "").slice(0, 10) + " (" +
          files + " file" + (files === 1 ? "" : "s") + ")";
        break;
      case "merge.conflict": text = "conflict in " + (d.files || []).join(", ") + " (round " + d.round + ")"; break;
      case "step.checks":
        if (d.passed) { text = "checks passed"; break; }
        text = "checks failed: " + (d.results || []).filter(function (r) { return !r.passed; })
          .map(function (r) { return r.command || "?"; }).join(", ");
        break;
      case "step.taken_over": text = "taken over from " + (d.from || "a lost worker") + " by " + (d.to || "?"); break;
      case "notification.failed":
        text = (d.channel || "?") + " to " + (d.target || "?") + " failed after " + d.attempts +
          " attempts: " + (d.error || "");
        break;
      case "review.verdict": text = d.verdict + ": " + (d.feedback || ""); break;
      case "report.published": text = d.chars + " characters"; break;
      case "run.completed": text = d.input_tokens + " in / " + d.output_tokens + " out tokens"; break;
    }
    return clip(text);
  }

  // --- partial refreshes ---------------------------------------------------------------
  var wanted = new Set();
  var flushTimer = null;
  var inFlight = new Map(); // element id -> start time
  var again = new Set();
  var STUCK_MS = 10000;

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
    // Coalesce a burst (a replay after reconnecting) into one fetch per partial.
    if (wanted.size && !flushTimer) flushTimer = setTimeout(flush, 60);
  }

  function flush() {
    flushTimer = null;
    var ids = Array.from(wanted);
    wanted.clear();
    ids.forEach(refresh);
  }

  function refresh(id) {
    var started = inFlight.get(id);
    if (started !== undefined && Date.now() - started < STUCK_MS) { again.add(id); return; }
    var el = document.getElementById(id);
    var url = el && el.getAttribute("hx-get");
    if (!url || !window.htmx) return;
    inFlight.set(id, Date.now());
    var done = function () {
      inFlight.delete(id);
      if (again.delete(id)) refresh(id);
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
    seqs: function () { return Array.from(seen).sort(function (a, b) { return a - b; }); }
  };

  connect();
})();
