// fxflow dashboard: renders what the server pushes over /ws. Every value from the server is set as
// text (textContent, SVG text nodes, chart data), never parsed as HTML.
"use strict";

(function () {
  const LWC = window.LightweightCharts;
  const FEED_LIMIT = 200;
  const TF_MS = { "1m": 60e3, "5m": 300e3, "15m": 900e3, "30m": 1800e3, "1h": 3600e3, "2h": 7200e3, "4h": 14400e3,
    "8h": 28800e3, "1d": 86400e3, "1w": 604800e3 };
  const OPEN = new Set(["pending", "submitted", "accepted", "partially_filled"]);
  const SVG = "http://www.w3.org/2000/svg";

  const $ = (id) => document.getElementById(id);
  const state = { connects: 0, pageErrors: 0, ws: null, retry: 500, pairs: [], timeframes: [], ticks: {}, orders: {},
    runs: {}, indicators: {}, system: { services: [], links: [] }, metrics: null, chartKey: null, chartSignals: [], chartOrders: [],
    currency: "", digits: {} };

  // --- small helpers: text only ------------------------------------------------------------

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }
  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function str(v) { return v === null || v === undefined ? "" : typeof v === "object" ? JSON.stringify(v) : String(v); }
  function isNum(v) { return typeof v === "number" && isFinite(v); }
  function fmt(v, digits) { return isNum(v) ? v.toFixed(digits === undefined ? 2 : digits) : ""; }
  function price(v, symbol) {
    if (!isNum(v)) return "";
    const d = state.digits[symbol];
    return v.toFixed(isNum(d) ? Math.max(0, Math.min(8, d)) : Math.abs(v) >= 100 ? 3 : 5);
  }
  function time(ts) {
    if (!isNum(ts)) return "";
    const d = new Date(ts);
    return isNaN(d) ? "" : d.toISOString().replace("T", " ").slice(0, 19);
  }
  function rate(v) { return isNum(v) ? (v >= 100 ? v.toFixed(0) : v.toFixed(1)) : "–"; }
  function row(cells) {
    const tr = document.createElement("tr");
    for (const c of cells) {
      const td = el("td", c && typeof c === "object" && "text" in c ? c.text : c);
      if (c && typeof c === "object" && c.cls) td.className = c.cls;
      if (c && typeof c === "object" && c.node) td.appendChild(c.node);
      tr.appendChild(td);
    }
    return tr;
  }
  function fillTable(id, rows) {
    const body = $(id).tBodies[0];
    body.replaceChildren(...rows.map(row));
  }
  function prepend(listId, item) {
    const list = $(listId);
    list.insertBefore(item, list.firstChild);
    while (list.children.length > FEED_LIMIT) list.removeChild(list.lastChild);
  }
  function feedItem(ts, tag, text, data) {
    const li = el("li");
    li.appendChild(el("span", time(ts), "time"));
    li.appendChild(el("span", tag, "tag"));
    li.appendChild(document.createTextNode(str(text)));
    for (const [k, v] of Object.entries(data || {})) li.dataset[k] = str(v);
    return li;
  }

  // --- connection ------------------------------------------------------------------------------

  function setStatus(s, text) {
    const pill = $("status");
    pill.dataset.state = s;
    pill.dataset.connects = String(state.connects);
    pill.textContent = text;
  }

  function connect() {
    const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");
    state.ws = ws;
    ws.onopen = () => { state.connects += 1; state.retry = 500; setStatus("live", "live"); };
    ws.onmessage = (event) => {
      let batch;
      try { batch = JSON.parse(event.data); } catch (e) { state.pageErrors += 1; return; }
      for (const update of Array.isArray(batch) ? batch : [batch]) {
        try { apply(update); } catch (e) { state.pageErrors += 1; console.warn("update not shown", e); }
      }
    };
    ws.onclose = () => {
      if (state.ws !== ws) return;
      setStatus("reconnecting", "reconnecting…");
      setTimeout(connect, state.retry);
      state.retry = Math.min(state.retry * 2, 5000);
    };
  }

  function apply(u) {
    switch (u && u.t) {
      case "hello": return hello(u);
      case "tick": return tick(u);
      case "bar": return bar(u);
      case "signal": return signal(u, true);
      case "order": return order(u, true);
      case "fill": return fill(u, true);
      case "alert": return alert_(u, true);
      case "external": return external(u, true);
      case "indicator": return indicator(u);
      case "run": return run(u);
      case "metrics": return metrics(u);
      case "positions": return positions(u);
      case "equity": return equity(u);
      case "performance": return performance(u);
      default: return undefined;
    }
  }

  // --- the first picture ---------------------------------------------------------------------

  function hello(h) {
    state.pairs = Array.isArray(h.pairs) ? h.pairs.map(str) : [];
    state.timeframes = Array.isArray(h.timeframes) ? h.timeframes.map(str) : [];
    state.currency = str(h.currency);
    state.digits = h.digits && typeof h.digits === "object" ? h.digits : {};
    state.system = h.system || { services: [], links: [] };
    fillSelect("symbol", state.pairs);
    fillSelect("timeframe", state.timeframes);
    state.ticks = {}; state.orders = {}; state.runs = {};
    for (const id of ["activity", "alerts", "external"]) $(id).replaceChildren();
    for (const t of h.ticks || []) state.ticks[str(t.symbol)] = t;
    renderQuotes();
    for (const s of h.signals || []) signal(s, false);
    for (const o of h.orders || []) order(o, false);
    for (const f of h.fills || []) fill(f, false);
    for (const a of h.alerts || []) alert_(a, false);
    for (const x of h.external || []) external(x, false);
    state.indicators = {};
    for (const x of h.indicators || []) state.indicators[str(x.series)] = x;
    renderIndicators();
    for (const r of h.runs || []) state.runs[str(r.run_id)] = r;
    renderRuns(); renderOpenOrders();
    drawMap();
    if (h.metrics) metrics(h.metrics);
    loadChart();
  }

  function fillSelect(id, values) {
    const select = $(id);
    const keep = select.value;
    select.replaceChildren(...values.map((v) => { const o = el("option", v); o.value = v; return o; }));
    if (values.includes(keep)) select.value = keep;
    else if (id === "timeframe" && values.includes("1m")) select.value = "1m";
  }

  // --- quotes, activity, alerts, runs -----------------------------------------------------------

  function tick(t) {
    state.ticks[str(t.symbol)] = t;
    scheduleQuotes();
  }
  let quotesPending = false;
  function scheduleQuotes() {
    if (quotesPending) return;
    quotesPending = true;
    requestAnimationFrame(() => { quotesPending = false; renderQuotes(); });
  }
  function renderQuotes() {
    const rows = Object.keys(state.ticks).sort().map((s) => {
      const t = state.ticks[s];
      const spread = isNum(t.bid) && isNum(t.ask) ? t.ask - t.bid : null;
      return [s, { text: price(t.bid, s), cls: "num" }, { text: price(t.ask, s), cls: "num" }, { text: spread === null ? "" : price(spread, s), cls: "num" }];
    });
    fillTable("quotes", rows);
  }

  function signal(s, live) {
    const text = `${str(s.symbol)} ${str(s.timeframe)} ${str(s.side)}` + (isNum(s.confidence) ? ` ${fmt(s.confidence, 2)}` : "") +
      ` ${str(s.model_id)}` + (isNum(s.quantity) ? ` ${fmt(s.quantity, 2)} lots` : "") + (Array.isArray(s.reasons) && s.reasons.length ? ` (${s.reasons.map(str).join("; ")})` : "");
    prepend("activity", feedItem(s.ts, `${str(s.stage)} signal`, text, { side: s.side, kind: "signal" }));
    if (live) chartSignal(s);
  }
  function order(o, live) {
    state.orders[str(o.order_id)] = o;
    const text = `${str(o.symbol)} ${str(o.side)} ${fmt(o.quantity, 2)} lots ${str(o.status)}` +
      (isNum(o.avg_price) ? ` @ ${price(o.avg_price, o.symbol)}` : "") + (o.reason ? ` (${str(o.reason)})` : "");
    prepend("activity", feedItem(o.ts, "order", text, { side: o.side, kind: "order" }));
    if (live) { renderOpenOrders(); chartOrder(o); }
  }
  function fill(f, live) {
    const text = `${str(f.symbol)} ${str(f.side)} ${fmt(f.quantity, 2)} lots @ ${price(f.price, f.symbol)}` + (isNum(f.commission) ? ` commission ${fmt(f.commission)}` : "");
    prepend("activity", feedItem(f.ts, "fill", text, { side: f.side, kind: "fill" }));
  }
  function alert_(a, live) {
    const text = `${str(a.source)}: ${str(a.message)}` + (a.symbol ? ` [${str(a.symbol)}]` : "");
    prepend("alerts", feedItem(a.ts, str(a.type || a.level), text, { level: a.level, kind: "alert" }));
  }
  function external(x, live) {
    const figures = ["actual", "forecast", "previous"].filter((k) => isNum(x[k])).map((k) => `${k} ${x[k]}`).join(", ");
    const text = x.type === "economic_calendar"
      ? `${str(x.country)} ${str(x.title || x.series)}` + (x.impact ? ` (${str(x.impact)})` : "") + (figures ? `: ${figures}` : "")
      : `${str(x.series)} ${isNum(x.value) ? x.value : ""} ${str(x.unit)}` + (x.title ? ` ${str(x.title)}` : "");
    prepend("external", feedItem(x.ts, str(x.type).replace("_", " "), text, { kind: "external" }));
  }
  function indicator(x) {
    state.indicators[str(x.series)] = x;
    renderIndicators();
  }
  function renderIndicators() {
    const rows = Object.values(state.indicators).sort((a, b) => str(a.series).localeCompare(str(b.series)));
    fillTable("indicators", rows.map((x) => [str(x.series), { text: isNum(x.value) ? String(x.value) : "", cls: "num" }, str(x.unit),
      time(x.ts).slice(0, 10), str(x.type).replace("_", " ")]));
  }
  function run(r) {
    state.runs[str(r.run_id)] = r;
    renderRuns();
  }
  function renderRuns() {
    const runs = Object.values(state.runs).sort((a, b) => (b.ts || 0) - (a.ts || 0));
    fillTable("runs", runs.map((r) => {
      const bar = document.createElement("progress");
      bar.max = 1;
      if (isNum(r.progress)) bar.value = Math.max(0, Math.min(1, r.progress));
      else if (r.status === "completed") bar.value = 1;
      const metricsText = r.metrics && typeof r.metrics === "object"
        ? Object.entries(r.metrics).slice(0, 4).map(([k, v]) => `${k} ${isNum(v) ? fmt(v, 3) : str(v)}`).join(", ") : "";
      return [str(r.run_id), [str(r.kind), str(r.family), str(r.model_type)].filter(Boolean).join(" "), str(r.status),
        { node: bar, text: "" }, str(r.message), metricsText];
    }));
  }
  function renderOpenOrders() {
    const open = Object.values(state.orders).filter((o) => OPEN.has(o.status));
    fillTable("open-orders", open.map((o) => [str(o.symbol), str(o.side), { text: fmt(o.quantity, 2), cls: "num" }, str(o.status), str(o.order_id)]));
  }
  function positions(p) {
    const rows = (p.rows || []).filter((r) => isNum(r.quantity) && r.quantity !== 0);
    fillTable("positions", rows.map((r) => [str(r.symbol), { text: fmt(r.quantity, 2), cls: "num" }, { text: price(r.avg_price, r.symbol), cls: "num" },
      { text: fmt(r.unrealized_pnl), cls: "num " + (r.unrealized_pnl >= 0 ? "pos" : "neg") },
      { text: fmt(r.realized_pnl), cls: "num " + (r.realized_pnl >= 0 ? "pos" : "neg") }]));
  }
  function performance(p) {
    const entries = Object.entries(p.metrics || {});
    fillTable("performance", entries.length ? entries.map(([k, v]) => [str(k), { text: isNum(v) ? fmt(v, 4) : "–", cls: "num" }])
      : [[{ text: "no metrics yet", cls: "empty" }, ""]]);
  }

  // --- system map --------------------------------------------------------------------------------

  function layers(services, links) {
    const names = services.map((s) => s.name);
    const depth = Object.fromEntries(names.map((n) => [n, 0]));
    for (let i = 0; i < names.length; i++) {  // longest path, bounded (cycles stop growing after n rounds)
      let changed = false;
      for (const l of links) {
        if (l.kind === "table") continue;
        if (l.source in depth && l.target in depth && depth[l.target] < depth[l.source] + 1 && depth[l.source] + 1 < names.length) {
          depth[l.target] = depth[l.source] + 1; changed = true;
        }
      }
      if (!changed) break;
    }
    return depth;
  }

  function drawMap() {
    const services = (state.system.services || []).filter((s) => s && s.name);
    const links = (state.system.links || []).filter((l) => l && l.source && l.target);
    const depth = layers(services, links);
    const columns = {};
    for (const s of services) (columns[depth[s.name]] = columns[depth[s.name]] || []).push(s);
    const W = 170, H = 46, GX = 60, GY = 14;
    const cols = Object.keys(columns).map(Number).sort((a, b) => a - b);
    const tallest = Math.max(1, ...cols.map((c) => columns[c].length));
    const width = cols.length * (W + GX) + 20, height = tallest * (H + GY) + 20;
    const pos = {};
    cols.forEach((c, i) => columns[c].forEach((s, j) => {
      const offset = (tallest - columns[c].length) * (H + GY) / 2;
      pos[s.name] = { x: 10 + i * (W + GX), y: 10 + offset + j * (H + GY) };
    }));
    const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "system map" });
    const edges = svg("g");
    for (const l of links) {
      const a = pos[l.source], b = pos[l.target];
      if (!a || !b) continue;
      const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2;
      const mid = (x1 + x2) / 2;
      const path = svg("path", { d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`, class: "link" });
      path.dataset.source = str(l.source); path.dataset.kind = str(l.kind);
      path.appendChild(svg("title", {}, `${str(l.source)} → ${str(l.target)}.${str(l.port)} via ${str(l.kind)} ${str(l.via)}`));
      edges.appendChild(path);
    }
    root.appendChild(edges);
    for (const s of services) {
      const p = pos[s.name];
      const g = svg("g", { class: "svc", transform: `translate(${p.x},${p.y})` });
      g.dataset.name = str(s.name); g.dataset.here = String(!!s.here); g.dataset.state = s.here ? "created" : "elsewhere";
      g.appendChild(svg("rect", { width: W, height: H, rx: 5 }));
      g.appendChild(svg("text", { x: 8, y: 16 }, str(s.name)));
      g.appendChild(svg("text", { x: 8, y: 31, class: "rate" }, s.here ? "" : "not in this process"));
      g.appendChild(svg("text", { x: 8, y: 42, class: "dlq" }, ""));
      g.appendChild(svg("title", {}, `${str(s.name)} (${str(s.node)}, ${str(s.phase)}): ${str(s.description)}`));
      root.appendChild(g);
    }
    $("map").replaceChildren(root);
    $("map-note").textContent = `${services.length} services, ${links.length} links`;
  }

  function metrics(m) {
    state.metrics = m;
    const byName = {};
    for (const s of m.services || []) byName[str(s.name)] = s;
    for (const g of document.querySelectorAll("#map .svc")) {
      const s = byName[g.dataset.name];
      if (!s) continue;
      g.dataset.state = str(s.state);
      const [, , rateText, dlq] = g.children;
      rateText.textContent = `${str(s.state)} · in ${rate(s.in_rate)}/s · out ${rate(s.out_rate)}/s`;
      const problems = [];
      if (s.dead_lettered) problems.push(`${s.dead_lettered} dead letters`);
      if (s.errors) problems.push(`${s.errors} errors`);
      if (s.restarts) problems.push(`${s.restarts} restarts`);
      if (s.buffer_dropped) problems.push(`${s.buffer_dropped} dropped`);
      dlq.textContent = problems.join(" · ");
      const title = g.querySelector("title");
      if (title && s.last_error) title.textContent = title.textContent.split("\nlast error")[0] + `\nlast error: ${str(s.last_error)}`;
    }
    for (const path of document.querySelectorAll("#map .link")) {
      const s = byName[path.dataset.source];
      path.dataset.active = String(!!(s && s.out_rate > 0));
    }
    $("event-time").textContent = isNum(m.event_ts) ? `event time ${time(m.event_ts)} UTC` : "";
    const counts = m.counts || {};
    const total = Object.values(counts).reduce((a, b) => a + (isNum(b) ? b : 0), 0);
    $("summary").textContent = `${total} messages seen · ${m.dead_letters || 0} dead letters` +
      (m.dropped ? ` · ${m.dropped} updates dropped for slow pages` : "");
  }

  // --- candles with signals and orders -----------------------------------------------------------

  let chart = null, candles = null, markers = null;
  function ensureChart() {
    if (chart || !LWC) return;
    chart = LWC.createChart($("chart"), {
      autoSize: true,
      layout: { background: { color: "#171d25" }, textColor: "#d8dee6", attributionLogo: false },
      grid: { vertLines: { color: "#222a35" }, horzLines: { color: "#222a35" } },
      timeScale: { timeVisible: true, secondsVisible: false },
    });
    candles = chart.addSeries(LWC.CandlestickSeries, { upColor: "#26a69a", downColor: "#ef5350", borderVisible: false,
      wickUpColor: "#26a69a", wickDownColor: "#ef5350" });
    markers = LWC.createSeriesMarkers(candles, []);
  }
  function chartSelection() { return { symbol: $("symbol").value, timeframe: $("timeframe").value }; }
  function bucket(ts, timeframe) {
    const ms = TF_MS[timeframe] || 60e3;
    return Math.floor(ts / ms) * ms / 1000;
  }
  async function loadChart() {
    ensureChart();
    const { symbol, timeframe } = chartSelection();
    if (!symbol || !timeframe || !candles) return;
    const key = `${symbol}:${timeframe}`;
    state.chartKey = key;
    let body;
    try {
      const response = await fetch(`/api/chart?symbol=${encodeURIComponent(symbol)}&timeframe=${encodeURIComponent(timeframe)}`,
        { credentials: "same-origin", cache: "no-store" });
      if (!response.ok) throw new Error(String(response.status));
      body = await response.json();
    } catch (e) { $("chart-note").textContent = "chart not available"; return; }
    if (state.chartKey !== key) return;
    const data = (body.candles || []).filter((c) => isNum(c.ts) && isNum(c.open) && isNum(c.high) && isNum(c.low) && isNum(c.close))
      .map((c) => ({ time: c.ts / 1000, open: c.open, high: c.high, low: c.low, close: c.close }));
    const d = state.digits[symbol];
    if (isNum(d)) candles.applyOptions({ priceFormat: { type: "price", precision: d, minMove: Math.pow(10, -d) } });
    candles.setData(data);
    state.chartSignals = (body.signals || []).slice();
    state.chartOrders = (body.orders || []).slice();
    drawMarkers();
    chart.timeScale().fitContent();
    $("chart-note").textContent = data.length ? `${data.length} candles` : "no candles yet";
  }
  function drawMarkers() {
    if (!markers) return;
    const { timeframe } = chartSelection();
    const out = [];
    for (const s of state.chartSignals) {
      if (!isNum(s.ts) || (s.side !== "buy" && s.side !== "sell")) continue;
      const buy = s.side === "buy";
      const stage = str(s.stage);
      out.push({ time: bucket(s.ts, timeframe), position: buy ? "belowBar" : "aboveBar",
        shape: stage === "rejected" ? "square" : buy ? "arrowUp" : "arrowDown",
        color: stage === "approved" ? (buy ? "#26e0c8" : "#ff6f6b") : stage === "rejected" ? "#888" : (buy ? "#1b6f66" : "#8a3432"),
        size: stage === "approved" ? 1.3 : 0.7, text: stage === "rejected" ? "✕" : "" });
    }
    for (const o of state.chartOrders) {
      if (!isNum(o.ts) || (o.status !== "filled" && o.status !== "partially_filled")) continue;
      out.push({ time: bucket(o.ts, timeframe), position: "inBar", shape: "circle", color: "#e0c050", size: 0.8,
        text: `${str(o.side)} ${fmt(o.filled_quantity || o.quantity, 2)}` });
    }
    out.sort((a, b) => a.time - b.time);
    markers.setMarkers(out);
  }
  function bar(b) {
    const { symbol, timeframe } = chartSelection();
    if (!candles || b.symbol !== symbol || b.timeframe !== timeframe) return;
    if (![b.ts, b.open, b.high, b.low, b.close].every(isNum)) return;
    try { candles.update({ time: b.ts / 1000, open: b.open, high: b.high, low: b.low, close: b.close }); } catch (e) { /* older than the last candle */ }
  }
  function chartSignal(s) {
    if (s.symbol !== chartSelection().symbol) return;
    state.chartSignals.push(s);
    if (state.chartSignals.length > 2000) state.chartSignals.shift();
    drawMarkers();
  }
  function chartOrder(o) {
    if (o.symbol !== chartSelection().symbol) return;
    state.chartOrders = state.chartOrders.filter((x) => x.order_id !== o.order_id);
    state.chartOrders.push(o);
    drawMarkers();
  }

  // --- equity and drawdown -----------------------------------------------------------------------

  let equityChart = null, equityLine = null, balanceLine = null, ddArea = null, equityFitted = false;
  function equity(e) {
    const points = (e.points || []).filter((p) => isNum(p.ts) && isNum(p.equity));
    if (!LWC) return;
    if (!equityChart) {
      equityChart = LWC.createChart($("equity"), { autoSize: true,
        layout: { background: { color: "#171d25" }, textColor: "#d8dee6", attributionLogo: false },
        grid: { vertLines: { color: "#222a35" }, horzLines: { color: "#222a35" } }, timeScale: { timeVisible: true } });
      equityLine = equityChart.addSeries(LWC.LineSeries, { color: "#5b9bd5", lineWidth: 2, title: "equity" }, 0);
      balanceLine = equityChart.addSeries(LWC.LineSeries, { color: "#7d8896", lineWidth: 1, title: "balance" }, 0);
      ddArea = equityChart.addSeries(LWC.AreaSeries, { lineColor: "#ef5350", topColor: "rgba(239,83,80,0.05)",
        bottomColor: "rgba(239,83,80,0.4)", lineWidth: 1, title: "drawdown %", priceFormat: { type: "percent" } }, 1);
    }
    const seen = new Set();
    const unique = points.filter((p) => { const t = Math.floor(p.ts / 1000); if (seen.has(t)) return false; seen.add(t); return true; });
    equityLine.setData(unique.map((p) => ({ time: Math.floor(p.ts / 1000), value: p.equity })));
    balanceLine.setData(unique.filter((p) => isNum(p.balance)).map((p) => ({ time: Math.floor(p.ts / 1000), value: p.balance })));
    ddArea.setData(unique.filter((p) => isNum(p.drawdown)).map((p) => ({ time: Math.floor(p.ts / 1000), value: -100 * p.drawdown })));
    if (unique.length && !equityFitted) { equityChart.timeScale().fitContent(); equityFitted = true; }
    const last = unique[unique.length - 1];
    $("equity-note").textContent = last
      ? `${fmt(last.equity)} ${state.currency} · max drawdown ${fmt(100 * (e.max_drawdown || 0))} % · now ${fmt(100 * (e.drawdown || 0))} %`
      : "no equity marks yet";
  }

  // --- start -----------------------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    $("symbol").addEventListener("change", loadChart);
    $("timeframe").addEventListener("change", loadChart);
    setStatus("connecting", "connecting…");
    connect();
  });
  window.fxflowDashboard = { state, reconnectCount: () => state.connects, pageErrors: () => state.pageErrors };
})();
