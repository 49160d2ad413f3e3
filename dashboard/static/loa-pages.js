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

  /* ------------------------------------------------------------------ commune officer */

  pages.commune = function (L) {
    var api = L.api, el = L.el, _ = L._;
    var WEEKDAYS = L.PAGE.lang === "en" ? ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
      : ["CN", "T2", "T3", "T4", "T5", "T6", "T7"];
    var compose = document.getElementById("compose");
    var uploaded = null;

    function targets(form) {
      var communes = checkedValues(form, "commune", true);
      var villages = Array.prototype.slice.call(form.querySelectorAll("input[name=village]:checked"))
        .filter(function (i) { return communes.indexOf(Number(i.dataset.commune)) < 0; })
        .map(function (i) { return Number(i.value); });
      return { communes: communes, villages: villages, groups: checkedValues(form, "group", true) };
    }

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

    compose.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var status = document.getElementById("compose-status");
      var body = { title: compose.title.value.trim(), targets: targets(compose),
        priority: compose.priority.value, language: compose.language.value };
      var source = compose.querySelector("input[name=source]:checked").value;
      if (source === "upload" && uploaded) body.content_id = uploaded.id;
      else body.tts_text = compose.text.value;
      if (compose.start_at.value) body.start_at = compose.start_at.value;
      if (compose.recurrence.value) body.recurrence = { rrule: compose.recurrence.value };
      show(status, _("Đang gửi…"), null);
      api("POST", "/api/v1/broadcasts", body).then(function (res) {
        if (!res.ok) { show(status, L.errorText(res), false); return; }
        show(status, _("Đã gửi.") + " " + res.data.title + ": " + (res.data.status_label || res.data.status) +
          (res.data.next_slot_at ? " · " + fmtIso(res.data.next_slot_at) : ""), true);
        loadCalendar(); loadResults();
      });
    });

    document.getElementById("upload").addEventListener("submit", function (ev) {
      ev.preventDefault();
      var form = ev.target;
      var bar = document.getElementById("upload-progress");
      var status = document.getElementById("upload-status");
      if (!form.file.files.length) { form.file.focus(); return; }
      var data = new FormData();
      data.append("file", form.file.files[0]);
      if (form.title.value.trim()) data.append("title", form.title.value.trim());
      data.append("language", compose.language.value);
      var xhr = new XMLHttpRequest();
      xhr.open("POST", "/api/v1/content");
      xhr.setRequestHeader("X-CSRF-Token", L.PAGE.csrf || "");
      xhr.setRequestHeader("Accept", "application/json");
      bar.hidden = false; bar.value = 0; status.hidden = true;
      xhr.upload.addEventListener("progress", function (e) {
        if (e.lengthComputable) bar.value = Math.round(100 * e.loaded / e.total);
      });
      xhr.addEventListener("load", function () {
        var body = null;
        try { body = JSON.parse(xhr.responseText); } catch (e) { body = null; }
        if (xhr.status === 201 && body) {
          bar.value = 100;
          uploaded = body;
          show(status, _("Đã tải lên") + ": " + body.title + " (" + body.duration + ")", true);
          var radio = document.getElementById("source-upload");
          radio.disabled = false; radio.checked = true;
          document.getElementById("upload-chosen").textContent = body.title + " (" + body.duration + ")";
          if (!compose.title.value) compose.title.value = body.title;
        } else {
          show(status, L.errorText({ status: xhr.status, data: body }), false);
        }
      });
      xhr.addEventListener("error", function () { show(status, _("Có lỗi, hãy thử lại."), false); });
      xhr.send(data);
    });

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
      btn.addEventListener("click", function () {
        var status = document.getElementById("live-status");
        var body = { title: compose.title.value.trim() || _("Phát trực tiếp"), stream: true, targets: targets(compose) };
        btn.disabled = true;
        api("POST", "/api/v1/broadcasts", body).then(function (res) {
          btn.disabled = false;
          if (!res.ok) { show(status, L.errorText(res), false); return; }
          show(status, _("Địa chỉ gửi âm thanh (nguồn phát)") + ": " + (res.data.source_url || "–"), true);
          loadResults();
        });
      });
    }

    function outcomeTable(b) {
      var played = b.outcomes.filter(function (o) { return o.phase === "finished"; });
      var missed = b.outcomes.filter(function (o) { return o.phase !== "finished"; });
      var box = el("div", { class: "outcomes" },
        el("p", null, _("Tỉ lệ phát") + ": " + (b.aired_ratio === null || b.aired_ratio === undefined ? "–" : Math.round(b.aired_ratio * 100) + "%") +
          " · " + _("Cụm loa đã phát") + ": " + played.length + " · " + _("Cụm loa chưa phát") + ": " + missed.length));
      if (!b.outcomes.length) { box.appendChild(el("p", { class: "muted" }, _("Chưa tới giờ"))); return box; }
      var tbody = el("tbody");
      b.outcomes.forEach(function (o) {
        tbody.appendChild(el("tr", { class: o.phase === "finished" ? "" : "row-st-offline", dataset: { node: o.node_id } },
          el("td", null, o.node_id), el("td", null, o.phase === "finished" ? _("Đã phát") : _("Không phát")),
          el("td", null, o.phase_label || o.phase), el("td", null, o.started_at ? fmtIso(o.started_at) : "–"),
          el("td", null, o.error || "")));
      });
      box.appendChild(el("table", null, el("thead", null, el("tr", null, el("th", null, _("Cụm loa")), el("th", null, _("Kết quả")),
        el("th", null, _("Trạng thái")), el("th", null, _("Thời gian")), el("th", null, _("Lý do không phát")))), tbody));
      return box;
    }

    function loadResults() {
      var box = document.getElementById("results");
      api("GET", "/api/v1/broadcasts?limit=15").then(function (res) {
        L.clear(box);
        if (!res.ok) { box.appendChild(el("p", { class: "muted" }, L.errorText(res))); return; }
        if (!res.data.items.length) { box.appendChild(el("p", { class: "muted" }, _("Không có bản tin nào."))); return; }
        var tbody = el("tbody");
        res.data.items.forEach(function (b) {
          var detail = el("tr", { hidden: true }, el("td", { colspan: "5" }));
          var btn = el("button", { type: "button", onclick: function () {
            if (!detail.hidden) { detail.hidden = true; return; }
            api("GET", "/api/v1/broadcasts/" + b.id).then(function (r) {
              var cell = detail.firstChild; L.clear(cell);
              cell.appendChild(r.ok ? outcomeTable(r.data) : el("p", { class: "flash error" }, L.errorText(r)));
              detail.hidden = false;
            });
          } }, _("Xem"));
          tbody.appendChild(el("tr", { dataset: { broadcast: String(b.id) } }, el("td", null, b.title),
            el("td", null, _(b.priority_label || b.priority)), el("td", null, b.status_label || b.status),
            el("td", null, fmtIso(b.next_slot_at || b.start_at)), el("td", null, btn)));
          tbody.appendChild(detail);
        });
        box.appendChild(el("table", { id: "results-table" }, el("thead", null, el("tr", null, el("th", null, _("Tiêu đề")),
          el("th", null, _("Mức ưu tiên")), el("th", null, _("Trạng thái bản tin")), el("th", null, _("Giờ phát")), el("th"))), tbody));
      });
    }

    loadCalendar(); loadGroups(); loadInbox(); loadLive(); loadResults();
  };

  /* ------------------------------------------------------------------ province */

  pages.province = function (L) {
    var api = L.api, el = L.el, _ = L._;
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
          tbody.appendChild(el("tr", { dataset: { commune: String(c.id) } }, el("td", null, c.name),
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
