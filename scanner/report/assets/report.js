// dfscan report: sort the table by a column, filter videos by verdict and text.
// Plain DOM, no framework, no network. Sections and table rows share data-id.
(function () {
  "use strict";
  var table = document.querySelector("table.videos");
  if (!table) return;
  var tbody = table.tBodies[0];

  function key(tr, col, type) {
    var v = tr.cells[col].getAttribute("data-v");
    if (v === null) v = tr.cells[col].textContent;
    if (type === "num") { var n = parseFloat(v); return isNaN(n) ? -Infinity : n; }
    return v.toLowerCase();
  }

  function sortBy(th) {
    var col = th.cellIndex, type = th.getAttribute("data-type") || "str";
    var dir = th.getAttribute("aria-sort") === "descending" ? 1 : -1;
    if (!th.hasAttribute("aria-sort") && type === "str") dir = 1;
    table.querySelectorAll("th[aria-sort]").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
    var rows = Array.prototype.slice.call(tbody.rows);
    rows.sort(function (a, b) {
      var x = key(a, col, type), y = key(b, col, type);
      return x < y ? -dir : x > y ? dir : 0;
    });
    rows.forEach(function (r) { tbody.appendChild(r); });
  }

  table.querySelectorAll("th").forEach(function (th) {
    th.addEventListener("click", function () { sortBy(th); });
  });

  var boxes = document.querySelectorAll("input.verdict-filter");
  var search = document.querySelector("input.text-filter");
  var shown = document.querySelector(".shown-count");

  function applyFilter() {
    var on = {};
    boxes.forEach(function (b) { on[b.value] = b.checked; });
    var q = search ? search.value.trim().toLowerCase() : "";
    var n = 0;
    Array.prototype.forEach.call(tbody.rows, function (tr) {
      var ok = on[tr.getAttribute("data-verdict")] !== false &&
        (!q || tr.getAttribute("data-path").toLowerCase().indexOf(q) >= 0);
      tr.hidden = !ok;
      var sec = document.getElementById(tr.getAttribute("data-id"));
      if (sec) sec.hidden = !ok;
      if (ok) n++;
    });
    if (shown) shown.textContent = n;
  }

  boxes.forEach(function (b) { b.addEventListener("change", applyFilter); });
  if (search) search.addEventListener("input", applyFilter);

  // Following a link to a collapsed section opens it.
  tbody.addEventListener("click", function (e) {
    var a = e.target.closest("a[href^='#']");
    if (!a) return;
    var sec = document.getElementById(a.getAttribute("href").slice(1));
    if (sec && sec.tagName === "DETAILS") sec.open = true;
  });
  applyFilter();
})();
