/* The approval page: an edit of the arguments is never dropped.
 *
 * While the arguments box holds what the call would run with anyway, "Approve" (and the
 * approvals for the rest of the run) are on and "Edit and approve" is off. Once the box is
 * edited it is the other way round, and a hint says why: a plain approval runs the call as
 * proposed. Whitespace and key order are not edits: the JSON values are compared. The
 * server refuses a plain approve with edited arguments anyway; this only says so earlier.
 */
(function () {
  "use strict";

  var box = document.querySelector("[data-arguments-box]");
  if (!box) return;
  var original = box.getAttribute("data-arguments-box");
  var plain = document.querySelectorAll("[data-plain-approve]");
  var edit = document.querySelector("[data-edit-approve]");
  var hint = document.getElementById("edited-hint");

  function canonical(value) {
    if (Array.isArray(value)) return "[" + value.map(canonical).join(",") + "]";
    if (value && typeof value === "object") {
      return "{" + Object.keys(value).sort().map(function (key) {
        return JSON.stringify(key) + ":" + canonical(value[key]);
      }).join(",") + "}";
    }
    return JSON.stringify(value);
  }

  function edited() {
    if (box.value === original) return false;
    try {
      return canonical(JSON.parse(box.value)) !== canonical(JSON.parse(original));
    } catch (error) {
      return true; // not JSON (yet): an edit, which "Edit and approve" will check
    }
  }

  function update() {
    var changed = edited();
    plain.forEach(function (button) {
      button.disabled = changed;
      if (changed) button.setAttribute("aria-describedby", "edited-hint");
      else button.removeAttribute("aria-describedby");
    });
    if (edit) edit.disabled = !changed;
    if (hint) hint.hidden = !changed;
  }

  box.addEventListener("input", update);
  update();
})();
