/* A model's text while it streams, on the run and step pages (with live.js).
 *
 * live.js hands over the socket's `live` frames ("orc:live-text": the text so far of one
 * agent's model call, at most ten a second) and its stored events ("orc:event"). Each agent
 * writing now gets one entry in #live-text, replaced by every frame; its `model.called`
 * event (the final message, stored once) removes the entry.
 */
(function () {
  "use strict";

  var box = document.getElementById("live-text");
  if (!box) return;
  var list = box.querySelector("ul");
  var onlyStep = box.getAttribute("data-step") || "";

  function entryFor(live) {
    var id = String(live.agent_run);
    var li = list.querySelector('li[data-agent-run="' + id + '"]');
    if (li) return li;
    li = document.createElement("li");
    li.setAttribute("data-agent-run", id);
    var who = document.createElement("p");
    who.className = "small muted";
    who.textContent = (live.step ? "Step " + live.step + " · " : "") + live.role + " is writing…";
    var text = document.createElement("pre");
    text.className = "live-text-body";
    li.appendChild(who);
    li.appendChild(text);
    list.appendChild(li);
    return li;
  }

  document.addEventListener("orc:live-text", function (e) {
    var live = e.detail.live;
    if (!live || (onlyStep && live.step !== onlyStep)) return;
    entryFor(live).querySelector("pre").textContent = live.text;
    box.hidden = false;
  });

  document.addEventListener("orc:event", function (e) {
    var event = e.detail;
    if (event.kind !== "model.called" || !event.data) return;
    var li = list.querySelector('li[data-agent-run="' + String(event.data.agent_run) + '"]');
    if (li) li.remove();
    if (!list.children.length) box.hidden = true;
  });
})();
