// Pair page: keeps "Submit" off until both clips have played through once, plays the two clips together, and
// stops a double submit. No inline scripts, so a strict CSP can forbid them.
//
// Videos (MP4/WebM): one clock for both. The left video is the master; the right follows it. They start, pause,
// seek, step and loop together (the native `loop` is off: two independent loops drift apart, so the end of the
// master restarts both at once), and while they play every animation frame compares the frames the two have
// presented (requestVideoFrameCallback's mediaTime) and pulls the follower back if it is off by half a frame.
// The measured drift, in frames, is kept on the player element (data-max-drift-frames, data-drift-samples,
// data-loops) for the browser test and for anyone checking the page with the developer tools.
// GIFs: "Replay both" restarts both at one moment; "Pause" freezes each on its current frame (a canvas copy).
(function () {
  'use strict';
  var form = document.getElementById('vote-form');
  if (!form) { return; }
  var submit = document.getElementById('submit-vote');
  var hint = document.getElementById('submit-hint');
  var status = document.getElementById('play-status');
  var player = document.getElementById('player');
  // The longer of the two clip durations, rendered by the server as one number for both sides.
  var playMs = parseInt(form.getAttribute('data-play-ms') || '0', 10) || 0;
  var reduceMotion = window.matchMedia && window.matchMedia('(prefers-reduced-motion: reduce)').matches;
  var started = performance.now();
  var played = false;
  var sending = false;

  function refresh() {
    submit.disabled = !played || sending;
    if (played) { hint.textContent = 'Answer every question, then submit.'; }
  }

  function setPlayed(message) {
    if (played) { return; }
    played = true;
    player.setAttribute('data-played', 'true');
    status.textContent = message;
    refresh();
  }

  if (player.getAttribute('data-kind') === 'video') { videoPlayer(); } else { gifPlayer(); }

  function gifPlayer() {
    var replay = document.getElementById('replay');
    var pauseBtn = document.getElementById('pause-gif');
    var clips = Array.prototype.slice.call(document.querySelectorAll('img.clip'));
    var replays = 0;
    var frozen = [];
    var playTimer = null;

    function loaded(img) {
      return new Promise(function (resolve, reject) {
        if (img.complete && img.naturalWidth > 0) { resolve(img); return; }
        img.addEventListener('load', function () { resolve(img); }, { once: true });
        img.addEventListener('error', function () { reject(img); }, { once: true });
      });
    }
    // The first-frame poster under each GIF goes once the GIF itself is there (it must never show through).
    clips.forEach(function (img) {
      loaded(img).then(function () {
        var poster = img.parentNode.querySelector('img.poster');
        if (poster) { poster.remove(); }
      }, function () {});
    });
    // The form unlocks after both GIFs have been on screen, unpaused, for one full play.
    function countPlay() {
      window.clearTimeout(playTimer);
      playTimer = window.setTimeout(function () {
        setPlayed('Both videos have played. Use “Replay both” to watch them again.');
      }, playMs);
    }
    function freeze() {  // a canvas holding the frame each GIF shows now, laid over it
      frozen = clips.map(function (img) {
        var canvas = document.createElement('canvas');
        canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
        canvas.className = 'clip';
        canvas.setAttribute('role', 'img');
        canvas.setAttribute('aria-label', img.alt + ' (paused)');
        canvas.getContext('2d').drawImage(img, 0, 0);
        img.hidden = true;
        img.parentNode.insertBefore(canvas, img);
        return canvas;
      });
      window.clearTimeout(playTimer);
    }
    function restart() {
      replays += 1;
      replay.disabled = true;
      status.textContent = 'Reloading both videos…';
      var fresh = clips.map(function (img) {
        var pre = new Image();
        pre.src = img.getAttribute('data-src') + '?r=' + replays;
        return loaded(pre);
      });
      return Promise.all(fresh).then(function (pres) {
        frozen.forEach(function (c) { c.remove(); });
        frozen = [];
        pres.forEach(function (pre, i) { clips[i].src = pre.src; clips[i].hidden = false; });
        pauseBtn.setAttribute('aria-pressed', 'false');
        pauseBtn.textContent = 'Pause';
        status.textContent = played ? 'Replaying both videos.' : 'Playing both videos…';
        countPlay();
      }, function () {
        status.textContent = 'A video did not load. Try again or reload the page.';
      }).then(function () { replay.disabled = false; });
    }

    Promise.all(clips.map(loaded)).then(function () {
      if (reduceMotion) {  // WCAG 2.2.2 and the user's setting: nothing moves until asked
        freeze();
        pauseBtn.setAttribute('aria-pressed', 'true');
        pauseBtn.textContent = 'Play both';
        status.textContent = 'Paused because your device asks for reduced motion. Press “Play both” to start.';
        return;
      }
      status.textContent = 'Playing both videos…';
      countPlay();
    }, function () {
      status.textContent = 'A video did not load. Press “Replay both” or reload the page.';
    });
    replay.addEventListener('click', restart);
    pauseBtn.addEventListener('click', function () {
      if (frozen.length) { restart(); return; }
      freeze();
      pauseBtn.setAttribute('aria-pressed', 'true');
      pauseBtn.textContent = 'Play both';
      status.textContent = 'Paused. “Play both” starts both from the beginning.';
    });
  }

  function videoPlayer() {
    var left = document.getElementById('clip-left');
    var right = document.getElementById('clip-right');
    var both = [left, right];
    var playBtn = document.getElementById('play-pause');
    var back = document.getElementById('step-back');
    var forward = document.getElementById('step-forward');
    var half = document.getElementById('half-speed');
    var zoomBtn = document.getElementById('zoom');
    var scrub = document.getElementById('scrub');
    var readout = document.getElementById('frame-readout');
    var clipsArea = document.getElementById('clips');
    var fps = parseFloat(player.getAttribute('data-fps')) || 8;
    var nFrames = parseInt(player.getAttribute('data-frames'), 10) || 1;
    var frameS = 1 / fps;
    var playing = false;
    var restarting = false;
    var presented = [0, 0];  // mediaTime of the frame each video shows now
    var maxDrift = 0, samples = 0, loops = 0;
    var histogram = [0, 0, 0];  // samples 0, 1 and 2+ frames apart
    var hasVFC = 'requestVideoFrameCallback' in HTMLVideoElement.prototype;

    both.forEach(function (v) { v.loop = false; v.muted = true; v.playbackRate = 1; });

    function ready(v) {
      return new Promise(function (resolve, reject) {
        if (v.readyState >= 3) { resolve(); return; }
        v.addEventListener('canplay', function () { resolve(); }, { once: true });
        v.addEventListener('error', reject, { once: true });
        var source = v.querySelector('source');
        if (source) { source.addEventListener('error', reject, { once: true }); }
      });
    }
    function seeked(v) {
      return new Promise(function (resolve) {
        if (!v.seeking) { resolve(); return; }
        v.addEventListener('seeked', function () { resolve(); }, { once: true });
      });
    }
    function duration() { return Math.min(left.duration || nFrames * frameS, right.duration || nFrames * frameS); }
    function frameAt(t) { return Math.max(0, Math.min(nFrames - 1, Math.floor(t * fps + 1e-3))); }

    // Every frame each video presents: its mediaTime (what is on screen, not the clock behind it).
    function watch(v, i) {
      if (!hasVFC) { return; }
      var cb = function (_now, meta) { presented[i] = meta.mediaTime; v.requestVideoFrameCallback(cb); };
      v.requestVideoFrameCallback(cb);
    }
    watch(left, 0);
    watch(right, 1);

    function show() {
      var f = frameAt(left.currentTime);
      scrub.value = String(f);
      readout.textContent = 'Frame ' + (f + 1) + ' of ' + nFrames;
    }
    function setPlaying(on) {
      playing = on;
      playBtn.textContent = on ? 'Pause both' : 'Play both';
      player.setAttribute('data-playing', on ? 'true' : 'false');
    }
    function seekBoth(t) {
      both.forEach(function (v) { v.currentTime = t; });
      return Promise.all(both.map(seeked)).then(function () {
        presented = [left.currentTime, right.currentTime];
        show();
      });
    }
    function toFrame(f) {  // the middle of frame f: no rounding at a frame boundary can land on its neighbour
      f = Math.max(0, Math.min(nFrames - 1, f));
      return seekBoth((f + 0.5) * frameS);
    }
    function play() {
      setPlaying(true);
      status.textContent = played ? 'Playing both videos.' : 'Playing both videos…';
      return Promise.all(both.map(function (v) { return v.play(); })).catch(function () {
        setPlaying(false);
        status.textContent = 'The browser did not start the videos. Press “Play both”.';
      });
    }
    function pause() {
      setPlaying(false);
      both.forEach(function (v) { v.pause(); });
      status.textContent = 'Paused. Step with the frame buttons or the scrub bar; both videos move together.';
      // Line the follower up on the master's frame, so a paused pair always shows one moment.
      return toFrame(frameAt(left.currentTime));
    }
    function step(delta) {
      var f = frameAt(left.currentTime);
      var go = function () { return toFrame(f + delta); };
      if (playing) { return pause().then(go); }
      return go();
    }
    // The form unlocks once each video has played (not been scrubbed) over its whole length.
    function coverage(v) {
      var total = 0;
      for (var i = 0; i < v.played.length; i += 1) { total += v.played.end(i) - v.played.start(i); }
      return total;
    }
    function checkPlayed() {
      if (played) { return; }
      var need = duration() - 1.5 * frameS;
      if (coverage(left) >= need && coverage(right) >= need) {
        setPlayed('Both videos have played. Pause, step or scrub to compare frames.');
      }
    }
    // The end of either restarts both from frame one together (the master leads; the follower waits for it).
    function restart() {
      if (restarting) { return; }
      restarting = true;
      both.forEach(function (v) { v.pause(); });
      loops += 1;
      player.setAttribute('data-loops', String(loops));
      checkPlayed();
      seekBoth(0).then(function () {
        restarting = false;
        if (playing) { return play(); }
        return undefined;
      });
    }
    left.addEventListener('ended', restart);
    right.addEventListener('ended', function () { if (left.ended || duration() - left.currentTime < frameS) { restart(); } });
    both.forEach(function (v) { v.addEventListener('timeupdate', checkPlayed); });

    function tick() {
      if (playing && !restarting && !left.seeking && !right.seeking) {
        var a = hasVFC ? presented[0] : left.currentTime;
        var b = hasVFC ? presented[1] : right.currentTime;
        var d = Math.abs(frameAt(a) - frameAt(b));
        d = Math.min(d, nFrames - d);  // across the loop point, frame n-1 and frame 0 are neighbours
        samples += 1;
        histogram[Math.min(d, 2)] += 1;
        if (d > maxDrift) { maxDrift = d; }
        if (samples % 15 === 0) {
          player.setAttribute('data-max-drift-frames', String(maxDrift));
          player.setAttribute('data-drift-samples', String(samples));
          player.setAttribute('data-drift-histogram', histogram.join(' '));
          if (d > 1) { player.setAttribute('data-last-big-drift', a.toFixed(3) + ' ' + b.toFixed(3)); }
        }
        if (Math.abs(left.currentTime - right.currentTime) > frameS / 2 && !left.ended && !right.ended) {
          right.currentTime = left.currentTime;  // pulled back onto the master's clock
        }
        show();
      }
      window.requestAnimationFrame(tick);
    }

    playBtn.addEventListener('click', function () { if (playing) { pause(); } else { play(); } });
    back.addEventListener('click', function () { step(-1); });
    forward.addEventListener('click', function () { step(1); });
    half.addEventListener('click', function () {
      var slow = half.getAttribute('aria-pressed') !== 'true';
      half.setAttribute('aria-pressed', slow ? 'true' : 'false');
      both.forEach(function (v) { v.playbackRate = slow ? 0.5 : 1; });
    });
    scrub.addEventListener('input', function () {
      var f = parseInt(scrub.value, 10) || 0;
      if (playing) { setPlaying(false); both.forEach(function (v) { v.pause(); }); }
      toFrame(f);
    });

    // Synchronised zoom: both clips magnified 2x around the same point, chosen by a click or tap on either
    // clip, or moved with the arrow keys while the clips have focus.
    var origin = [50, 50];
    function applyOrigin() {
      both.forEach(function (v) { v.style.transformOrigin = origin[0] + '% ' + origin[1] + '%'; });
    }
    function setZoom(on) {
      zoomBtn.setAttribute('aria-pressed', on ? 'true' : 'false');
      player.classList.toggle('zoomed', on);
      clipsArea.tabIndex = on ? 0 : -1;
      status.textContent = on ? 'Zoomed 2×: click or tap a clip (or use the arrow keys on the clips) to move '
        + 'the region; both clips show the same one.' : 'Zoom off.';
    }
    zoomBtn.addEventListener('click', function () { setZoom(zoomBtn.getAttribute('aria-pressed') !== 'true'); });
    both.forEach(function (v) {
      v.parentNode.addEventListener('click', function (event) {
        if (!player.classList.contains('zoomed')) { return; }
        var box = v.parentNode.getBoundingClientRect();
        origin = [Math.round(100 * (event.clientX - box.left) / box.width),
          Math.round(100 * (event.clientY - box.top) / box.height)];
        applyOrigin();
      });
    });
    clipsArea.addEventListener('keydown', function (event) {
      if (!player.classList.contains('zoomed')) { return; }
      var moves = { ArrowLeft: [-10, 0], ArrowRight: [10, 0], ArrowUp: [0, -10], ArrowDown: [0, 10] };
      var m = moves[event.key];
      if (!m) { return; }
      event.preventDefault();
      origin = [Math.max(0, Math.min(100, origin[0] + m[0])), Math.max(0, Math.min(100, origin[1] + m[1]))];
      applyOrigin();
    });

    // Shortcuts, except while typing or choosing an answer (Space and arrows belong to the form there).
    document.addEventListener('keydown', function (event) {
      var t = event.target;
      if (event.ctrlKey || event.metaKey || event.altKey) { return; }
      if (t && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.tagName === 'SELECT')) { return; }
      var actions = { k: function () { playBtn.click(); }, ',': function () { step(-1); },
        '.': function () { step(1); }, s: function () { half.click(); }, z: function () { zoomBtn.click(); } };
      var act = actions[event.key.toLowerCase()];
      if (act) { event.preventDefault(); act(); }
    });

    Promise.all(both.map(ready)).then(function () {
      player.setAttribute('data-ready', 'true');
      show();
      window.requestAnimationFrame(tick);
      if (reduceMotion) {  // WCAG 2.2.2 and the user's setting: nothing moves until asked
        setPlaying(false);
        status.textContent = 'Paused because your device asks for reduced motion. Press “Play both” to start; '
          + 'the answers unlock once both have played through.';
        return undefined;
      }
      return play();
    }, function () {
      status.textContent = 'A video did not load. Reload the page.';
    });
  }

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
