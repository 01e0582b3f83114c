"""The backtest report: one HTML file that works offline (inline SVG and CSS, a small inline script).

What it shows comes from performance-monitoring's ``performance_report.v1`` (equity curve,
trades, metrics, P&L per symbol) and from the bars the engine replayed (the price lines):

- the metrics table, the equity curve with the balance, and the drawdown under it;
- each symbol's price with its trades (entry ▲ buy / ▼ sell at the entry price, ● at the exit);
- monthly returns (from the equity at each month's last mark), P&L per symbol, the trades.

Deterministic: the same report and bars give the same bytes (no wall-clock time in the page).
The page checks itself when it loads: every chart must have drawn a line, and a script error
anywhere is caught; the outcome is in ``<body data-status>`` (``ok`` or ``error: …``), which is
what the headless-browser test reads.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np

from nodes.trading.metrics import drawdown_curve

WIDTH, HEIGHT, PAD = 960, 260, 48
TRADE_ROWS = 500


def iso(ts_ms: int | float | None, minutes: bool = True) -> str:
    if ts_ms is None or not math.isfinite(float(ts_ms)):
        return "—"
    when = datetime.fromtimestamp(int(ts_ms) / 1000, timezone.utc)
    return when.strftime("%Y-%m-%d %H:%M") if minutes else when.strftime("%Y-%m-%d")


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


PERCENT = frozenset({"total_return", "annual_return", "max_drawdown", "current_drawdown", "win_rate"})


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return f"{int(value):,}"
        return f"{value:,.{digits}f}" if abs(value) < 1e6 else f"{value:,.0f}"
    return _e(value)


def _metric(name: str, value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        if name in PERCENT:
            return f"{value * 100:.2f}%"
        if name.endswith("_ms"):
            hours = value / 3_600_000
            return f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} hours"
    return _fmt(value)


def downsample(x: np.ndarray, y: np.ndarray, points: int) -> tuple[np.ndarray, np.ndarray]:
    """At most about ``points`` points that keep each bucket's first, lowest and highest values (spikes stay visible)."""
    n = len(x)
    if n <= points:
        return x, y
    buckets = max(1, points // 3)
    edges = np.linspace(0, n, buckets + 1).astype(np.int64)
    keep: list[int] = []
    for lo, hi in zip(edges[:-1].tolist(), edges[1:].tolist()):
        if hi <= lo:
            continue
        part = y[lo:hi]
        keep.extend(sorted({lo, lo + int(np.argmin(part)), lo + int(np.argmax(part))}))
    index = np.asarray(keep, dtype=np.int64)
    return x[index], y[index]


class _Scale:
    def __init__(self, xs: Sequence[np.ndarray], ys: Sequence[np.ndarray], height: int) -> None:
        xs_all = np.concatenate([np.asarray(x, np.float64) for x in xs if len(x)]) if any(len(x) for x in xs) else np.zeros(1)
        ys_all = np.concatenate([np.asarray(y, np.float64) for y in ys if len(y)]) if any(len(y) for y in ys) else np.zeros(1)
        ys_all = ys_all[np.isfinite(ys_all)] if np.isfinite(ys_all).any() else np.zeros(1)
        self.x0, self.x1 = float(xs_all.min()), float(xs_all.max())
        self.y0, self.y1 = float(ys_all.min()), float(ys_all.max())
        if self.x1 == self.x0:
            self.x1 = self.x0 + 1.0
        if self.y1 == self.y0:
            pad = abs(self.y0) * 0.01 or 1.0
            self.y0, self.y1 = self.y0 - pad, self.y1 + pad
        self.height = height

    def x(self, v: Any) -> np.ndarray:
        return PAD + (np.asarray(v, np.float64) - self.x0) / (self.x1 - self.x0) * (WIDTH - 2 * PAD)

    def y(self, v: Any) -> np.ndarray:
        return self.height - PAD / 2 - (np.asarray(v, np.float64) - self.y0) / (self.y1 - self.y0) * (self.height - PAD)


def _path(scale: _Scale, x: np.ndarray, y: np.ndarray) -> str:
    ok = np.isfinite(np.asarray(y, np.float64))
    px, py = scale.x(np.asarray(x)[ok]), scale.y(np.asarray(y)[ok])
    if not len(px):
        return ""
    return "M" + " L".join(f"{a:.1f},{b:.1f}" for a, b in zip(px.tolist(), py.tolist()))


def _y_label(v: float, y_format: str) -> str:
    if y_format == "percent":
        return f"{v * 100:.2f}%".replace("-0.00%", "0.00%")
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.5g}"


