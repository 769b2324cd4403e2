/* The signed-in user's inbox, live on every page: one WebSocket (/ws/inbox/) over which the
 * server pushes the approvals badge and the home page's live part (active runs, waiting
 * checkpoints), rendered together from one read so they always agree. Each frame is
 * {count, badge, home}: the badge (#approvals-badge) and, on the home page, #home-live are
 * replaced by the server's HTML. Reconnects with backoff; no polling.
 */
(function () {
  "use strict";
  if (!window.WebSocket) return;

  var failures = 0;
  var stopped = false;
  var socket = null;
  var frames = 0;

  function replace(id, html) {
    var el = document.getElementById(id);
    if (!el || typeof html !== "string") return;
    var holder = document.createElement("template");
    holder.innerHTML = html.trim();
    var fresh = holder.content.firstElementChild;
    if (fresh && fresh.id === id) el.replaceWith(fresh);
  }

  function connect() {
    if (stopped) return;
    var scheme = location.protocol === "https:" ? "wss:" : "ws:";
    var ws = new WebSocket(scheme + "//" + location.host + "/ws/inbox/");
    socket = ws;
    ws.onopen = function () { failures = 0; };
    ws.onmessage = function (message) {
      var frame;
      try { frame = JSON.parse(message.data); } catch (e) { return; }
      frames += 1;
      replace("approvals-badge", frame.badge);
      replace("home-live", frame.home);
    };
    ws.onclose = function (close) {
      if (ws !== socket || stopped || close.code === 4403) return;
      var delay = Math.min(15000, 1000 * Math.pow(2, failures)) * (0.8 + Math.random() * 0.4);
      failures += 1;
      setTimeout(connect, delay);
    };
  }

  window.addEventListener("pagehide", function () {
    stopped = true;
    if (socket) socket.close(1000);
  });
  window.addEventListener("pageshow", function (e) {
    if (e.persisted && stopped) { stopped = false; connect(); }
  });

  window.orchestraInbox = {
    get socket() { return socket; },
    get frames() { return frames; }
  };
  connect();
})();
