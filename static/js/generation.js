// Study page, generation panel: while clips are queued or running, poll the progress API and update the
// per-model counts, ETAs and the summary line in place; stop once nothing is left. A file, not an inline
// script, so the content security policy stays script-src 'self'.
(function () {
  "use strict";
  var POLL_MS = 3000;

  // The same wording as app/web/generation.py's _duration, so a live update reads like a fresh page.
  function duration(seconds) {
    if (seconds === null || seconds === undefined) { return "unknown"; }
    var s = Math.round(seconds);
    if (s < 60) { return s + " s"; }
    var m = Math.floor(s / 60);
    s = s % 60;
    if (m < 60) { return m + " min " + (s < 10 ? "0" : "") + s + " s"; }
    var h = Math.floor(m / 60);
    m = m % 60;
    return h + " h " + (m < 10 ? "0" : "") + m + " min";
  }

  function setText(el, text) {
    if (el && el.textContent !== text) { el.textContent = text; }
  }

  function applyModel(row, m) {
    ["queued", "running", "done", "failed"].forEach(function (key) {
      setText(row.querySelector('[data-gen-field="' + key + '"]'), String(m[key]));
    });
    var failed = row.querySelector('[data-gen-field="failed"]');
    if (failed) { failed.classList.toggle("error", m.failed > 0); }
    setText(row.querySelector('[data-gen-field="median_seconds"]'),
      m.median_seconds === null ? "\u2013" : duration(m.median_seconds));
    setText(row.querySelector('[data-gen-field="eta_seconds"]'),
      m.queued + m.running === 0 ? "\u2013" : duration(m.eta_seconds));
  }

  function applySummary(box, data) {
    var p = box.querySelector("[data-gen-summary]");
    if (!p) { return; }
    p.textContent = "";
    if (!data.remaining) {
      p.textContent = "Nothing waiting.";
      return;
    }
    var text = data.remaining + " clip(s) to go; ";
    if (data.live_workers) {
      p.textContent = text + data.live_workers + " worker(s) busy on " + data.clips_in_flight +
        " clip(s), about " + duration(data.eta_seconds) +
        " left (median clip time x clips left, shared across busy workers and the clips each has in flight).";
      return;
    }
    p.appendChild(document.createTextNode(text + "no worker is generating right now: start one with "));
    var code = document.createElement("code");
    code.textContent = "blindpair worker";
    p.appendChild(code);
    p.appendChild(document.createTextNode("."));
  }

  function start(box) {
    var url = box.getAttribute("data-generation-url");
    var stamp = box.querySelector("[data-gen-updated]");
    var timer = null;

    function finish(message, reloadLink) {
      clearInterval(timer);
      timer = null;
      if (!stamp) { return; }
      stamp.textContent = message + " ";
      if (!reloadLink) { return; }
      var link = document.createElement("a");
      link.href = window.location.pathname + "#generation";
      link.textContent = "Reload for the cost table and any failed clips.";
      link.addEventListener("click", function (ev) { ev.preventDefault(); window.location.reload(); });
      stamp.appendChild(link);
    }

    function apply(data) {
      data.models.forEach(function (m) {
        var row = box.querySelector('[data-gen-model="' + m.model_id + '"]');
        if (row) { applyModel(row, m); }
      });
      applySummary(box, data);
      if (!data.remaining) {
        finish("Generation finished (" + data.totals.done + " done, " + data.totals.failed + " failed).", true);
      } else if (stamp) {
        stamp.textContent = "Updating live; last update " + new Date().toLocaleTimeString() + ".";
      }
    }

    function poll() {
      if (document.hidden || timer === null) { return; }
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (res) {
          if (res.status === 401 || res.status === 403) {
            finish("Not updating: log in again.", false);
            return null;
          }
          return res.ok ? res.json() : null;
        })
        .then(function (data) { if (data && timer !== null) { apply(data); } })
        .catch(function () { setText(stamp, "Server unreachable; retrying."); });
    }

    timer = setInterval(poll, POLL_MS);
    document.addEventListener("visibilitychange", poll);
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-generation-url]").forEach(function (box) {
      // Nothing queued or running when the page was made: nothing will change until someone queues a batch,
      // and queueing from this page reloads it.
      if (Number(box.getAttribute("data-generation-remaining")) > 0) { start(box); }
    });
  });
})();