def _x_label(v: float, span_ms: float) -> str:
    when = datetime.fromtimestamp(int(v) / 1000, timezone.utc)
    return when.strftime("%m-%d %H:%M") if span_ms < 3 * 86_400_000 else when.strftime("%Y-%m-%d")


def _axes(scale: _Scale, y_format: str) -> str:
    out = [f'<line class="axis" x1="{PAD}" y1="{scale.height - PAD / 2}" x2="{WIDTH - PAD}" y2="{scale.height - PAD / 2}"/>']
    for v in np.linspace(scale.y0, scale.y1, 5).tolist():
        y = float(scale.y(v))
        out.append(f'<line class="grid" x1="{PAD}" y1="{y:.1f}" x2="{WIDTH - PAD}" y2="{y:.1f}"/>')
        out.append(f'<text class="tick" x="{PAD - 4}" y="{y + 3:.1f}" text-anchor="end">{_e(_y_label(v, y_format))}</text>')
    for v in np.linspace(scale.x0, scale.x1, 5).tolist():
        x = float(scale.x(v))
        label = _x_label(v, scale.x1 - scale.x0)
        out.append(f'<text class="tick" x="{x:.1f}" y="{scale.height - 4}" text-anchor="middle">{_e(label)}</text>')
    return "".join(out)


def svg_chart(
    name: str, lines: Sequence[tuple[str, np.ndarray, np.ndarray, str]], *, height: int = HEIGHT, y_format: str = "number",
    markers: str = "", scale: _Scale | None = None, fill: bool = False,
) -> str:  # fmt: skip
    """An SVG line chart (``lines``: label, x in epoch ms, y, CSS class); ``markers`` are extra SVG drawn on top."""
    scale = scale or _Scale([x for _, x, _, _ in lines], [y for _, _, y, _ in lines], height)
    paths = []
    for label, x, y, css in lines:
        d = _path(scale, x, y)
        if fill and d:
            base = float(scale.y(0.0))
            first, last = float(scale.x(x[0])), float(scale.x(x[-1]))
            paths.append(f'<path class="area {css}" d="{d} L{last:.1f},{base:.1f} L{first:.1f},{base:.1f} Z"/>')
        paths.append(f'<path class="line {css}" data-points="{len(x)}" d="{d}"><title>{_e(label)}</title></path>')
    legend = "".join(f'<span class="key {css}">{_e(label)}</span>' for label, _, _, css in lines)
    return (f'<figure class="chart" data-chart="{_e(name)}"><figcaption>{legend}</figcaption>'
            f'<svg viewBox="0 0 {WIDTH} {height}" width="100%" role="img" aria-label="{_e(name)}">'
            f'{_axes(scale, y_format)}{"".join(paths)}{markers}</svg></figure>')  # fmt: skip


