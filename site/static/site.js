/* PruneBench site script: sortable and filterable leaderboard, plots. Progressive enhancement:
   every page is complete without it. No network access, no dependencies beyond plotly.js. */
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  function sortValue(td) {
    var raw = td.getAttribute("data-sort");
    if (raw === null || raw === "") return null;
    var n = Number(raw);
    return isNaN(n) ? raw : n;
  }

  function sortBy(table, col, th) {
    var dir = th.getAttribute("aria-sort") === "ascending" ? "descending" : "ascending";
    table.querySelectorAll("thead th").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir);
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var sign = dir === "ascending" ? 1 : -1;
    rows.sort(function (a, b) {
      var x = sortValue(a.cells[col]), y = sortValue(b.cells[col]);
      if (x === null) x = a.cells[col].textContent.trim();
      if (y === null) y = b.cells[col].textContent.trim();
      var xe = x === "–" || x === "", ye = y === "–" || y === "";
      if (xe || ye) return xe === ye ? 0 : (xe ? 1 : -1);      /* empty cells last */
      if (typeof x === "number" && typeof y === "number") return sign * (x - y);
      return sign * String(x).localeCompare(String(y));
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }

  function applyFilters(form, table) {
    var active = {};
    form.querySelectorAll("select[data-filter]").forEach(function (s) {
      if (s.value) active[s.getAttribute("data-filter")] = s.value;
    });
    var search = form.querySelector("#search");
    var words = search ? search.value.toLowerCase().split(/\s+/).filter(Boolean) : [];
    var shown = 0, total = table.tBodies[0].rows.length;
    Array.prototype.forEach.call(table.tBodies[0].rows, function (r) {
      var text = ["model", "method", "pattern", "arch"].map(function (k) {
        return r.getAttribute("data-" + k) || ""; }).join(" ").toLowerCase();
      var ok = Object.keys(active).every(function (k) { return r.getAttribute("data-" + k) === active[k]; })
        && words.every(function (w) { return text.indexOf(w) >= 0; });
      r.hidden = !ok;
      if (ok) shown += 1;
    });
    var out = form.querySelector("output");
    if (out) out.textContent = shown + " of " + total + " runs";
  }

  document.querySelectorAll("table.sortable").forEach(function (table) {
    table.querySelectorAll("thead th").forEach(function (th, col) {
      th.addEventListener("click", function () { sortBy(table, col, th); });
    });
  });
  var form = document.getElementById("filters"), runs = document.getElementById("runs");
  if (form && runs) {
    form.addEventListener("change", function () { applyFilters(form, runs); });
    form.addEventListener("input", function () { applyFilters(form, runs); });
    form.addEventListener("submit", function (e) { e.preventDefault(); });
  }

  var groups = document.getElementById("groups");
  if (groups && runs) {
    groups.addEventListener("change", function (e) {
      var g = e.target.getAttribute("data-group");
      if (g) runs.classList.toggle("show-" + g, e.target.checked);
    });
    groups.addEventListener("submit", function (e) { e.preventDefault(); });
  }

  if (window.Plotly) {
    document.querySelectorAll("div.plot[data-spec]").forEach(function (div) {
      var spec = JSON.parse(document.getElementById(div.getAttribute("data-spec")).textContent);
      window.Plotly.newPlot(div, spec.data, spec.layout, {displaylogo: false, responsive: true});
    });
  }
})();
