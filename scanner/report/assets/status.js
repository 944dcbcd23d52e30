// dfscan live status page: polls the JSON API (GET streams) and fills the table.
// Values are set with textContent only (stream names and errors come from users).
// A bearer token, when the API needs one, comes from the URL fragment (#token=...,
// never sent to the server in the URL) or the form, and is kept in sessionStorage.
(function () {
  "use strict";
  var KEY = "dfscan-token", PERIOD_MS = 2000;
  var m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (m) {
    var given = m[1];
    try { given = decodeURIComponent(given); } catch (e) { /* a stray "%": the token as typed */ }
    sessionStorage.setItem(KEY, given);
    history.replaceState(null, "", location.pathname + location.search);
  }
  var tbody = document.querySelector("#streams tbody");
  var status = document.getElementById("api-status");
  var form = document.getElementById("token-form");

  function cell(tr, text, cls) {
    var td = document.createElement("td");
    if (cls) td.className = cls;
    td.textContent = text === null || text === undefined ? "–" : String(text);
    tr.appendChild(td);
    return td;
  }

  function badge(td, text) {
    td.textContent = "";
    var s = document.createElement("span");
    s.className = "badge " + String(text || "").replace(/[^a-z_]/g, "");
    s.textContent = text || "–";
    td.appendChild(s);
  }

  function render(streams) {
    tbody.textContent = "";
    streams.forEach(function (s) {
      var tr = document.createElement("tr");
      tr.setAttribute("data-name", s.name);
      cell(tr, s.name, "name");
      cell(tr, s.url, "path");
      badge(cell(tr, ""), s.state);
      cell(tr, s.state_for_s === undefined ? null : Math.round(s.state_for_s) + " s", "num");
      cell(tr, s.fps, "num");
      cell(tr, s.frames_sampled, "num");
      cell(tr, s.frames_dropped, "num");
      cell(tr, s.reconnects, "num");
      cell(tr, s.faces, "num");
      cell(tr, typeof s.score === "number" ? s.score.toFixed(3) : null, "num score");
      badge(cell(tr, "", "verdict"), s.verdict);
      cell(tr, s.tracks ? Object.keys(s.tracks).length : 0, "num");
      cell(tr, s.last_error, "err");
      tbody.appendChild(tr);
    });
    document.getElementById("stream-count").textContent = streams.length;
  }

  function poll() {
    var token = sessionStorage.getItem(KEY);
    var headers = token ? { "Authorization": "Bearer " + token } : {};
    fetch("streams", { headers: headers, cache: "no-store" }).then(function (r) {
      if (r.status === 401) {
        form.hidden = false;
        throw new Error("the API needs a bearer token");
      }
      if (!r.ok) throw new Error("HTTP " + r.status);
      form.hidden = true;
      return r.json();
    }).then(function (data) {
      render(data.streams || []);
      status.className = "ok";
      status.textContent = "updated " + new Date().toLocaleTimeString();
    }).catch(function (e) {
      status.className = "bad";
      status.textContent = "API: " + e.message;
    });
  }

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    sessionStorage.setItem(KEY, form.elements.token.value);
    form.elements.token.value = "";
    poll();
  });
  poll();
  setInterval(poll, PERIOD_MS);
})();
