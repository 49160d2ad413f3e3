/* Commune officer and province pages. Uses window.Loa from loa.js (api, el, _).
 * Everything from the server is inserted with textContent (via Loa.el), never as HTML. */
(function () {
  "use strict";
  var pages = window.LoaPages = window.LoaPages || {};
  var SVG_NS = "http://www.w3.org/2000/svg";
  var ICT_OFFSET_MS = 7 * 3600 * 1000; // Asia/Ho_Chi_Minh has no daylight saving time

  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function ict(ms) { return new Date(ms + ICT_OFFSET_MS); }
  function fmtDate(ms) { var d = ict(ms); return pad(d.getUTCDate()) + "/" + pad(d.getUTCMonth() + 1) + "/" + d.getUTCFullYear(); }
  function fmtHM(ms) { var d = ict(ms); return pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()); }
  function fmtDT(ms) { return fmtDate(ms) + " " + fmtHM(ms); }
  function isoMs(iso) { var t = iso ? Date.parse(iso) : NaN; return isNaN(t) ? null : t; }
  function fmtIso(iso) { var ms = isoMs(iso); return ms === null ? "–" : fmtDT(ms); }
  function dayStart(ms) { var d = ict(ms); return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()) - ICT_OFFSET_MS; }

  function show(node, text, ok) {
    node.hidden = false;
    node.textContent = text;
    node.className = "flash " + (ok === null ? "pending" : (ok ? "ok" : "error"));
  }

  function checkedValues(form, name, asNumber) {
    return Array.prototype.slice.call(form.querySelectorAll("input[name=" + name + "]:checked"))
      .map(function (i) { return asNumber ? Number(i.value) : i.value; });
  }

  /* ------------------------------------------------------------------ content library */

  /* The library card (_library.html): upload with a real progress bar (XMLHttpRequest's
   * upload events), search (the server folds diacritics), play in the page, rename, reuse
   * in a new bulletin (opts.reuse), delete when no bulletin still in play uses it (the
   * server's refusal names them). Buttons appear only where the server says can_manage. */
  pages.library = function (L, opts) {
    var api = L.api, el = L.el, _ = L._;
    var list = document.getElementById("library");
    var search = document.getElementById("library-search");
    var more = document.getElementById("library-more");
    var status = document.getElementById("library-status");
    var PAGE_SIZE = 20;
    var offset = 0;
    var seq = 0;

    function query() {
      var q = search.q.value.trim();
      var url = "/api/v1/content?limit=" + PAGE_SIZE + "&offset=" + offset;
      if (q) url += "&q=" + encodeURIComponent(q);
      if (search.shared.value) url += "&shared=" + search.shared.value;
      return url;
    }

    function load(append) {
      if (!append) offset = 0;
      var mine = ++seq;
      api("GET", query()).then(function (res) {
        if (mine !== seq) return; // a newer search answered first
        if (!append) L.clear(list);
        if (!res.ok) { list.appendChild(el("li", { class: "muted" }, L.errorText(res))); return; }
        if (!res.data.items.length && !append) {
          list.appendChild(el("li", { class: "muted" }, search.q.value.trim()
            ? _("Không tìm thấy âm thanh nào khớp.") : _("Thư viện chưa có âm thanh nào.")));
        }
        res.data.items.forEach(function (it) { list.appendChild(card(it)); });
        offset += res.data.items.length;
        more.hidden = offset >= res.data.total;
        list.dataset.q = search.q.value.trim(); // what the list shows (tests wait on it)
      });
    }

    function meta(it) {
      var parts = [it.duration, it.owner, it.created.slice(0, 10)];
      if (it.in_use) parts.push(_("{n} bản tin đang dùng", { n: it.in_use }));
      return parts.join(" · ");
    }

    function card(it) {
      var li = el("li", { class: "mini-card lib-item", dataset: { contentId: it.id } });
      var title = el("strong", { class: "lib-title" }, it.title);
      var info = el("div", { class: "muted small" }, meta(it));
      var player = el("div", { class: "lib-player" });
      var note = el("p", { class: "flash", role: "status", hidden: true });
      var actions = el("div", { class: "row-form actions" });
      actions.appendChild(el("button", { type: "button", class: "lib-play", onclick: function () {
        if (player.firstChild) { player.firstChild.pause(); L.clear(player); return; }
        var audio = el("audio", { controls: true, preload: "auto", src: it.audio_url });
        player.appendChild(audio);
        var p = audio.play();
        if (p && p.catch) p.catch(function () { /* the controls stay for a manual start */ });
      } }, _("Nghe")));
      if (opts.reuse) {
        actions.appendChild(el("button", { type: "button", class: "primary lib-reuse", onclick: function () { opts.reuse(it); } },
          _("Dùng để phát")));
      }
      if (it.can_manage) {
        actions.appendChild(el("button", { type: "button", class: "lib-rename", onclick: function () { rename(li, it, title, note); } }, _("Đổi tên")));
        actions.appendChild(el("button", { type: "button", class: "danger lib-delete", onclick: function () { remove(li, it, note, actions); } }, _("Xóa")));
      }
      li.appendChild(title); li.appendChild(info); li.appendChild(player); li.appendChild(actions); li.appendChild(note);
      return li;
    }

    function flash(node, text, ok) {
      node.hidden = false; node.textContent = text;
      node.className = "flash " + (ok === null ? "pending" : (ok ? "ok" : "error"));
    }

    function rename(li, it, title, note) {
      if (li.querySelector(".lib-rename-form")) return;
      var input = el("input", { name: "title", maxlength: "300", value: it.title, "aria-label": _("Tên mới") });
      var form = el("form", { class: "row-form lib-rename-form" }, input,
        el("button", { type: "submit", class: "primary" }, _("Lưu")),
        el("button", { type: "button", onclick: function () { form.remove(); } }, _("Thôi")));
      form.addEventListener("submit", function (ev) {
        ev.preventDefault();
        var value = input.value.trim();
        if (!value) { flash(note, _("Tiêu đề không được để trống."), false); input.focus(); return; }
        form.querySelector("button[type=submit]").disabled = true;
        api("PATCH", "/api/v1/content/" + encodeURIComponent(it.id), { title: value }).then(function (res) {
          form.querySelector("button[type=submit]").disabled = false;
          if (!res.ok) { flash(note, L.errorText(res), false); return; }
          it.title = res.data.title;
          title.textContent = res.data.title;
          form.remove();
          flash(note, _("Đã đổi tên."), true);
        });
      });
      title.after(form);
      input.focus(); input.select();
    }

    function remove(li, it, note, actions) {
      if (li.querySelector(".lib-confirm")) return;
      var box = el("div", { class: "flash error lib-confirm" },
        el("p", null, _("Chắc chắn xóa «{t}» khỏi thư viện?", { t: it.title })));
      var yes = el("button", { type: "button", class: "danger", onclick: function () {
        yes.disabled = true;
        api("DELETE", "/api/v1/content/" + encodeURIComponent(it.id)).then(function (res) {
          box.remove();
          if (!res.ok) { flash(note, L.errorText(res), false); return; }
          li.remove();
          flash(status, _("Đã xóa «{t}».", { t: it.title }), true);
        });
      } }, _("Xóa"));
      box.appendChild(yes);
      box.appendChild(el("button", { type: "button", onclick: function () { box.remove(); } }, _("Thôi")));
      actions.after(box);
      yes.focus();
    }

    search.addEventListener("submit", function (ev) { ev.preventDefault(); load(false); });
    search.q.addEventListener("input", L.debounce(function () { load(false); }, 250));
    search.shared.addEventListener("change", function () { load(false); });
    more.addEventListener("click", function () { load(true); });

    document.getElementById("upload").addEventListener("submit", function (ev) {
      ev.preventDefault();
      var form = ev.target;
      var row = document.getElementById("upload-progress-row");
      var bar = document.getElementById("upload-progress");
      var pct = document.getElementById("upload-percent");
      var ustatus = document.getElementById("upload-status");
      var button = form.querySelector("button[type=submit]");
      if (!form.file.files.length) { form.file.focus(); return; }
      var data = new FormData();
      data.append("file", form.file.files[0]);
      if (form.title.value.trim()) data.append("title", form.title.value.trim());
      data.append("language", opts.language ? opts.language() : "vi");
      var xhr = new XMLHttpRequest();
      xhr.open("POST", "/api/v1/content");
      xhr.setRequestHeader("X-CSRF-Token", L.PAGE.csrf || "");
      xhr.setRequestHeader("Accept", "application/json");
      function progress(n) { bar.value = n; pct.textContent = n + "%"; }
      row.hidden = false; progress(0); ustatus.hidden = true; button.disabled = true;
      xhr.upload.addEventListener("progress", function (e) {
        if (e.lengthComputable) progress(Math.min(100, Math.round(100 * e.loaded / e.total)));
      });
      // Sent is not stored: the server still converts and measures the audio.
      xhr.upload.addEventListener("load", function () { progress(100); flash(ustatus, _("Đã gửi xong, máy chủ đang xử lý âm thanh…"), null); });
      xhr.addEventListener("load", function () {
        button.disabled = false;
        var body = null;
        try { body = JSON.parse(xhr.responseText); } catch (e) { body = null; }
        if (xhr.status === 201 && body) {
          flash(ustatus, _("Đã tải lên") + ": " + body.title + " (" + body.duration + ")", true);
          form.reset();
          if (opts.uploaded) opts.uploaded(body);
          load(false);
        } else {
          row.hidden = true;
          flash(ustatus, L.errorText({ status: xhr.status, data: body }), false);
        }
      });
      xhr.addEventListener("error", function () { button.disabled = false; row.hidden = true; flash(ustatus, _("Có lỗi, hãy thử lại."), false); });
      xhr.send(data);
    });

    load(false);
    return { reload: function () { load(false); } };
  };

  /* ------------------------------------------------------------------ notifications */

  /* A user's alarm e-mail and webhook (notifications.html, /api/v1/notifications/me). */
  pages.notify = function (L) {
    var api = L.api, el = L.el, _ = L._;
    var forms = document.querySelectorAll(".notify-form");

    function fill(data) {
      forms.forEach(function (form) {
        var sub = data[form.dataset.channel];
        var sev = form.querySelector(".sev-choices"), com = form.querySelector(".commune-choices");
        L.clear(sev); L.clear(com);
        data.severities.forEach(function (c) {
          sev.appendChild(el("label", null, el("input", { type: "checkbox", name: "severity", value: String(c.id),
            checked: sub ? sub.severities.indexOf(c.id) >= 0 : true }), " " + c.name));
        });
        data.communes.forEach(function (c) {
          com.appendChild(el("label", null, el("input", { type: "checkbox", name: "commune", value: String(c.id),
            checked: !!(sub && sub.communes.indexOf(c.id) >= 0) }), " " + c.name));
        });
        form.address.value = sub ? sub.address : "";
        form.active.checked = sub ? sub.active : true;
        form.querySelector(".stop").hidden = !sub;
        var signed = form.querySelector(".signed-note");
        if (signed) signed.hidden = !(sub && sub.signed);
        var off = form.querySelector(".email-off");
        if (off) off.hidden = data.email_ready;
      });
      var list = document.getElementById("deliveries");
      L.clear(list);
      if (!data.deliveries.length) list.appendChild(el("li", { class: "muted" }, _("Chưa gửi thông báo nào.")));
      data.deliveries.forEach(function (d) {
        var line = d.status === "sent" ? _("Đã gửi lúc {t}", { t: d.sent })
          : d.status === "pending" ? _("Lần {n} lỗi: {e}. Thử lại lúc {t}.", { n: d.attempts, e: d.error || "", t: d.next_try })
          : _("Không gửi được sau {n} lần: {e}", { n: d.attempts, e: d.error || "" });
        list.appendChild(el("li", { class: "mini-card delivery st-" + d.status, dataset: { status: d.status } },
          el("strong", null, d.alarm), el("div", { class: "muted small" }, (d.channel === "email" ? "E-mail" : "Webhook") + " · " + d.raised + " · " + d.status_label),
          el("div", { class: "small" }, line)));
      });
    }

    function load() {
      api("GET", "/api/v1/notifications/me").then(function (res) {
        if (!res.ok) { var p = document.getElementById("notify-load"); p.hidden = false; p.className = "flash error"; p.textContent = L.errorText(res); return; }
        fill(res.data);
      });
    }

    forms.forEach(function (form) {
      var status = form.querySelector(".status");
      function say(text, ok) { status.hidden = false; status.textContent = text; status.className = "flash status " + (ok ? "ok" : "error"); }
      form.addEventListener("submit", function (ev) {
        ev.preventDefault();
        var body = { address: form.address.value.trim(), active: form.active.checked,
          severities: checkedValues(form, "severity", true), communes: checkedValues(form, "commune", true) };
        if (form.secret && form.secret.value) body.secret = form.secret.value;
        api("PUT", "/api/v1/notifications/me/" + form.dataset.channel, body).then(function (res) {
          if (!res.ok) { say(L.errorText(res), false); return; }
          if (form.secret) form.secret.value = "";
          say(_("Đã lưu."), true);
          load();
        });
      });
      form.querySelector(".stop").addEventListener("click", function () {
        api("DELETE", "/api/v1/notifications/me/" + form.dataset.channel).then(function (res) {
          if (!res.ok) { say(L.errorText(res), false); return; }
          say(_("Đã thôi nhận."), true);
          load();
        });
      });
    });
    load();
    setInterval(load, 30000);
  };

  /* ------------------------------------------------------------------ commune officer */

  pages.commune = function (L) {
    var api = L.api, el = L.el, _ = L._;
    var WEEKDAYS = L.PAGE.lang === "en" ? ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
      : ["CN", "T2", "T3", "T4", "T5", "T6", "T7"];
    var compose = document.getElementById("compose");
    var uploaded = null;

    /* Exactly what is ticked, never widened: "Toàn xã" and that commune's villages exclude
     * each other on the page, and the server refuses a request naming both. */
    function targets(form) {
      return { communes: checkedValues(form, "commune", true), villages: checkedValues(form, "village", true),
        groups: checkedValues(form, "group", true) };
    }

    compose.addEventListener("change", function (ev) {
      var t = ev.target;
      if (t.name === "commune" && t.checked) {
        compose.querySelectorAll("input[name=village][data-commune='" + t.value + "']").forEach(function (v) { v.checked = false; });
      } else if (t.name === "village" && t.checked) {
        compose.querySelectorAll("input[name=commune][value='" + t.dataset.commune + "']").forEach(function (c) { c.checked = false; });
      }
      if (t.name === "when") document.getElementById("when-fields").hidden = t.value === "now" && t.checked;
      if (t.name === "language") {
        // Tày, Nùng, Dao: a recording is the way; choose it when one is uploaded.
        document.getElementById("language-hint").hidden = t.value === "vi";
        var rec = document.getElementById("source-upload");
        if (t.value !== "vi" && !rec.disabled) rec.checked = true;
      }
      hideSummary();
    });
    compose.addEventListener("input", function () { hideSummary(); });

    function loadCalendar() {
      var box = document.getElementById("calendar");
      var start = dayStart(Date.now());
      document.getElementById("today-label").textContent = _("Hôm nay") + " " + fmtDate(Date.now());
      api("GET", "/api/v1/schedule").then(function (res) {
        L.clear(box);
        if (!res.ok) { box.appendChild(el("p", { class: "muted" }, L.errorText(res))); return; }
        for (var i = 0; i < 7; i++) {
          var from = start + i * 86400000, to = from + 86400000;
          var day = el("div", { class: "day" + (i === 0 ? " today" : ""), dataset: { day: fmtDate(from) } },
            el("h3", null, WEEKDAYS[ict(from).getUTCDay()] + " " + fmtDate(from).slice(0, 5)));
          var items = res.data.items.filter(function (it) { return it.start_ms >= from && it.start_ms < to; });
          if (!items.length) day.appendChild(el("div", { class: "muted" }, "–"));
          items.forEach(function (it) {
            day.appendChild(el("div", { class: "slot priority-" + it.priority, title: it.status },
              el("strong", null, fmtHM(it.start_ms)), " ", it.title));
          });
          box.appendChild(day);
        }
      });
    }

    function loadGroups() {
      var box = document.getElementById("group-list");
      api("GET", "/api/v1/groups").then(function (res) {
        if (!res.ok) return;
        res.data.items.forEach(function (g) {
          box.appendChild(el("label", null, el("input", { type: "checkbox", name: "group", value: String(g.id) }), " " + g.name));
        });
      });
    }

    document.getElementById("preview-btn").addEventListener("click", function (ev) {
      var text = compose.text.value.trim();
      var spoken = document.getElementById("spoken");
      var audio = document.getElementById("preview-audio");
      if (!text) { compose.text.focus(); return; }
      ev.target.disabled = true;
      spoken.textContent = _("Đang tải…");
      api("POST", "/api/v1/tts/preview", { text: text }).then(function (res) {
        ev.target.disabled = false;
        if (!res.ok) { spoken.textContent = L.errorText(res); return; }
        spoken.textContent = res.data.spoken;
        audio.src = res.data.audio_url;
        audio.hidden = false;
        audio.play().catch(function () { /* autoplay may be refused: the controls remain */ });
      });
    });

    var summaryBox = document.getElementById("compose-summary");
    var confirmBtn = document.getElementById("compose-confirm");
    var longOk = document.getElementById("long-ok");
    var pending = null; // {body, key, editId, long}
    var editing = null; // the broadcast being edited (a new version replaces it)

    function newKey() {
      if (window.crypto && window.crypto.randomUUID) return window.crypto.randomUUID();
      var a = new Uint8Array(16); window.crypto.getRandomValues(a);
      return Array.prototype.map.call(a, function (b) { return (b < 16 ? "0" : "") + b.toString(16); }).join("");
    }

    function hideSummary() { summaryBox.hidden = true; pending = null; }

    /* dd/mm/yyyy + HH:MM (no browser date picker: it follows the browser's locale) -> ISO local. */
    function localIso(dateText, timeText) {
      var d = /^(\d{1,2})\/(\d{1,2})\/(\d{4})$/.exec(dateText.trim());
      var t = /^(\d{1,2}):(\d{2})$/.exec(timeText.trim());
      if (!d || !t) return null;
      var day = +d[1], month = +d[2], h = +t[1], m = +t[2];
      if (month < 1 || month > 12 || day < 1 || day > 31 || h > 23 || m > 59) return null;
      return d[3] + "-" + pad(month) + "-" + pad(day) + "T" + pad(h) + ":" + pad(m) + ":00";
    }

    function requestBody(status) {
      var body = { title: compose.title.value.trim(), targets: targets(compose),
        priority: compose.priority.value, language: compose.language.value };
      var source = compose.querySelector("input[name=source]:checked").value;
      if (source === "upload" && uploaded) body.content_id = uploaded.id;
      else body.tts_text = compose.text.value;
      var when = compose.querySelector("input[name=when]:checked");
      if (when && when.value === "now") body.start_at = "now";
      else {
        var dateText = compose.start_date.value, timeText = compose.start_time.value;
        if (!dateText.trim() || !timeText.trim()) {
          show(status, _("Chưa chọn giờ phát: hãy nhập ngày và giờ phát, hoặc chọn «Phát ngay»."), false);
          (dateText.trim() ? compose.start_time : compose.start_date).focus();
          return null;
        }
        body.start_at = localIso(dateText, timeText);
        if (!body.start_at) {
          show(status, _("Ngày hoặc giờ không hợp lệ: ngày dạng dd/mm/yyyy, giờ dạng HH:MM."), false);
          return null;
        }
      }
      if (compose.recurrence.value) {
        body.recurrence = { rrule: compose.recurrence.value };
        if (compose.until.value.trim()) body.recurrence.until = compose.until.value.trim();
      }
      var t = body.targets;
      if (!t.communes.length && !t.villages.length && !t.groups.length) {
        show(status, _("Chưa chọn nơi phát: hãy chọn «Toàn xã» hoặc ít nhất một thôn."), false);
        return null;
      }
      return body;
    }

    function term(dl, label, value, key) {
      dl.appendChild(el("dt", null, label));
      dl.appendChild(el("dd", { dataset: { summary: key } }, value));
    }

    compose.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var status = document.getElementById("compose-status");
      status.hidden = true;
      var body = requestBody(status);
      if (!body) return;
      var review = document.getElementById("compose-review");
      review.disabled = true;
      show(status, _("Đang kiểm tra…"), null);
      api("POST", "/api/v1/broadcasts/check" + (editing ? "?replaces=" + editing.id : ""), body).then(function (res) {
        review.disabled = false;
        if (!res.ok) { show(status, L.errorText(res), false); return; }
        status.hidden = true;
        var d = res.data, dl = document.getElementById("summary-list");
        L.clear(dl);
        var where = d.places.text + " · " + _("{n} cụm loa", { n: d.places.clusters }) +
          (d.places.offline ? " (" + _("{n} cụm đang mất kết nối", { n: d.places.offline }) + ")" : "");
        term(dl, _("Nơi phát"), where, "where");
        term(dl, _("Giờ phát"), d.now ? _("Phát ngay") + " (" + fmtHM(d.start_at_ms) + ")" : d.when, "when");
        term(dl, _("Thời lượng"), d.duration, "duration");
        term(dl, _("Mức ưu tiên"), _(d.priority_label), "priority");
        term(dl, _("Ngôn ngữ phát"), _(d.language_label), "language");
        var longMsg = document.getElementById("summary-long");
        longMsg.hidden = !d.long;
        document.getElementById("summary-long-ok").hidden = !d.long;
        longOk.checked = false;
        if (d.long) longMsg.textContent = _("Bản tin dài {d}, quá {limit}. Hãy xác nhận lần nữa.", { d: d.duration, limit: d.long_limit });
        confirmBtn.disabled = !!d.long;
        pending = { body: body, key: newKey(), long: d.long, editId: editing ? editing.id : null };
        summaryBox.hidden = false;
        confirmBtn.focus();
      });
    });

    longOk.addEventListener("change", function () { confirmBtn.disabled = !longOk.checked; });
    document.getElementById("compose-back").addEventListener("click", function () { hideSummary(); compose.title.focus(); });
    document.getElementById("edit-cancel").addEventListener("click", function () { stopEditing(); });

    function stopEditing() {
      editing = null;
      document.getElementById("edit-note").hidden = true;
      document.getElementById("edit-cancel").hidden = true;
    }

    function clearForm() {
      compose.reset();
      uploaded = null;
      var radio = document.getElementById("source-upload");
      radio.disabled = true;
      document.getElementById("upload-chosen").textContent = "–";
      document.getElementById("when-fields").hidden = false;
      document.getElementById("language-hint").hidden = true;
      document.getElementById("spoken").textContent = "";
      document.getElementById("preview-audio").hidden = true;
      stopEditing();
    }

    confirmBtn.addEventListener("click", function () {
      if (!pending || confirmBtn.disabled) return;
      var status = document.getElementById("compose-status");
      var send = pending;
      var body = Object.assign({}, send.body);
      if (send.long) body.confirm = true;
      confirmBtn.disabled = true; // a double click sends once: the button, and the key below
      show(status, _("Đang gửi…"), null);
      var url = send.editId ? "/api/v1/broadcasts/" + send.editId + "/edit" : "/api/v1/broadcasts";
      if (send.editId) { delete body.confirm; if (send.long) body.confirm = true; }
      fetch(url, { method: "POST", credentials: "same-origin", body: JSON.stringify(body),
        headers: { "Accept": "application/json", "Content-Type": "application/json",
          "X-CSRF-Token": L.PAGE.csrf || "", "Idempotency-Key": send.key } })
        .then(function (r) { return r.json().then(function (data) { return { ok: r.ok, status: r.status, data: data }; },
          function () { return { ok: r.ok, status: r.status, data: null }; }); },
          function () { return { ok: false, status: 0, data: null }; })
        .then(function (res) {
          if (!res.ok) { confirmBtn.disabled = false; show(status, L.errorText(res), false); return; }
          var b = res.data;
          var when = b.next_slot_at ? fmtIso(b.next_slot_at) : fmtIso(b.start_at);
          var head = b.status === "scheduled" ? _("Đã lên lịch") : (b.status_label || b.status);
          show(status, head + " «" + b.title + "»: " + _("phát tại {where} lúc {when}.", { where: b.places, when: when }), true);
          summaryBox.hidden = true;
          pending = null;
          clearForm();
          loadCalendar(); loadResults();
        });
    });

    function useItem(item, how) {
      // A title the officer typed stays; one that came from the previous item follows.
      if (!compose.title.value || (uploaded && compose.title.value === uploaded.title)) compose.title.value = item.title;
      uploaded = item;
      var radio = document.getElementById("source-upload");
      radio.disabled = false; radio.checked = true;
      document.getElementById("upload-chosen").textContent = item.title + " (" + item.duration + ")";
      if (item.language && compose.querySelector("select[name=language] option[value='" + item.language + "']")) {
        compose.language.value = item.language;
        document.getElementById("language-hint").hidden = item.language === "vi";
      }
      if (how === "reuse") {
        show(document.getElementById("compose-status"), _("Đã chọn «{t}» từ thư viện: chọn nơi phát và giờ phát rồi gửi.", { t: item.title }), null);
        document.getElementById("compose-card").scrollIntoView({ block: "start" });
        compose.title.focus();
      }
      hideSummary();
    }
    pages.library(L, { reuse: function (item) { useItem(item, "reuse"); },
      uploaded: function (item) { useItem(item, "upload"); },
      language: function () { return compose.language.value; } });

    function loadInbox() {
      var list = document.getElementById("inbox");
      api("GET", "/api/v1/inbox").then(function (res) {
        L.clear(list);
        if (!res.ok) { list.appendChild(el("li", { class: "muted" }, L.errorText(res))); return; }
        if (!res.data.items.length) { list.appendChild(el("li", { class: "muted" }, _("Không có bản tin nào."))); return; }
        res.data.items.forEach(function (it) {
          var li = el("li", { dataset: { inbox: String(it.id) } },
            el("strong", null, it.title), " · ", _(it.priority_label || ""), el("br"),
            el("span", { class: "muted" }, _("Nhận lúc") + " " + fmtIso(it.received_at) +
              (it.suggested_start_at ? " · " + _("Giờ đề xuất") + " " + fmtIso(it.suggested_start_at) : "")));
          function act(path, label) {
            return el("button", { type: "button", onclick: function (e) {
              e.target.disabled = true;
              api("POST", "/api/v1/inbox/" + it.id + path, path === "/schedule" ? {} : undefined).then(function (r) {
                if (!r.ok) { e.target.disabled = false; li.appendChild(el("div", { class: "flash error" }, L.errorText(r))); return; }
                loadInbox(); loadCalendar(); loadResults();
              });
            } }, label);
          }
          li.appendChild(el("div", { class: "row-form" }, act("/schedule", _("Lên lịch")), act("/dismiss", _("Bỏ qua"))));
          list.appendChild(li);
        });
      });
    }

    function loadLive() {
      var info = document.getElementById("live-info");
      var btn = document.getElementById("live-btn");
      api("GET", "/api/v1/live/server").then(function (res) {
        if (!res.ok) { info.textContent = L.errorText(res); return; }
        if (!res.data.available) { info.textContent = res.data.reason || ""; btn.hidden = true; return; }
        info.textContent = (res.data.on_air || []).length ? _("Đang phát trực tiếp") : "";
        btn.hidden = false;
      });
      // Going live is its own page (/live): villages, confirmation, the microphone.
    }

    /* Proof of play as cards (a 390 px phone has no room for a table): one per cluster,
     * named by village and place, never by node id. */
    function outcomeList(b) {
      var played = b.outcomes.filter(function (o) { return o.phase === "finished"; });
      var missed = b.outcomes.filter(function (o) { return o.phase !== "finished"; });
      var box = el("div", { class: "outcomes" },
        el("p", null, _("Tỉ lệ phát") + ": " + (b.aired_ratio === null || b.aired_ratio === undefined ? "–" : Math.round(b.aired_ratio * 100) + "%") +
          " · " + _("Cụm loa đã phát") + ": " + played.length + " · " + _("Cụm loa chưa phát") + ": " + missed.length));
      if (!b.outcomes.length) { box.appendChild(el("p", { class: "muted" }, _("Chưa tới giờ"))); return box; }
      var list = el("ul", { class: "cards outcome-list" });
      b.outcomes.forEach(function (o) {
        list.appendChild(el("li", { class: "mini-card" + (o.phase === "finished" ? "" : " row-st-offline"), dataset: { node: o.node_id } },
          el("strong", null, o.place || o.node_id), el("br"),
          (o.phase === "finished" ? _("Đã phát") : _("Không phát")) + " · " + _(o.phase_label || o.phase) +
          (o.started_at ? " · " + fmtIso(o.started_at) : "") + (o.error ? " · " + o.error : "")));
      });
      box.appendChild(list);
      return box;
    }

    var resultsStatus = document.getElementById("results-status");

    function act(b, path, body) {
      return api("POST", "/api/v1/broadcasts/" + b.id + path, body).then(function (r) {
        if (!r.ok) { show(resultsStatus, L.errorText(r), false); return r; }
        show(resultsStatus, "«" + r.data.title + "»: " + (r.data.status_label || r.data.status), true);
        loadCalendar(); loadResults();
        return r;
      });
    }

    function startEditing(b) {
      editing = b;
      clearFormKeepEdit();
      compose.title.value = b.title;
      if (b.tts_text) compose.text.value = b.tts_text;
      else if (b.content_id) {
        uploaded = { id: b.content_id, title: b.title };
        var radio = document.getElementById("source-upload");
        radio.disabled = false; radio.checked = true;
        document.getElementById("upload-chosen").textContent = b.title;
      }
      (b.targets.communes || []).forEach(function (id) { var i = compose.querySelector("input[name=commune][value='" + id + "']"); if (i) i.checked = true; });
      (b.targets.villages || []).forEach(function (id) { var i = compose.querySelector("input[name=village][value='" + id + "']"); if (i) i.checked = true; });
      var at = isoMs(b.next_slot_at || b.start_at);
      if (at) { compose.start_date.value = fmtDate(at); compose.start_time.value = fmtHM(at); }
      if (b.recurrence) {
        var opt = compose.querySelector("select[name=recurrence] option[value='" + b.recurrence.rrule + "']");
        if (opt) compose.recurrence.value = b.recurrence.rrule;
        if (b.recurrence.until) compose.until.value = fmtDate(isoMs(b.recurrence.until));
      }
      compose.priority.value = b.priority === "priority" ? "priority" : "normal";
      compose.language.value = b.language || "vi";
      var note = document.getElementById("edit-note");
      note.textContent = _("Đang sửa «{t}». Khi gửi, bản mới thay bản cũ; bản cũ được giữ trong lịch sử.", { t: b.title });
      note.hidden = false;
      document.getElementById("edit-cancel").hidden = false;
      compose.scrollIntoView();
      compose.title.focus();
    }

    function clearFormKeepEdit() { var keep = editing; clearForm(); editing = keep; }

    function resultCard(b) {
      var card = el("li", { class: "result-card st-" + b.status, dataset: { broadcast: String(b.id) } });
      var when = b.next_slot_at || b.start_at;
      card.appendChild(el("div", { class: "result-head" }, el("strong", null, b.title),
        el("span", { class: "status-tag" }, _(b.status_label || b.status))));
      card.appendChild(el("div", { class: "muted" }, b.places || ""));
      card.appendChild(el("div", null, fmtIso(when) + " · " + _(b.priority_label || b.priority) +
        (b.recurrence ? " · " + _("lặp lại") : "") + (b.duration_ms ? " · " + Math.round(b.duration_ms / 1000) + " " + _("giây") : "")));
      var detail = el("div", { class: "result-detail", hidden: true });
      var bar = el("div", { class: "row-form actions" });
      bar.appendChild(el("button", { type: "button", class: "view", onclick: function () {
        if (!detail.hidden) { detail.hidden = true; return; }
        api("GET", "/api/v1/broadcasts/" + b.id).then(function (r) {
          L.clear(detail);
          detail.appendChild(r.ok ? outcomeList(r.data) : el("p", { class: "flash error" }, L.errorText(r)));
          detail.hidden = false;
        });
      } }, _("Xem")));
      var open = ["draft", "submitted", "approved", "scheduled", "paused"].indexOf(b.status) >= 0;
      var manage = open && (L.PAGE.role === "province" || b.owner_commune_id !== null);
      if (manage && b.status !== "approved" && !b.stream_url) {
        bar.appendChild(el("button", { type: "button", class: "edit", onclick: function () { startEditing(b); } }, _("Sửa")));
      }
      if (manage && b.status === "scheduled") bar.appendChild(el("button", { type: "button", class: "pause", onclick: function () { act(b, "/pause"); } }, _("Tạm dừng")));
      if (manage && b.status === "paused") bar.appendChild(el("button", { type: "button", class: "resume", onclick: function () { act(b, "/resume"); } }, _("Tiếp tục")));
      if (manage && b.recurrence) {
        var skipForm = el("div", { class: "row-form skip-form", hidden: true });
        var day = el("input", { type: "text", name: "skip_date", inputmode: "numeric", placeholder: "dd/mm/yyyy", maxlength: "10", size: "10",
          "aria-label": _("Ngày bỏ phát (dd/mm/yyyy)") });
        var next = isoMs(b.next_slot_at);
        if (next) day.value = fmtDate(next);
        skipForm.appendChild(day);
        skipForm.appendChild(el("button", { type: "button", class: "skip-go", onclick: function () { act(b, "/skip", { date: day.value.trim() }); } }, _("Bỏ phát ngày này")));
        bar.appendChild(el("button", { type: "button", class: "skip-day", onclick: function () { skipForm.hidden = !skipForm.hidden; } }, _("Bỏ 1 lần")));
        card.appendChild(skipForm);
      }
      if (manage) {
        var sure = el("button", { type: "button", class: "danger cancel-go", hidden: true, onclick: function () { sure.disabled = true; act(b, "/cancel"); } },
          _("Chắc chắn hủy «{t}»", { t: b.title }));
        bar.appendChild(el("button", { type: "button", class: "danger cancel", onclick: function () { sure.hidden = !sure.hidden; } }, _("Hủy")));
        card.appendChild(sure);
      }
      card.insertBefore(bar, card.querySelector(".skip-form") || card.querySelector(".cancel-go"));
      card.appendChild(detail);
      return card;
    }

    function loadResults() {
      var box = document.getElementById("results");
      api("GET", "/api/v1/broadcasts?limit=15").then(function (res) {
        L.clear(box);
        if (!res.ok) { box.appendChild(el("p", { class: "muted" }, L.errorText(res))); return; }
        if (!res.data.items.length) { box.appendChild(el("p", { class: "muted" }, _("Không có bản tin nào."))); return; }
        var list = el("ul", { class: "cards", id: "results-list" });
        res.data.items.forEach(function (b) { list.appendChild(resultCard(b)); });
        box.appendChild(list);
      });
    }

    loadCalendar(); loadGroups(); loadInbox(); loadLive(); loadResults();
  };

  /* ------------------------------------------------------------------ province */

  pages.province = function (L) {
    var api = L.api, el = L.el, _ = L._;
    pages.library(L, {});
    var coords = L.PAGE.coords || {};
    var select = document.getElementById("period");

    function verdict(c) {
      if (c.manual) return el("span", { class: "manual" }, _("Thủ công"));
      if (c.verdict === "insufficient_data") return el("span", { class: "unknown" }, _("Không đủ dữ liệu"));
      if (c.verdict === "not_in_service") return el("span", { class: "unknown" }, _("Chưa đưa vào sử dụng"));
      return el("span", { class: c.passed ? "pass" : "fail" }, c.passed ? _("Đạt") : _("Không đạt"));
    }

    function drawMap(communes) {
      var box = document.getElementById("map");
      var missing = document.getElementById("no-coords");
      L.clear(box);
      var placed = communes.filter(function (c) { return coords[c.id]; });
      var lost = communes.filter(function (c) { return !coords[c.id]; });
      missing.hidden = !lost.length;
      missing.textContent = _("Không có tọa độ") + ": " + lost.map(function (c) { return c.name; }).join(", ");
      if (!placed.length) return;
      var lats = placed.map(function (c) { return coords[c.id][0]; });
      var lons = placed.map(function (c) { return coords[c.id][1]; });
      var minLat = Math.min.apply(null, lats), maxLat = Math.max.apply(null, lats);
      var minLon = Math.min.apply(null, lons), maxLon = Math.max.apply(null, lons);
      var W = 600, H = 420, P = 30;
      // One scale for both axes (a degree of longitude shrinks by cos(latitude)), so the
      // communes keep their real layout; centred in the box.
      var kx = Math.cos((minLat + maxLat) / 2 * Math.PI / 180);
      var spanLat = Math.max(maxLat - minLat, 0.01), spanLon = Math.max(maxLon - minLon, 0.01);
      var scale = Math.min((W - 2 * P) / (spanLon * kx), (H - 2 * P) / spanLat);
      var offX = (W - spanLon * kx * scale) / 2, offY = (H - spanLat * scale) / 2;
      var svg = document.createElementNS(SVG_NS, "svg");
      svg.setAttribute("viewBox", "0 0 " + W + " " + H);
      svg.setAttribute("role", "img");
      svg.setAttribute("aria-label", _("Bản đồ"));
      placed.forEach(function (c) {
        var x = offX + (coords[c.id][1] - minLon) * kx * scale;
        var y = H - offY - (coords[c.id][0] - minLat) * scale;
        var g = document.createElementNS(SVG_NS, "g");
        g.setAttribute("class", "commune-dot");
        g.setAttribute("data-commune", String(c.id));
        var dot = document.createElementNS(SVG_NS, "circle");
        dot.setAttribute("cx", x.toFixed(1)); dot.setAttribute("cy", y.toFixed(1)); dot.setAttribute("r", "9");
        dot.setAttribute("fill", c.manual ? "#6a1b9a" : (c.passed ? "#2e7d32" : "#c62828"));
        var title = document.createElementNS(SVG_NS, "title");
        title.textContent = c.name + ": " + (c.manual ? _("Thủ công") : (c.passed ? _("Đạt") : _("Không đạt")));
        dot.appendChild(title);
        var label = document.createElementNS(SVG_NS, "text");
        var right = x > W / 2; // labels lean inwards so none is cut at the edge
        label.setAttribute("x", (right ? x - 12 : x + 12).toFixed(1)); label.setAttribute("y", (y + 4).toFixed(1));
        label.setAttribute("text-anchor", right ? "end" : "start");
        label.setAttribute("font-size", "12"); label.setAttribute("fill", "#333");
        label.textContent = c.name;
        g.appendChild(dot); g.appendChild(label); svg.appendChild(g);
      });
      box.appendChild(svg);
    }

    function load() {
      var period = select.value;
      var summary = document.getElementById("summary");
      var tbody = document.querySelector("#indicator tbody");
      document.querySelectorAll("#reports a").forEach(function (a) {
        a.href = "/api/v1/indicators/radio/report?format=" + a.dataset.format + "&period=" + encodeURIComponent(period);
      });
      summary.textContent = _("Đang tải…");
      api("GET", "/api/v1/indicators/radio?period=" + encodeURIComponent(period)).then(function (res) {
        L.clear(tbody);
        if (!res.ok) { show(summary, L.errorText(res), false); return; }
        var d = res.data;
        show(summary, d.summary.text + " · " + d.period.label, true);
        // Which national criteria judged the period (and how it was split, if it was).
        var basis = document.getElementById("criteria");
        basis.textContent = d.criteria ? d.criteria.name + " (" + d.criteria.legal_basis + ")" +
          (d.split ? " · " + d.split.text : "") : "";
        d.communes.forEach(function (c) {
          var passedVillages = c.villages.filter(function (v) { return v.passed; }).length;
          var reasons = c.reasons.filter(function (r) { return r.level !== "info"; }).map(function (r) { return r.text; });
          // The name opens the drill-down: villages, clusters, transitions, airings.
          var link = el("a", { href: "/indicator/communes/" + c.id + "?period=" + encodeURIComponent(period) }, c.name);
          tbody.appendChild(el("tr", { dataset: { commune: String(c.id) } }, el("td", null, link),
            el("td", null, verdict(c), c.coverage_text ? el("div", { class: "muted" }, c.coverage_text) : null),
            el("td", null, passedVillages + "/" + c.villages.length),
            el("td", null, reasons.join("; "))));
        });
        drawMap(d.communes);
      });
    }

    select.addEventListener("change", load);
    load();

    var form = document.getElementById("emergency");
    // "Toàn tỉnh" and single communes exclude each other: a choice is never widened.
    form.addEventListener("change", function (ev) {
      if (!ev.target.checked) return;
      if (ev.target.name === "province") form.querySelectorAll("input[name=commune]").forEach(function (c) { c.checked = false; });
      if (ev.target.name === "commune") form.province.checked = false;
    });
    var confirmBox = document.getElementById("emergency-confirm");
    var status = document.getElementById("emergency-status");
    function body() {
      var t = form.province.checked ? { province: true } : { communes: checkedValues(form, "commune", true) };
      return { title: form.title.value.trim(), tts_text: form.text.value, priority: "emergency", confirm: true, targets: t };
    }
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var b = body();
      if (!b.title) { form.title.focus(); return; }
      if (!b.tts_text.trim()) { form.text.focus(); return; }
      if (!b.targets.province && !b.targets.communes.length) { show(status, _("Chưa chọn nơi phát"), false); return; }
      status.hidden = true;
      confirmBox.hidden = false; // a second, deliberate press: emergency cuts into everything
      document.getElementById("emergency-go").focus();
    });
    document.getElementById("emergency-cancel").addEventListener("click", function () { confirmBox.hidden = true; });
    document.getElementById("emergency-go").addEventListener("click", function (ev) {
      ev.target.disabled = true;
      api("POST", "/api/v1/broadcasts", body()).then(function (res) {
        ev.target.disabled = false;
        confirmBox.hidden = true;
        if (!res.ok) { show(status, L.errorText(res), false); return; }
        show(status, _("Đã gửi.") + " " + res.data.title + ": " + (res.data.status_label || res.data.status), true);
      });
    });
  };
})();
