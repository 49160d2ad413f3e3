/* Loa dashboard scripts: small, dependency-free, progressive.
 *
 * Pages are rendered on the server; this file adds what must change without a reload (the
 * live fleet table, alarms, uploads with progress). Text from the server is always put in
 * the page with textContent, never innerHTML, so a name like "<script>" stays text.
 */
(function () {
  "use strict";

  var PAGE = {};
  try { PAGE = JSON.parse(document.getElementById("loa-page").textContent); } catch (e) { PAGE = {}; }
  var S = PAGE.strings || {};

  function _(msg, values) {
    var text = S[msg] || msg;
    if (values) {
      Object.keys(values).forEach(function (k) { text = text.split("{" + k + "}").join(String(values[k])); });
    }
    return text;
  }

  var STATE_LABELS = { online: "Hoạt động", degraded: "Suy giảm", offline: "Mất kết nối", unknown: "Chưa rõ" };
  var REASON_LABELS = { amp_fault: "Lỗi bộ khuếch đại", amp_off: "Bộ khuếch đại tắt", speaker_line: "Lỗi đường dây loa",
    battery_low: "Pin yếu", weak_signal: "Sóng yếu", heartbeat_timeout: "Quá hạn nhịp tim",
    will_lost: "Mất kết nối đột ngột", status_shutdown: "Tắt máy", status_offline: "Báo ngoại tuyến" };
  var ALARM_LABELS = { offline: "Mất kết nối", amp_fault: "Lỗi bộ khuếch đại", speaker_line: "Lỗi đường dây loa",
    on_battery: "Đang chạy pin", weak_signal: "Sóng yếu" };

  function stateLabel(st) { return _(STATE_LABELS[st] || st); }
  function reasonLabel(r) { return _(REASON_LABELS[r] || r); }

  /* el("a", {href: "/x", class: "y"}, "text", childNode) */
  function el(tag, attrs) {
    var node = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        var v = attrs[k];
        if (v === null || v === undefined || v === false) return;
        if (k === "class") node.className = v;
        else if (k === "dataset") Object.keys(v).forEach(function (d) { node.dataset[d] = v[d]; });
        else if (k.slice(0, 2) === "on") node.addEventListener(k.slice(2), v);
        else node.setAttribute(k, v === true ? "" : v);
      });
    }
    for (var i = 2; i < arguments.length; i++) {
      var c = arguments[i];
      if (c === null || c === undefined) continue;
      node.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
    }
    return node;
  }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

  /* JSON API call with the session's CSRF token; resolves to {ok, status, data}. */
  function api(method, url, body) {
    var opts = { method: method, credentials: "same-origin",
      headers: { "Accept": "application/json", "X-CSRF-Token": PAGE.csrf || "" } };
    if (body instanceof FormData) opts.body = body;
    else if (body !== undefined) { opts.body = JSON.stringify(body); opts.headers["Content-Type"] = "application/json"; }
    return fetch(url, opts).then(function (r) {
      return r.text().then(function (t) {
        var data = null;
        try { data = t ? JSON.parse(t) : null; } catch (e) { data = t; }
        return { ok: r.ok, status: r.status, data: data };
      });
    }, function () { return { ok: false, status: 0, data: null }; });
  }

  function errorText(res) {
    var d = res.data && res.data.detail;
    if (res.status === 405 || d === "Not Found" || (res.status === 404 && !d)) {
      return _("Chức năng này chưa sẵn sàng trên máy chủ.");
    }
    if (typeof d === "string") return d;
    if (Array.isArray(d) && d.length) return d.map(function (x) { return x.msg; }).join("; ");
    return _("Có lỗi, hãy thử lại.");
  }

  function debounce(fn, ms) {
    var t = null;
    return function () { var args = arguments; clearTimeout(t); t = setTimeout(function () { fn.apply(null, args); }, ms); };
  }

  function stateBadge(st) { return el("span", { class: "state st-" + st, dataset: { state: st } }, stateLabel(st)); }

  /* ------------------------------------------------------------------ alarms (shared) */

  function refreshAlarmBadge(page) {
    var badge = document.getElementById("alarm-badge");
    if (!badge) return;
    var n = page ? page.open_unacked : 0;
    badge.textContent = String(n);
    badge.hidden = !n;
  }

  function loadAlarmBadge() {
    if (!document.getElementById("alarm-badge")) return;
    api("GET", "/api/v1/alarms?state=open&limit=1").then(function (res) { if (res.ok) refreshAlarmBadge(res.data); });
  }

  function renderAlarms(list, page) {
    clear(list);
    if (!page.items.length) { list.appendChild(el("li", { class: "muted" }, _("Không có cảnh báo nào."))); return; }
    page.items.forEach(function (a) {
      // Named by village and place; colour by severity (offline > equipment > warning).
      var place = a.village && a.node_label ? a.village + " – " + a.node_label : (a.village || a.node_label || a.node_id);
      var li = el("li", { class: "alarm active sev-" + a.severity, dataset: { alarmId: String(a.id), node: a.node_id } },
        el("strong", null, _(ALARM_LABELS[a.kind] || a.label)), " · ",
        el("a", { href: "/tech/nodes/" + encodeURIComponent(a.node_id) }, place),
        a.commune ? " · " + a.commune : "",
        el("br"), el("span", { class: "muted" }, a.raised + (a.detail ? " · " + a.detail : "")));
      if (a.acked_by) {
        li.appendChild(el("span", { class: "muted" }, " · " + _("Đã xác nhận") + ": " + a.acked_by));
      } else if (PAGE.can_ack) {
        li.appendChild(el("button", { type: "button", class: "ack", onclick: function (ev) {
          ev.target.disabled = true;
          api("POST", "/api/v1/alarms/" + a.id + "/ack").then(function (res) {
            if (!res.ok) { ev.target.disabled = false; alert(errorText(res)); }
            loadAlarmPanel();
          });
        } }, _("Xác nhận")));
      }
      list.appendChild(li);
    });
  }

  function loadAlarmPanel() {
    var list = document.getElementById("alarm-list");
    if (!list) return;
    api("GET", "/api/v1/alarms?state=open&limit=15").then(function (res) {
      if (!res.ok) return;
      renderAlarms(list, res.data);
      refreshAlarmBadge(res.data);
    });
  }

  /* ------------------------------------------------------------------ live stream */

  function openLive(query, handlers) {
    if (!window.EventSource) return null;
    var status = document.getElementById("live-status");
    var source = new EventSource("/api/v1/live/fleet" + (query ? "?" + query : ""));
    function on(name) {
      source.addEventListener(name, function (ev) {
        var data = null;
        try { data = JSON.parse(ev.data); } catch (e) { return; }
        if (handlers[name]) handlers[name](data);
      });
    }
    ["hello", "counts", "nodes", "alarms"].forEach(on);
    source.addEventListener("open", function () {
      if (status) { status.textContent = _("Trực tiếp"); status.className = "live on"; }
    });
    source.addEventListener("error", function () {
      if (status) { status.textContent = _("Mất kết nối trực tiếp, đang thử lại…"); status.className = "live off"; }
    });
    return source;
  }

  /* ------------------------------------------------------------------ technician page */

  function initTech() {
    var form = document.getElementById("node-filter");
    var tbody = document.querySelector("#nodes tbody");
    var info = document.getElementById("page-info");
    var prev = document.getElementById("page-prev");
    var next = document.getElementById("page-next");
    var f = { q: form.q.value, state: form.state.value, commune: form.commune.value, offset: 0, limit: 50 };
    var rows = {};
    var source = null;
    var seq = 0;

    function setCounts(c) {
      ["total", "online", "degraded", "offline", "unknown"].forEach(function (k) {
        var n = document.getElementById("count-" + k);
        if (n) n.textContent = String(c[k] || 0);
      });
    }

    function row(n) {
      var tr = el("tr", { class: "row-st-" + n.state, dataset: { nodeId: n.id, state: n.state } },
        el("td", null, el("a", { href: "/tech/nodes/" + encodeURIComponent(n.id) }, n.id),
          n.label ? el("div", { class: "muted" }, n.label) : null),
        el("td", { class: "st" }, stateBadge(n.state)),
        el("td", { class: "reasons" }, (n.reasons || []).map(reasonLabel).join(", ")),
        el("td", null, n.village || "–"), el("td", null, n.commune || "–"),
        el("td", { class: "last" }, n.last_heartbeat || "–"));
      return tr;
    }

    function query() {
      var p = new URLSearchParams();
      if (f.q) p.set("q", f.q);
      if (f.state) p.set("state", f.state);
      if (f.commune) p.set("commune", f.commune);
      return p;
    }

    function load() {
      var mine = ++seq;
      var p = query();
      p.set("limit", f.limit); p.set("offset", f.offset);
      api("GET", "/api/v1/nodes?" + p.toString()).then(function (res) {
        if (mine !== seq) return; // a newer request is on its way
        clear(tbody); rows = {};
        if (!res.ok) { tbody.appendChild(el("tr", { class: "empty" }, el("td", { colspan: "6" }, errorText(res)))); return; }
        var page = res.data;
        if (!page.items.length) tbody.appendChild(el("tr", { class: "empty" }, el("td", { colspan: "6" }, _("Không có cụm loa nào khớp."))));
        page.items.forEach(function (n) { var tr = row(n); rows[n.id] = tr; tbody.appendChild(tr); });
        var pages = Math.max(1, Math.ceil(page.total / f.limit));
        info.textContent = _("Trang {page}/{pages}", { page: Math.floor(f.offset / f.limit) + 1, pages: pages }) +
          " · " + _("{n} cụm", { n: page.total });
        prev.disabled = f.offset <= 0;
        next.disabled = f.offset + f.limit >= page.total;
      });
    }
    var reloadSoon = debounce(load, 800);

    function applyChange(n) {
      var tr = rows[n.id];
      if (!tr) {
        if (f.state && n.state === f.state) reloadSoon(); // a node entering the filtered set
        return;
      }
      tr.className = "row-st-" + n.state + " flash-change";
      tr.dataset.state = n.state;
      var st = tr.querySelector("td.st"); clear(st); st.appendChild(stateBadge(n.state));
      tr.querySelector("td.reasons").textContent = (n.reasons || []).map(reasonLabel).join(", ");
    }

    function connect() {
      if (source) source.close();
      source = openLive(f.commune ? "commune=" + encodeURIComponent(f.commune) : "", {
        hello: function (d) { setCounts(d.counts); load(); loadAlarmPanel(); },
        counts: setCounts,
        nodes: function (list) { list.forEach(applyChange); },
        alarms: function () { loadAlarmPanel(); }
      });
      if (!source) load();
    }

    function applyFilters() {
      var communeChanged = f.commune !== form.commune.value;
      f.q = form.q.value.trim(); f.state = form.state.value; f.commune = form.commune.value; f.offset = 0;
      var qs = query().toString();
      history.replaceState(null, "", "/tech" + (qs ? "?" + qs : ""));
      if (communeChanged) connect(); else load();
    }

    form.addEventListener("submit", function (ev) { ev.preventDefault(); applyFilters(); });
    form.q.addEventListener("input", debounce(applyFilters, 350));
    form.state.addEventListener("change", applyFilters);
    form.commune.addEventListener("change", applyFilters);
    prev.addEventListener("click", function () { f.offset = Math.max(0, f.offset - f.limit); load(); });
    next.addEventListener("click", function () { f.offset += f.limit; load(); });
    document.querySelectorAll(".counts a.count").forEach(function (a) {
      a.addEventListener("click", function (ev) { ev.preventDefault(); form.state.value = a.dataset.state; applyFilters(); });
    });
    connect();
    loadPending();
  }

  /* ------------------------------------------------------------------ pending nodes */

  function loadPending() {
    var list = document.getElementById("pending-list");
    if (!list) return;
    api("GET", PAGE.pending_url || "/api/v1/registry/pending").then(function (res) {
      clear(list);
      if (!res.ok) { list.appendChild(el("li", { class: "muted" }, errorText(res))); return; }
      var items = Array.isArray(res.data) ? res.data : (res.data.items || []);
      if (!items.length) { list.appendChild(el("li", { class: "muted" }, _("Không có cụm lạ nào."))); return; }
      items.forEach(function (p) {
        var li = el("li", { dataset: { pending: p.id } }, el("strong", null, p.id), " · ",
          el("span", { class: "muted" }, (p.last_seen || "") + (p.messages ? " · " + p.messages : "")));
        if (PAGE.villages && PAGE.villages.length) {
          var sel = el("select", { "aria-label": "village" });
          PAGE.villages.forEach(function (v) { sel.appendChild(el("option", { value: String(v.id) }, v.name)); });
          var btn = el("button", { type: "button", onclick: function () {
            btn.disabled = true;
            api("POST", (PAGE.approve_url || "/api/v1/registry/pending/{id}/approve").replace("{id}", encodeURIComponent(p.id)),
              { village_id: Number(sel.value) }).then(function (res2) {
              if (!res2.ok) { btn.disabled = false; alert(errorText(res2)); return; }
              loadPending();
            });
          } }, _("Duyệt"));
          li.appendChild(el("div", { class: "row-form" }, sel, btn));
        }
        list.appendChild(li);
      });
    });
  }

  /* ------------------------------------------------------------------ node page */

  function initNode() {
    var badge = document.getElementById("node-state");
    openLive("", {
      nodes: function (list) {
        list.forEach(function (n) {
          if (n.id !== PAGE.node_id || !badge) return;
          badge.className = "state st-" + n.state;
          badge.dataset.state = n.state;
          badge.textContent = stateLabel(n.state);
        });
      }
    });
  }

  /* ------------------------------------------------------------------ start */

  // A node command waits for the node's answer (up to ~10 s for a self-test): say so, and
  // keep a second tap from sending it twice. Delegated from the document and registered as
  // soon as this script runs, so a tap right after the page appears is covered too.
  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (!form.classList || !form.classList.contains("node-action")) return;
    var btn = form.querySelector("button[type=submit]");
    if (!btn) return;
    btn.disabled = true;
    btn.textContent = _("Đang gửi…");
    form.setAttribute("aria-busy", "true");
  });

  window.Loa = { api: api, el: el, clear: clear, _: _, PAGE: PAGE, errorText: errorText, debounce: debounce,
    stateLabel: stateLabel };

  document.addEventListener("DOMContentLoaded", function () {
    if (PAGE.view === "tech") initTech();
    else { loadAlarmBadge(); }
    if (PAGE.view === "node") initNode();
    if (window.LoaPages && window.LoaPages[PAGE.view]) window.LoaPages[PAGE.view](window.Loa);
  });
})();
