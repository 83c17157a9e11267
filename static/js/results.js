// Live dashboard: while the study is open, poll the cheap vote fingerprint every 15 s; when votes or
// quality-control flags changed, bring in the new results (the server recomputes once per change, not per poll).
//
// Never behind the reader's back (WCAG 2.2.1/2.2.2 and 3.2.5): a visible button pauses and resumes the polling
// (remembered for this browser), and the page reloads by itself only when nothing is in the way — not under
// prefers-reduced-motion, not while a control has the focus or text is selected. Otherwise a polite status line
// says new votes are in, with a button to show them. A reload keeps the scroll position (the browser restores it).
(function () {
  "use strict";
  var root = document.querySelector("[data-results-live]");
  if (!root) { return; }
  var url = root.getAttribute("data-fingerprint-url");
  var current = root.getAttribute("data-fingerprint");
  var note = document.querySelector("[data-live-note]");
  var toggle = document.querySelector("[data-live-toggle]");
  var show = document.querySelector("[data-live-show]");
  var checked = document.querySelector("[data-live-checked]");
  var INTERVAL_MS = 15000;
  var KEY = "blindpair.results.live-paused";
  var reduced = window.matchMedia && window.matchMedia("(prefers-reduced-motion: reduce)").matches;
  var timer = null;
  var waiting = false;  // new votes are in and the reader has not asked for them yet

  function paused() {
    try { return window.localStorage.getItem(KEY) === "1"; } catch (e) { return false; }
  }
  function remember(value) {
    try { window.localStorage.setItem(KEY, value ? "1" : "0"); } catch (e) { /* private mode: this page only */ }
  }
  function say(text) { if (note) { note.textContent = text; } }

  // asked: the reader pressed "Resume" (their own request for the news, so the focus on that button is no reason
  // to wait); reduced motion still waits for "Show the new results".
  function busy(asked) {
    if (reduced) { return true; }
    if (asked) { return false; }
    var el = document.activeElement;
    var selected = window.getSelection && String(window.getSelection()).length > 0;
    return selected || (el && el !== document.body && el !== document.documentElement);
  }

  function poll(asked) {
    if (document.hidden || waiting) { return; }
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        if (!data || paused()) { return; }
        if (data.fingerprint === current) {
          // Not in the status line: a screen reader would read it out every 15 s.
          if (checked) { checked.textContent = "Checked " + new Date().toLocaleTimeString() + ": no new votes."; }
        } else if (busy(asked === true)) {
          waiting = true;
          say("New votes are in. The page stays as it is until you choose to update it.");
          if (show) { show.hidden = false; }
        } else {
          say("New votes: updating…");
          window.location.reload();
        }
      })
      .catch(function () { say("Live updates: the server did not answer; retrying."); });
  }

  function render() {
    var off = paused();
    if (toggle) {
      toggle.textContent = off ? "Resume live updates" : "Pause live updates";
      toggle.setAttribute("aria-pressed", off ? "true" : "false");
    }
    if (off) {
      if (timer !== null) { window.clearInterval(timer); timer = null; }
      say("Live updates paused: this page does not check for new votes.");
    } else if (timer === null) {
      timer = window.setInterval(poll, INTERVAL_MS);
      say(reduced ? "Live: new votes are announced here; the page does not update by itself."
        : "Live: this page updates itself when new votes arrive, unless you are using it.");
    }
  }

  if (toggle) {
    toggle.hidden = false;
    toggle.addEventListener("click", function () {
      remember(!paused());
      render();
      if (!paused()) { poll(true); }
    });
  }
  if (show) {
    show.addEventListener("click", function () { window.location.reload(); });
  }
  render();
})();
