/* The trace: fold an agent run's spans under its row, and zoom the time axis.
 *
 * Folding hides the rows that name the run in `data-group`; zooming widens the rows inside
 * the scrolling waterfall (the labels stay put, see orchestra.css), keeping the moment in the
 * middle of the view where it was. Without this script the trace is whole and at 1×.
 */
(function () {
  "use strict";

  var scroll = document.getElementById("wf-scroll");
  var controls = document.getElementById("wf-controls");
  if (!scroll || !controls) return;
  var LEVELS = [1, 2, 4, 8, 16];
  var level = 0;
  var shown = document.getElementById("wf-zoom-level");

  function fold(button) {
    var open = button.getAttribute("aria-expanded") !== "true";
    button.setAttribute("aria-expanded", open ? "true" : "false");
    button.textContent = open ? "▾" : "▸";
    var rows = scroll.querySelectorAll('[data-group="' + button.dataset.fold + '"]');
    rows.forEach(function (row) { row.hidden = !open; });
  }

  function zoom(step) {
    var next = Math.min(Math.max(level + step, 0), LEVELS.length - 1);
    if (next === level) return;
    var middle = (scroll.scrollLeft + scroll.clientWidth / 2) / scroll.scrollWidth;
    level = next;
    scroll.style.setProperty("--zoom", LEVELS[level]);
    shown.textContent = LEVELS[level] + "×";
    scroll.scrollLeft = middle * scroll.scrollWidth - scroll.clientWidth / 2;
  }

  scroll.querySelectorAll("[data-fold]").forEach(function (button) {
    button.hidden = false;
    button.addEventListener("click", function () { fold(button); });
  });
  controls.querySelectorAll("[data-zoom]").forEach(function (button) {
    button.addEventListener("click", function () {
      zoom(button.dataset.zoom === "in" ? 1 : -1);
    });
  });
  controls.hidden = false;
})();