def _trade_markers(scale: _Scale, trades: Sequence[Mapping[str, Any]]) -> str:
    out = []
    for t in trades:
        buy = t.get("side") == "buy"
        x, y = float(scale.x(t["open_ts"])), float(scale.y(t["entry_price"]))
        tip = f"{t.get('side')} {t.get('volume')} at {t.get('entry_price')} ({iso(t['open_ts'])})"
        shape = f"{x:.1f},{y - 6:.1f} {x - 5:.1f},{y + 4:.1f} {x + 5:.1f},{y + 4:.1f}" if buy else \
            f"{x:.1f},{y + 6:.1f} {x - 5:.1f},{y - 4:.1f} {x + 5:.1f},{y - 4:.1f}"  # fmt: skip
        out.append(f'<polygon class="entry {"buy" if buy else "sell"}" points="{shape}"><title>{_e(tip)}</title></polygon>')
        if t.get("close_ts") is not None and t.get("exit_price") is not None:
            cx, cy = float(scale.x(t["close_ts"])), float(scale.y(t["exit_price"]))
            pnl = t.get("pnl")
            css = "win" if isinstance(pnl, (int, float)) and pnl > 0 else "loss"
            tip = f"exit at {t['exit_price']} ({iso(t['close_ts'])}), P&L {_fmt(pnl, 2)}"
            out.append(f'<line class="hold {css}" x1="{x:.1f}" y1="{y:.1f}" x2="{cx:.1f}" y2="{cy:.1f}"/>')
            out.append(f'<circle class="exit {css}" cx="{cx:.1f}" cy="{cy:.1f}" r="3.5"><title>{_e(tip)}</title></circle>')
    return "".join(out)


def monthly_returns(curve: Sequence[Mapping[str, Any]]) -> dict[int, dict[int, float]]:
    """year → month → the equity's return over the month (from the last mark before it to its last mark)."""
    out: dict[int, dict[int, float]] = {}
    previous: float | None = None
    last: dict[tuple[int, int], float] = {}
    for point in curve:
        when = datetime.fromtimestamp(int(point["ts"]) / 1000, timezone.utc)
        if previous is None:
            previous = float(point["equity"])
        last[(when.year, when.month)] = float(point["equity"])
    for (year, month), equity in sorted(last.items()):
        assert previous is not None
        out.setdefault(year, {})[month] = equity / previous - 1.0 if previous else math.nan
        previous = equity
    return out


