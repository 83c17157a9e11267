// Researcher pages: live study progress and the invite link's copy button. Loaded as a file so that the
// content security policy never needs 'unsafe-inline'.
(function () {
  "use strict";
  var POLL_MS = 5000;

  function lookup(data, dotted) {
    return dotted.split(".").reduce(function (obj, key) {
      return obj == null ? undefined : obj[key];
    }, data);
  }

  function startProgress(box) {
    var url = box.getAttribute("data-progress-url");
    var stamp = box.querySelector("[data-progress-updated]");
    var timer = null;

    function apply(data) {
      box.ownerDocument.querySelectorAll("[data-progress]").forEach(function (el) {
        var value = lookup(data, el.getAttribute("data-progress"));
        if (value !== undefined) { el.textContent = String(value); }
      });
      var bar = box.querySelector("[data-progress-bar]");
      if (bar) { bar.value = data.percent_complete; bar.textContent = data.percent_complete + "%"; }
      if (stamp) { stamp.textContent = "updated " + new Date().toLocaleTimeString(); }
    }

    function poll() {
      if (document.hidden) { return; }
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (res) {
          if (res.status === 401 || res.status === 403) {
            // Logged out in another tab: stop asking, say so.
            clearInterval(timer);
            if (stamp) { stamp.textContent = "not updating: log in again"; }
            return null;
          }
          return res.ok ? res.json() : null;
        })
        .then(function (data) { if (data) { apply(data); } })
        .catch(function () {
          if (stamp) { stamp.textContent = "server unreachable, retrying"; }
        });
    }

    timer = setInterval(poll, POLL_MS);
    document.addEventListener("visibilitychange", poll);
  }

  function startCopy(button) {
    button.addEventListener("click", function () {
      var input = document.getElementById(button.getAttribute("data-copy-target"));
      if (!input) { return; }
      input.select();
      var done = function () { button.textContent = "Copied"; };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(input.value).then(done, function () { document.execCommand("copy"); done(); });
      } else {
        document.execCommand("copy");
        done();
      }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-progress-url]").forEach(startProgress);
    document.querySelectorAll("[data-copy-target]").forEach(startCopy);
  });
})();
