// demandscope queues: answer the review and audit queues with the keyboard alone.
// V/F value or failure, N not a demand, 1-9 a purpose (P focuses the list for type-ahead), K the next
// failure kind, Enter confirm and next, Backspace undo the last decision, S skip.
// Progressive enhancement: without this script the same forms work with the mouse or Tab.
(function () {
  "use strict";

  function submit(id) {
    var form = document.getElementById(id);
    if (!form) return false;
    var button = form.querySelector("button[type=submit]");
    if (button && button.disabled) return false;
    form.requestSubmit(); // htmx (hx-boost) sends it and swaps in the next item
    return true;
  }

  function choose(select, index) {
    var options = Array.prototype.filter.call(select.options, function (o) {
      return o.value !== "";
    });
    if (index < options.length) select.value = options[index].value;
  }

  function nextKind(select) {
    select.selectedIndex = (select.selectedIndex + 1) % select.options.length;
    if (select.value !== "") {
      var failure = document.querySelector("#answer input[data-key=f]");
      if (failure) failure.checked = true;
    }
  }

  document.addEventListener("keydown", function (event) {
    var form = document.getElementById("answer");
    if (!form || event.ctrlKey || event.metaKey || event.altKey || event.isComposing) return;
    var target = event.target;
    var tag = target && target.tagName;
    var typing = tag === "INPUT" && target.type !== "radio" ? true : tag === "TEXTAREA";
    if (event.key === "Enter") {
      if (tag === "BUTTON" || tag === "A" || (tag === "SELECT" && !form.contains(target))) return;
      event.preventDefault();
      submit("answer");
      return;
    }
    if (event.key === "Escape" && target && target.blur) {
      target.blur();
      return;
    }
    // In a list, letters are the browser's own type-ahead; in a text field, text.
    if (typing || tag === "SELECT") return;
    var key = event.key.toLowerCase();
    var handled = true;
    if (key === "v" || key === "f" || key === "n") {
      var radio = form.querySelector("input[data-key=" + key + "]");
      if (radio) radio.checked = true;
      if (key !== "f") form.querySelector("[data-kinds]").value = "";
    } else if (/^[1-9]$/.test(key)) {
      choose(form.querySelector("[data-purposes]"), Number(key) - 1);
    } else if (key === "p") {
      form.querySelector("[data-purposes]").focus();
    } else if (key === "k") {
      nextKind(form.querySelector("[data-kinds]"));
    } else if (key === "s") {
      handled = submit("skip");
    } else if (event.key === "Backspace") {
      handled = submit("undo");
    } else {
      handled = false;
    }
    if (handled) event.preventDefault();
  });
})();
