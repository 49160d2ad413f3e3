/* "Phát trực tiếp": the officer's microphone to the clusters through the server's Icecast.
 * The browser's own APIs only (getUserMedia, MediaRecorder, Web Audio): WebM/Opus chunks of
 * 500 ms are posted in order to /api/v1/broadcasts/{id}/mic; the server feeds them to the
 * mount. No source address or password ever reaches this page. */
(function () {
  "use strict";
  var pages = window.LoaPages = window.LoaPages || {};
  var CHUNK_MS = 500;

  function show(node, text, ok) {
    node.hidden = false;
    node.textContent = text;
    node.className = "flash " + (ok === null ? "pending" : (ok ? "ok" : "error"));
  }

  function checked(form, name) {
    return Array.prototype.slice.call(form.querySelectorAll("input[name=" + name + "]:checked"))
      .map(function (i) { return Number(i.value); });
  }

  function newKey() {
    if (window.crypto && window.crypto.randomUUID) return window.crypto.randomUUID();
    var a = new Uint8Array(16); window.crypto.getRandomValues(a);
    return Array.prototype.map.call(a, function (b) { return (b < 16 ? "0" : "") + b.toString(16); }).join("");
  }

  pages.live = function (L) {
    var api = L.api, el = L.el, _ = L._;
    var form = document.getElementById("live-form");
    var msg = document.getElementById("live-msg");
    var summary = document.getElementById("live-summary");
    var startBtn = document.getElementById("live-start");
    var stopBtn = document.getElementById("live-stop");
    var pending = null, session = null;

    form.addEventListener("change", function (ev) {
      var t = ev.target;  // "Toàn xã" and its villages exclude each other
      if (t.name === "commune" && t.checked) {
        form.querySelectorAll("input[name=village][data-commune='" + t.value + "']").forEach(function (v) { v.checked = false; });
      } else if (t.name === "village" && t.checked) {
        form.querySelectorAll("input[name=commune][value='" + t.dataset.commune + "']").forEach(function (c) { c.checked = false; });
      }
      summary.hidden = true; pending = null;
    });

    function body() {
      return { title: form.title.value.trim() || _("Phát trực tiếp"), stream: true, start_at: "now",
        duration_s: Number(form.duration_s.value),
        targets: { communes: checked(form, "commune"), villages: checked(form, "village") } };
    }

    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var b = body();
      if (!b.targets.communes.length && !b.targets.villages.length) {
        show(msg, _("Chưa chọn nơi phát: hãy chọn «Toàn xã» hoặc ít nhất một thôn."), false);
        return;
      }
      if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia || !window.MediaRecorder) {
        show(msg, _("Trình duyệt này không cho dùng micrô ở đây. Hãy mở trang qua https bằng Chrome hoặc Firefox."), false);
        return;
      }
      show(msg, _("Đang kiểm tra…"), null);
      api("POST", "/api/v1/broadcasts/check", b).then(function (res) {
        if (!res.ok) { show(msg, L.errorText(res), false); return; }
        msg.hidden = true;
        var d = res.data, dl = document.getElementById("live-summary-list");
        L.clear(dl);
        function term(label, value, key) {
          dl.appendChild(el("dt", null, label));
          dl.appendChild(el("dd", { dataset: { summary: key } }, value));
        }
        term(_("Nơi phát"), d.places.text + " · " + _("{n} cụm loa", { n: d.places.clusters }) +
          (d.places.offline ? " (" + _("{n} cụm đang mất kết nối", { n: d.places.offline }) + ")" : ""), "where");
        term(_("Giờ phát"), _("Phát ngay"), "when");
        term(_("Thời lượng tối đa"), d.duration, "duration");
        pending = { body: b, key: newKey(), where: d.places.text };
        summary.hidden = false;
        startBtn.disabled = false;
        startBtn.focus();
      });
    });
    document.getElementById("live-back").addEventListener("click", function () { summary.hidden = true; pending = null; });

    startBtn.addEventListener("click", function () {
      if (!pending || startBtn.disabled) return;
      var send = pending;
      startBtn.disabled = true;
      show(msg, _("Đang xin dùng micrô…"), null);
      navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: true, noiseSuppression: true } }).then(function (stream) {
        show(msg, _("Đang gửi…"), null);
        return fetch("/api/v1/broadcasts", { method: "POST", credentials: "same-origin", body: JSON.stringify(send.body),
          headers: { "Accept": "application/json", "Content-Type": "application/json",
            "X-CSRF-Token": L.PAGE.csrf || "", "Idempotency-Key": send.key } })
          .then(function (r) { return r.json().then(function (data) { return { ok: r.ok, status: r.status, data: data }; }); })
          .then(function (res) {
            if (!res.ok) { stream.getTracks().forEach(function (t) { t.stop(); }); throw res; }
            goLive(res.data, stream, send.where);
          });
      }).catch(function (err) {
        startBtn.disabled = false;
        if (err && err.status !== undefined) show(msg, L.errorText(err), false);
        else show(msg, _("Không dùng được micrô: hãy cho phép trình duyệt dùng micrô rồi thử lại."), false);
      });
    });

    function goLive(b, stream, where) {
      pending = null;
      document.getElementById("live-setup").hidden = true;
      document.getElementById("live-on").hidden = false;
      document.getElementById("live-title").textContent = b.title;
      document.getElementById("live-where").textContent = _("Phát tới") + ": " + where;
      var mime = ["audio/webm;codecs=opus", "audio/webm", "audio/ogg;codecs=opus"].filter(function (m) {
        return MediaRecorder.isTypeSupported(m); })[0];
      var rec = new MediaRecorder(stream, mime ? { mimeType: mime, audioBitsPerSecond: 48000 } : undefined);
      session = { id: b.id, stream: stream, rec: rec, seq: 0, queue: Promise.resolve(), ended: false };
      document.getElementById("live-on").dataset.broadcast = String(b.id);
      rec.addEventListener("dataavailable", function (ev) {
        if (!ev.data || !ev.data.size || session.ended) return;
        var seq = session.seq++, blob = ev.data;
        session.queue = session.queue.then(function () { return post(seq, blob, 3); });
      });
      rec.start(CHUNK_MS);
      meter(stream);
      poll();
    }

    function post(seq, blob, tries) {
      return fetch("/api/v1/broadcasts/" + session.id + "/mic?seq=" + seq, { method: "POST", credentials: "same-origin",
        body: blob, headers: { "Content-Type": "application/octet-stream", "X-CSRF-Token": L.PAGE.csrf || "" } })
        .then(function (r) {
          if (r.ok) return;
          if (r.status === 409) { finish(false); return; }  // the broadcast ended on the server
          if (tries > 1) return post(seq, blob, tries - 1);
        }, function () { if (tries > 1) return new Promise(function (ok) { setTimeout(ok, 300); }).then(function () { return post(seq, blob, tries - 1); }); });
    }

    function meter(stream) {
      var AC = window.AudioContext || window.webkitAudioContext;
      if (!AC) return;
      var ctx = new AC(), an = ctx.createAnalyser(), buf = new Float32Array(1024), bar = document.getElementById("live-level");
      an.fftSize = 1024;
      ctx.createMediaStreamSource(stream).connect(an);
      session.audio = ctx;
      (function tick() {
        if (session.ended) return;
        an.getFloatTimeDomainData(buf);
        var sum = 0;
        for (var i = 0; i < buf.length; i++) sum += buf[i] * buf[i];
        bar.value = Math.min(1, Math.sqrt(sum / buf.length) * 3);
        bar.dataset.level = bar.value.toFixed(3);
        requestAnimationFrame(tick);
      })();
    }

    function poll() {
      if (!session || session.done) return;
      api("GET", "/api/v1/broadcasts/" + session.id + "/mic").then(function (res) {
        if (res.ok) render(res.data);
        if (!session.done) setTimeout(poll, 1500);
      });
    }

    function render(d) {
      var state = document.getElementById("live-state");
      var f = d.feed || {};
      var text = f.state === "on_air" ? _("Đang phát trực tiếp") : f.state === "failed" ? _("Phát trực tiếp bị lỗi") + ": " + (f.error || "")
        : f.state === "stopped" ? _("Đã dừng") : _("Đang kết nối…");
      if (["cancelled", "failed", "aired", "partly_aired", "missed"].indexOf(d.status) >= 0 && f.state !== "on_air") text += " · " + _(d.status_label || d.status);
      state.textContent = text;
      state.dataset.state = f.state || "";
      document.getElementById("live-listeners").textContent = String(d.listeners);
      var list = document.getElementById("live-nodes");
      L.clear(list);
      d.outcomes.forEach(function (o) {
        list.appendChild(el("li", { class: "mini-card", dataset: { phase: o.phase || "" } },
          el("strong", null, o.place || "–"), el("br"), _(o.phase_label || o.phase || "") + (o.error ? " · " + o.error : "")));
      });
      if (f.state === "failed" && !session.ended) finish(false);
    }

    function finish(stopServer) {
      if (!session || session.ended) return Promise.resolve();
      session.ended = true;
      try { if (session.rec.state !== "inactive") session.rec.stop(); } catch (e) { /* already stopped */ }
      session.stream.getTracks().forEach(function (t) { t.stop(); });
      if (session.audio) session.audio.close();
      stopBtn.disabled = true;
      if (!stopServer) { setTimeout(function () { session.done = true; }, 5000); return Promise.resolve(); }
      return session.queue.then(function () {
        return api("POST", "/api/v1/broadcasts/" + session.id + "/mic/stop");
      }).then(function (res) {
        if (!res.ok) document.getElementById("live-state").textContent = L.errorText(res);
        setTimeout(function () { session.done = true; }, 8000);  // the clusters' last reports
      });
    }

    stopBtn.addEventListener("click", function () { finish(true); });
  };
})();
