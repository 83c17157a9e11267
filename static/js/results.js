// Live dashboard: while the study is open, poll the cheap vote fingerprint every 15 s and reload the page only
// when votes or quality-control flags changed (the server recomputes once per change, not per poll).
(function () {
  "use strict";
  var root = document.querySelector("[data-results-live]");
  if (!root) { return; }
  var url = root.getAttribute("data-fingerprint-url");
  var current = root.getAttribute("data-fingerprint");
  var note = document.querySelector("[data-live-note]");
  var INTERVAL_MS = 15000;

  function poll() {
    if (document.hidden) { return; }
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        if (!data) { return; }
        if (data.fingerprint !== current) {
          if (note) { note.textContent = "New votes: updating…"; }
          window.location.reload();
        } else if (note) {
          note.textContent = "Live: checked " + new Date().toLocaleTimeString() + "; no new votes.";
        }
      })
      .catch(function () {
        if (note) { note.textContent = "Live updates paused: the server did not answer; retrying."; }
      });
  }
  window.setInterval(poll, INTERVAL_MS);
})();
