// demandscope pages: draw each chart from the Vega-Lite spec embedded beside it.
// Progressive enhancement only: without this script (or without the vendored libraries)
// every figure is still on the page as a table.
(function () {
  "use strict";

  function draw(root) {
    if (typeof window.vegaEmbed !== "function") return;
    root.querySelectorAll("[data-chart]").forEach(function (el) {
      if (el.dataset.drawn) return;
      var source = document.getElementById("spec-" + el.dataset.chart);
      if (!source) return;
      el.dataset.drawn = "pending";
      window
        .vegaEmbed(el, JSON.parse(source.textContent), { renderer: "svg", actions: false })
        .then(function () {
          el.dataset.drawn = "yes";
        })
        .catch(function (error) {
          el.dataset.drawn = "failed";
          el.textContent = "This chart could not be drawn (" + error + "): see the table.";
        });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    draw(document);
  });
  document.addEventListener("htmx:load", function (event) {
    draw(event.target);
  });
})();
