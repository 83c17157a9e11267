// Pair page: keeps "Submit" off until both GIFs have loaded and played through once, restarts both clips
// together on "Replay both", and stops a double submit. No inline scripts, so a strict CSP can forbid them.
(function () {
  'use strict';
  var form = document.getElementById('vote-form');
  if (!form) { return; }
  var submit = document.getElementById('submit-vote');
  var hint = document.getElementById('submit-hint');
  var status = document.getElementById('play-status');
  var replay = document.getElementById('replay');
  var clips = Array.prototype.slice.call(document.querySelectorAll('img.clip'));
  // The longer of the two clip durations, rendered by the server as one number for both sides.
  var playMs = parseInt(form.getAttribute('data-play-ms') || '0', 10) || 0;
  var started = performance.now();
  var played = false;
  var sending = false;
  var replays = 0;

  function loaded(img) {
    return new Promise(function (resolve, reject) {
      if (img.complete && img.naturalWidth > 0) { resolve(img); return; }
      img.addEventListener('load', function () { resolve(img); }, { once: true });
      img.addEventListener('error', function () { reject(img); }, { once: true });
    });
  }

  function refresh() {
    submit.disabled = !played || sending;
    if (played) { hint.textContent = 'Answer every question, then submit.'; }
  }

  Promise.all(clips.map(loaded)).then(function () {
    status.textContent = 'Playing both videos…';
    window.setTimeout(function () {
      played = true;
      status.textContent = 'Both videos have played. Use “Replay both” to watch them again.';
      refresh();
    }, playMs);
  }, function () {
    status.textContent = 'A video did not load. Press “Replay both” or reload the page.';
  });

  // Restart both at the same moment: fetch both again under one fresh query, then swap them in together.
  replay.addEventListener('click', function () {
    replays += 1;
    replay.disabled = true;
    status.textContent = 'Reloading both videos…';
    var fresh = clips.map(function (img) {
      var pre = new Image();
      pre.src = img.getAttribute('data-src') + '?r=' + replays;
      return loaded(pre);
    });
    Promise.all(fresh).then(function (pres) {
      pres.forEach(function (pre, i) { clips[i].src = pre.src; });
      status.textContent = played ? 'Replaying both videos.' : 'Playing both videos…';
    }, function () {
      status.textContent = 'A video did not load. Try again or reload the page.';
    }).then(function () { replay.disabled = false; });
  });

  form.addEventListener('submit', function (event) {
    if (!played || sending) { event.preventDefault(); return; }
    sending = true;
    form.elements.client_time_ms.value = String(Math.round(performance.now() - started));
    // Disabled after the submission has started: the click still sends the form once, a second does not.
    window.setTimeout(refresh, 0);
  });

  // Coming back with the Back button restores this page from cache: let it be used again.
  window.addEventListener('pageshow', function (event) {
    if (event.persisted) { sending = false; refresh(); }
  });

  var error = document.getElementById('vote-error');
  if (error) {
    var firstMissing = form.querySelector('fieldset.missing input');
    (firstMissing || error).focus();
  }
}());