def _monthly_table(curve: Sequence[Mapping[str, Any]]) -> str:
    table = monthly_returns(curve)
    if not table:
        return '<p class="none">No equity marks.</p>'
    head = "".join(f"<th>{m}</th>" for m in ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec", "Year"))
    rows = []
    for year, months in sorted(table.items()):
        cells = []
        for month in range(1, 13):
            r = months.get(month)
            cells.append("<td></td>" if r is None else f'<td class="{"up" if r >= 0 else "down"}">{r * 100:.2f}%</td>')
        year_r = float(np.prod([1 + r for r in months.values()]) - 1)
        cells.append(f'<td class="{"up" if year_r >= 0 else "down"}"><b>{year_r * 100:.2f}%</b></td>')
        rows.append(f"<tr><th>{year}</th>{''.join(cells)}</tr>")
    return f'<table class="monthly"><tr><th></th>{head}</tr>{"".join(rows)}</table>'


def _kv_table(css: str, items: Sequence[tuple[str, Any]]) -> str:
    return f'<table class="{css}">' + "".join(f"<tr><th>{_e(k)}</th><td>{_metric(k, v)}</td></tr>" for k, v in items) + "</table>"


def _trades_table(trades: Sequence[Mapping[str, Any]]) -> str:
    if not trades:
        return '<p class="none">No closed trade.</p>'
    head = "<tr><th>symbol</th><th>side</th><th>volume</th><th>open</th><th>entry</th><th>close</th><th>exit</th><th>P&amp;L</th></tr>"
    rows = [
        f"<tr><td>{_e(t.get('symbol'))}</td><td>{_e(t.get('side'))}</td><td>{_fmt(t.get('volume'), 2)}</td><td>{iso(t.get('open_ts'))}</td>"
        f"<td>{_fmt(t.get('entry_price'), 5)}</td><td>{iso(t.get('close_ts'))}</td><td>{_fmt(t.get('exit_price'), 5)}</td>"
        f"<td class=\"{'up' if (t.get('pnl') or 0) >= 0 else 'down'}\">{_fmt(t.get('pnl'), 2)}</td></tr>"
        for t in trades[:TRADE_ROWS]
    ]
    more = f"<p>… and {len(trades) - TRADE_ROWS} more.</p>" if len(trades) > TRADE_ROWS else ""
    return f'<table class="trades">{head}{"".join(rows)}</table>{more}'


CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,sans-serif;margin:24px auto;max-width:1000px;color:#1d2330;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #e3e6ec;padding-bottom:4px}
.meta{color:#5a6272;font-size:12px;word-break:break-all}.none{color:#8a93a3}
table{border-collapse:collapse;font-size:12.5px}th,td{padding:3px 8px;border-bottom:1px solid #eef0f4;text-align:right}
th{color:#5a6272;font-weight:600}td:first-child,th:first-child{text-align:left}
.metrics{float:left;margin-right:32px}.up{color:#137a3a}.down{color:#b3261e}
.chart{margin:8px 0}.chart figcaption{font-size:12px;color:#5a6272}.key{margin-right:14px}.key:before{content:"";display:inline-block;width:14px;height:3px;margin-right:4px;vertical-align:middle;background:currentColor}
svg{display:block;overflow:visible}.axis{stroke:#9aa3b2}.grid{stroke:#eef0f4}.tick{font-size:10px;fill:#7a8394}
.line{fill:none;stroke-width:1.3}.equity{color:#2459d6;stroke:#2459d6}.balance{color:#8a93a3;stroke:#8a93a3;stroke-dasharray:4 3}
.drawdown{color:#b3261e;stroke:#b3261e}.area.drawdown{fill:#b3261e22;stroke:none}.price{color:#3b4252;stroke:#3b4252;stroke-width:1}
.entry.buy{fill:#137a3a}.entry.sell{fill:#b3261e}.exit{stroke:#1d2330;stroke-width:1}.exit.win{fill:#7ed39b}.exit.loss{fill:#f2a19a}
.hold{stroke-width:1;stroke-dasharray:2 2}.hold.win{stroke:#137a3a}.hold.loss{stroke:#b3261e}.clear{clear:both}
#tip{position:fixed;pointer-events:none;background:#1d2330;color:#fff;font-size:12px;padding:3px 6px;border-radius:3px;display:none}
"""

SCRIPT = """
(function(){
  var errors=[];
  window.addEventListener('error',function(e){errors.push(String(e.message||e));document.body.dataset.status='error: '+errors.join('; ');});
  function check(){
    var charts=document.querySelectorAll('figure.chart'),bad=[];
    charts.forEach(function(f){
      var lines=f.querySelectorAll('path.line'),drawn=0;
      lines.forEach(function(p){var d=p.getAttribute('d')||'';if(d.split('L').length>1&&p.getTotalLength()>0)drawn++;});
      if(!drawn)bad.push(f.dataset.chart);
    });
    if(errors.length)return;
    document.body.dataset.charts=String(charts.length);
    document.body.dataset.status=bad.length?'error: empty chart '+bad.join(', '):(charts.length?'ok':'error: no chart');
  }
  var tip=document.getElementById('tip');
  document.addEventListener('mousemove',function(e){
    var t=e.target.closest&&e.target.closest('polygon,circle');var title=t&&t.querySelector('title');
    if(!title){tip.style.display='none';return;}
    tip.textContent=title.textContent;tip.style.display='block';tip.style.left=(e.clientX+12)+'px';tip.style.top=(e.clientY+12)+'px';
  });
  if(document.readyState==='loading')document.addEventListener('DOMContentLoaded',check);else check();
})();
"""


def render(
    run_id: str, report: Mapping[str, Any] | None, prices: Mapping[str, Mapping[str, np.ndarray]], details: Mapping[str, Any],
    *, price_points: int = 4000, preface: str = "",
) -> str:  # fmt: skip
    """The report page. ``prices``: symbol → bar columns (``ts_close``, ``close``) of the finest timeframe replayed;
    ``preface``: HTML put under the heading (a walk-forward's folds)."""
    params = details.get("params") or {}
    title = f"Backtest {run_id}"
    parts = [f"<h1>{_e(title)}</h1>"]
    meta = [
        f"{_e(params.get('start'))} → {_e(params.get('end'))}",
        f"symbols {_e(', '.join(details.get('symbols') or []))}",
        f"timeframes {_e(', '.join(details.get('timeframes') or []))}",
        f"source {_e(params.get('source'))}",
        f"models {_e(', '.join(f'{k} ({v} orders filled)' for k, v in (details.get('models') or {}).items()) or 'none')}",
        f"config {_e(details.get('config_hash') or '?')}",
    ]
    parts.append(f'<p class="meta">{" · ".join(meta)}</p>')
    if preface:
        parts.append(preface)
    trades: list[Mapping[str, Any]] = list(report.get("trades") or []) if report else []
    curve: list[Mapping[str, Any]] = list(report.get("equity_curve") or []) if report else []
    if report is None:
        parts.append('<p class="none">performance-monitoring gave no report (is it enabled in this profile?): prices only.</p>')
    else:
        metrics = report.get("metrics") or {}
        account = [("currency", report.get("currency")), ("balance", report.get("balance")), ("equity", report.get("equity")),
                   ("margin", report.get("margin")), ("open positions", report.get("open_positions"))]  # fmt: skip
        parts.append("<h2>Metrics</h2>")
        parts.append(_kv_table("metrics", [(k, metrics[k]) for k in metrics]))
        parts.append(_kv_table("metrics", account + [(f"P&L {s}", v) for s, v in sorted((report.get("pnl_by_symbol") or {}).items())]))
        parts.append('<div class="clear"></div>')
        if curve:
            ts = np.array([int(p["ts"]) for p in curve], dtype=np.int64)
            equity = np.array([float(p["equity"]) for p in curve])
            balance = np.array([float(p.get("balance", math.nan)) for p in curve])
            parts.append("<h2>Equity</h2>")
            parts.append(svg_chart("equity", [("equity", ts, equity, "equity"), ("balance", ts, balance, "balance")]))
            parts.append("<h2>Drawdown</h2>")
            parts.append(svg_chart("drawdown", [("drawdown", ts, -drawdown_curve(equity), "drawdown")], height=160, y_format="percent", fill=True))
        else:
            parts.append('<p class="none">No equity marks.</p>')
    parts.append("<h2>Prices and trades</h2>")
    for symbol, columns in prices.items():
        x, y = np.asarray(columns["ts_close"]), np.asarray(columns["close"])
        if not len(x):
            continue
        x, y = downsample(x, y, price_points)
        own = [t for t in trades if t.get("symbol") == symbol]
        ys = [y] + [np.array([t["entry_price"] for t in own] + [t["exit_price"] for t in own if t.get("exit_price") is not None])]
        xs = [x] + [np.array([t["open_ts"] for t in own] + [t["close_ts"] for t in own if t.get("close_ts") is not None])]
        scale = _Scale(xs, ys, HEIGHT)
        parts.append(svg_chart(f"price {symbol}", [(f"{symbol} close ({len(own)} trades)", x, y, "price")], scale=scale,
                               markers=_trade_markers(scale, own)))  # fmt: skip
    parts.append("<h2>Monthly returns</h2>")
    parts.append(_monthly_table(curve))
    parts.append(f"<h2>Trades ({len(trades)})</h2>")
    parts.append(_trades_table(trades))
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f'<style>{CSS}</style></head><body data-status="loading">\n{body}\n<div id="tip"></div>'
            f"<script>{SCRIPT}</script></body></html>\n")  # fmt: skip
