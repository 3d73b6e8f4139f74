"""The comparison a user or CI decides by: report.json turned into rows per artifact, rendered as a rich
table, a Markdown PR comment, or one self-contained HTML file with inline SVG charts (no JavaScript, no network).

Reads the typed report and tolerates any section being missing; every status and the overall line come from
the report's one verdict (passes/report/verdict.py), so they agree with the exit code.
"""
from __future__ import annotations

import html
import math
from typing import Any

from mdeploy.passes.core.artifact import DEPLOYMENT_TARGET
from mdeploy.passes.core.limits import human_bytes
from mdeploy.passes.report.model import Report
from mdeploy.passes.report.sections import ArtifactRecord, Bench, Quality, SourceMetrics, Validation


def _num(x: Any) -> float | None:
    """A finite float, or None (report.json writes inf/nan as strings)."""
    if isinstance(x, bool) or x is None:
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _p50(latency_ms: dict[str, Any] | None) -> float | None:
    return _num((latency_ms or {}).get("p50"))


def comparison_rows(report: Report) -> list[dict[str, Any]]:
    """One row per artifact, the source first: the numbers every rendering shows. Status comes from the verdict."""
    verdict = report.verdict
    metrics = report.source_metrics or SourceMetrics()
    source_size = _num(report.source.size_bytes)
    source_bench = metrics.bench or Bench()
    source_lat = _p50(source_bench.latency_ms)
    source_acc = _num(metrics.accuracy)
    rows = [{
        "name": "source", "format": report.source.format or "-", "precision": "float32", "sparsity": None,
        "size_bytes": source_size, "size_ratio": 1.0 if source_size else None, "latency_ms": source_lat,
        "speedup": 1.0 if source_lat else None, "accuracy": source_acc, "accuracy_change": None,
        "status": "source", "why": "", "target": "source", "best": False,
    }]
    for a in report.artifacts:
        validation = a.validation or Validation()
        quality = a.quality or Quality()
        bench = a.bench or Bench()
        size = _num(a.size_bytes)
        lat = _p50(bench.latency_ms)
        same_batch = bench.batch == source_bench.batch
        acc, drop = _num(validation.accuracy), _num(validation.accuracy_drop)
        if acc is None:
            acc, drop = _num(quality.accuracy), _num(quality.accuracy_drop)
        if acc is None and a.pruning is not None:  # prune measured it before and after, on its --data
            acc = _num(a.pruning.accuracy_after)
        if acc is None and a.structured is not None:
            acc = _num(a.structured.accuracy_after)
        if drop is None and acc is not None and source_acc is not None:
            drop = source_acc - acc
        v = verdict.artifacts[a.name]
        sparsity = _num(a.sparsity)
        if sparsity is None and a.pruning is not None:
            sparsity = _num(a.pruning.sparsity)
        rows.append({
            "name": a.name, "format": a.format or "-", "precision": a.precision or "float32",
            "sparsity": sparsity, "size_bytes": size,
            "size_ratio": size / source_size if size and source_size else None,
            "latency_ms": lat, "speedup": source_lat / lat if lat and source_lat and same_batch else None,
            "accuracy": acc, "accuracy_change": None if drop is None else 0.0 - drop,
            "status": "-" if v.status == "unchecked" else v.status, "why": v.metric_text,
            "target": DEPLOYMENT_TARGET.get(a.format or "", "-"), "best": False,
            "eligible": v.status in ("ok", "unchecked"),
        })
    _mark_best(rows)
    return rows


def _mark_best(rows: list[dict[str, Any]]) -> None:
    """Best per target among artifacts that passed: the fastest (p50) when measured, else the smallest."""
    for target in ("cloud", "edge"):
        pool = [r for r in rows if r["target"] == target and r.get("eligible")]
        timed = [r for r in pool if r["latency_ms"] is not None]
        if timed:
            min(timed, key=lambda r: r["latency_ms"])["best"] = True
        elif pool:
            sized = [r for r in pool if r["size_bytes"] is not None]
            if sized:
                min(sized, key=lambda r: r["size_bytes"])["best"] = True


# --------------------------------------------------------------------------- cell formatting

def _pct(x: float | None, signed: bool = False) -> str:
    """An accuracy as 99.33%, or a change of accuracy in percentage points, new minus old: -0.33 pp is a loss."""
    if x is None:
        return "-"
    return f"{x * 100 + 0.0:+.2f} pp" if signed else f"{x * 100:.2f}%"


def _x(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def _ms(x: float | None) -> str:
    return "-" if x is None else (f"{x:.3f} ms" if x < 10 else f"{x:.1f} ms")


def cells(row: dict[str, Any]) -> list[str]:
    status = row["status"] + (f" ({row['why']})" if row["why"] else "")
    return [row["name"] + (" ★" if row["best"] else ""), row["format"], row["precision"],
            "-" if row["sparsity"] is None else f"{row['sparsity'] * 100:.0f}%",
            human_bytes(row["size_bytes"]), _x(row["size_ratio"]), _ms(row["latency_ms"]), _x(row["speedup"]),
            _pct(row["accuracy"]), _pct(row["accuracy_change"], signed=True), status]


# The terminal table has to fit 80 columns; Markdown and HTML spell the headers out.
SHORT_HEADERS = ["artifact", "format", "prec", "sparse", "size", "×src", "p50", "speedup", "acc", "Δacc", "check"]
HEADERS = ["artifact", "format", "precision", "sparsity", "size", "size vs source", "latency p50", "speedup",
           "accuracy", "accuracy change", "status"]


def _gate_line(report: Report) -> str | None:
    thresholds = report.validation_thresholds
    if thresholds is None:
        return None
    parts = [f"{k.replace('_', '-')} {v}" for k, v in thresholds.to_dict().items() if v is not None]
    return "gate: " + (", ".join(parts) if parts else "task defaults")


def verdict_lines(report: Report) -> list[str]:
    """The verdict in words: overall, then each rejected or failed artifact with its metric, and what was not gated."""
    v = report.verdict
    lines = [f"Verdict: {v.label} (exit {v.exit_code})" + ("" if v.ok else f": {v.message()}")]
    for a in v.artifacts.values():
        if a.gate and a.status in ("ok", "rejected", "failed"):
            lines.append(f"{a.name}: {a.status}; gate: {a.gate}")
    if v.ungated:
        lines.append(f"warning: nothing gated {', '.join(v.ungated)}: no threshold applied to any output")
    return lines


def _machine_line(report: Report) -> str | None:
    m = report.bench_machine
    if not m:
        return None
    return f"machine: {m.get('cpu', '?')}, {m.get('logical_cores', '?')} cores, {m.get('os', '')}".rstrip(", ")


def _title(report: Report) -> str:
    return f"mdeploy report: {report.source.path or '?'}"


# --------------------------------------------------------------------------- renderings

def to_table(report: Report):
    """A rich Table (the CLI prints it). The best artifact per target is starred and green."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    notes = [n for n in (_gate_line(report), _machine_line(report)) if n] + verdict_lines(report)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, title=_title(report), caption="★ best passing artifact per target (cloud: onnx/savedmodel, edge: tflite)"
                  + ("\n" + "\n".join(notes) if notes else ""))
    for h, short in zip(HEADERS, SHORT_HEADERS):
        table.add_column(short, justify="left" if h in ("artifact", "format", "precision", "status") else "right",
                         no_wrap=h in ("artifact", "format"))
    for row in comparison_rows(report):
        c = cells(row)
        colour = {"ok": "green", "failed": "red", "rejected": "red"}.get(row["status"])
        if colour:
            c[-1] = f"[{colour}]{escape(c[-1])}[/]"
        table.add_row(*c, style="bold green" if row["best"] else None)
    return table


def to_markdown(report: Report) -> str:
    """A GitHub-flavoured table plus the gate and machine: fits a pull-request comment."""
    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    lines = [f"### {esc(_title(report))}", "", "| " + " | ".join(HEADERS) + " |",
             "|" + "|".join("---:" if i >= 3 and i < len(HEADERS) - 1 else "---" for i in range(len(HEADERS))) + "|"]
    for row in comparison_rows(report):
        c = cells(row)
        if row["best"]:
            c[0] = f"**{c[0]}**"
        if row["status"] in ("failed", "rejected"):
            c[-1] = f"❌ {c[-1]}"
        elif row["status"] == "ok":
            c[-1] = f"✅ {c[-1]}"
        lines.append("| " + " | ".join(esc(x) for x in c) + " |")
    lines += ["", "★ best passing artifact per target (cloud: onnx/savedmodel, edge: tflite)"]
    for note in (_gate_line(report), _machine_line(report)):
        if note:
            lines.append(f"<br>{esc(note)}")
    lines += structured_lines(report)
    verdict = verdict_lines(report)
    lines += ["", f"Overall: **{report.verdict.label}** (exit {report.verdict.exit_code})", ""]
    lines += [f"- {esc(x)}" for x in verdict[1:]]
    lines += layer_markdown(report)
    return "\n".join(lines) + "\n"


def structured_lines(report: Report) -> list[str]:
    """Markdown: FLOPs, parameters, size and latency before and after of each structurally pruned artifact."""
    lines: list[str] = []
    for a in report.artifacts:
        s = a.structured
        if s is None or not s.flops_before:
            continue
        how = f"FLOPs target {s.flops_target:g}" if s.flops_target is not None else f"ratio {s.ratio:g}"
        multiple = "" if s.channel_multiple is None else f", channel multiple {s.channel_multiple}"
        lines += ["", f"#### Structured pruning: {a.name} ({how}, {s.criterion}{multiple})", "",
                  "| | before | after | after / before |", "|---|---:|---:|---:|"]
        for label, before, after in (("FLOPs", s.flops_before, s.flops_after), ("parameters", s.params_before, s.params_after),
                                     ("size (bytes)", s.size_bytes_before, s.size_bytes_after),
                                     (f"latency p50 ms ({s.latency_runtime})", s.latency_ms_before, s.latency_ms_after)):
            if before:
                lines.append(f"| {label} | {before:,.3f} | {after:,.3f} | {after / before:.2f} |" if isinstance(before, float)
                             else f"| {label} | {before:,} | {after:,} | {after / before:.2f} |")
        frozen = [g for g in s.groups or [] if g.get("frozen")]
        whole = "; ".join(f"{g['producers'][0]}: {g['frozen']}" for g in frozen[:3])
        lines.append(f"<br>{len(s.groups or []) - len(frozen)} channel groups pruned, {len(frozen)} left whole ({whole})")
    return lines


def svg_bar_chart(title: str, items: list[tuple[str, float | None, str, str]], unit: str, width: int = 520) -> str:
    """A horizontal bar chart as inline SVG: items are (label, value, shown text, extra CSS class: best|failed|"")."""
    bar_h, gap, label_w, top = 20, 8, 130, 28
    values = [v for _, v, _, _ in items if v is not None]
    vmax = max(values) if values else 1.0
    plot_w = width - label_w - 110
    height = top + len(items) * (bar_h + gap) + 4
    parts = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{html.escape(title)}">',
             f'<text x="0" y="16" class="chart-title">{html.escape(title)} ({html.escape(unit)})</text>']
    for i, (label, value, text, kind) in enumerate(items):
        y = top + i * (bar_h + gap)
        parts.append(f'<text x="{label_w - 8}" y="{y + bar_h * 0.72:.1f}" text-anchor="end" class="label">{html.escape(label)}</text>')
        if value is None:
            parts.append(f'<text x="{label_w}" y="{y + bar_h * 0.72:.1f}" class="missing">not measured</text>')
            continue
        w = max(2.0, plot_w * value / vmax) if vmax > 0 else 2.0
        parts.append(f'<rect class="bar{" " + kind if kind else ""}" x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" rx="3">'
                     f'<title>{html.escape(label)}: {html.escape(text)}</title></rect>')
        parts.append(f'<text x="{label_w + w + 6:.1f}" y="{y + bar_h * 0.72:.1f}" class="value">{html.escape(text)}</text>')
    parts.append("</svg>")
    return "".join(parts)


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#1f2328;background:#fff}
h1{font-size:20px;margin:0 0 4px} p.meta{color:#59636e;margin:2px 0}
.charts{display:flex;flex-wrap:wrap;gap:24px;margin:20px 0}
.chart text{font-size:12px;fill:#1f2328} .chart .chart-title{font-weight:600;font-size:13px}
.chart .bar{fill:#4c8bf5} .chart .bar.best{fill:#1a7f37} .chart .bar.failed{fill:#cf222e} .chart .missing{fill:#8c959f;font-style:italic}
table{border-collapse:collapse;font-size:13px} th,td{border:1px solid #d1d9e0;padding:4px 8px}
th{background:#f6f8fa;text-align:left} td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.best td{background:#dafbe1;font-weight:600} td.failed,td.rejected{color:#cf222e;font-weight:600} td.ok{color:#1a7f37}
"""


def to_html(report: Report) -> str:
    """One self-contained page: inline CSS, inline SVG bar charts of size, latency and accuracy, and the table."""
    rows = comparison_rows(report)
    kinds = ["best" if r["best"] else ("failed" if r["status"] in ("failed", "rejected") else "") for r in rows]
    size_items = [(r["name"], r["size_bytes"] / 1024 if r["size_bytes"] else None, human_bytes(r["size_bytes"]), k)
                  for r, k in zip(rows, kinds)]
    lat_items = [(r["name"], r["latency_ms"], _ms(r["latency_ms"]), k) for r, k in zip(rows, kinds)]
    acc_items = [(r["name"], r["accuracy"] * 100 if r["accuracy"] is not None else None, _pct(r["accuracy"]), k)
                 for r, k in zip(rows, kinds)]
    charts = [svg_bar_chart("Size", size_items, "KB"), svg_bar_chart("Latency p50", lat_items, "ms, lower is better"),
              svg_bar_chart("Accuracy", acc_items, "%")]
    numeric = {4, 5, 6, 7, 8, 9, 3}
    body = ["<table id=\"comparison\"><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in HEADERS) + "</tr></thead><tbody>"]
    for r in rows:
        c = cells(r)
        tds = "".join(f'<td class="{"num" if i in numeric else ""}{" " + r["status"] if i == len(c) - 1 else ""}">'
                      f"{html.escape(x)}</td>" for i, x in enumerate(c))
        body.append(f'<tr class="{"best" if r["best"] else ""}" data-artifact="{html.escape(r["name"])}">{tds}</tr>')
    body.append("</tbody></table>")
    notes = [n for n in (_gate_line(report), _machine_line(report)) if n] + verdict_lines(report)
    meta = "".join(f'<p class="meta">{html.escape(n)}</p>' for n in notes)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(_title(report))}</title><style>{_CSS}</style></head><body>"
            f"<h1>{html.escape(_title(report))}</h1>{meta}"
            '<p class="meta">★ best passing artifact per target (cloud: onnx/savedmodel, edge: tflite); '
            'bars: green = best, red = failed a check</p>'
            f'<div class="charts">{"".join(charts)}</div>{"".join(body)}{layer_html(report)}</body></html>\n')


# --------------------------------------------------------------------------- layer errors and the budget search

LAYER_ROWS = 15  # the worst layers shown in the terminal, report.md and the chart (report.json has them all)


def _db(x: Any) -> str:
    v = _num(x)
    if v is None:
        return "inf" if x in ("inf", float("inf")) else "-"
    return f"{v:.1f}"


def _short(name: str, width: int = 48) -> str:
    return name if len(name) <= width else name[:20] + "…" + name[-(width - 21):]


def layer_rows(record: ArtifactRecord, limit: int | None = LAYER_ROWS) -> list[list[str]]:
    le = record.layer_errors
    if le is None:
        return []
    kept = set((record.accuracy_search.chosen or {}).get("exclude", [])) if record.accuracy_search else set()
    rows = []
    for layer in le.layers[:limit]:
        rel = _num(layer.get("rel_rmse"))
        steps = _num(layer.get("scale_rmse"))
        rows.append([str(layer.get("rank")), _short(str(layer.get("node"))), str(layer.get("op")),
                     _db(layer.get("alone_sqnr_db")), _db(layer.get("sqnr_db")),
                     "-" if rel is None else f"{rel * 100:.2f}%", "-" if steps is None else f"{steps:.2f}",
                     _db(layer.get("weight_sqnr_db")), "float" if layer.get("node") in kept else "int8"])
    return rows


# "alone": the model outputs' SQNR with only this layer in int8 (ONNX; what ranks first); "SQNR": the layer's own
LAYER_HEADERS = ["rank", "layer", "op", "alone dB", "SQNR dB", "rel RMSE", "err (steps)", "weight SQNR dB", "kept"]


def layer_table(record: ArtifactRecord):
    """The worst layers of one artifact as a rich Table."""
    from rich import box
    from rich.table import Table

    le = record.layer_errors
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False,
                  title=f"{record.name}: error each layer's quantization adds (worst first, {len(le.layers)} layers)",
                  caption=f"measured on {le.data} ({le.samples} samples): {le.method}")
    for h in LAYER_HEADERS:
        table.add_column(h, justify="left" if h in ("layer", "op", "kept") else "right", no_wrap=h == "layer")
    for row in layer_rows(record):
        table.add_row(*row)
    return table


def accuracy_search_lines(record: ArtifactRecord) -> list[str]:
    """The budget search in words: each knob's score, what was kept in float, and the evaluations spent."""
    s = record.accuracy_search
    if s is None:
        return []
    lines = [f"accuracy budget {s.budget:g}: {'met' if s.met else 'NOT MET'}: {s.note}"]
    for t in s.trials:
        if t.get("stage") in ("baseline", "knob"):
            drop = _num(t.get("accuracy_drop"))
            score = f"accuracy drop {drop * 100:.2f} pp" if drop is not None else f"SQNR {_db(t.get('sqnr_db'))} dB"
            lines.append(f"  {t['stage']:>8}: {t['method']}, {'per-channel' if t['per_channel'] else 'per-tensor'}, "
                         f"{'symmetric' if t['symmetric'] else 'asymmetric'}"
                         f"{', weight ops only' if t.get('weight_ops_only') else ''}: {score} ({'pass' if t['passed'] else 'fail'})")
    chosen = s.chosen or {}
    if s.layers:
        lines.append(f"  kept in float: {chosen.get('kept_float', 0)} of {s.layers} layers"
                     + (f": {', '.join(chosen.get('exclude', []))}" if chosen.get("exclude") else ""))
    lines.append(f"  full evaluations: {s.full_evaluations} (bound log2(N)+k+2 = {s.evaluation_bound}), "
                 f"knob trials: {s.knob_trials}; evaluated on {s.data}; recipe: {s.recipe}")
    return lines


def _searched(report: Report) -> list[ArtifactRecord]:
    return [a for a in report.artifacts if a.layer_errors is not None or a.accuracy_search is not None]


def layer_markdown(report: Report) -> list[str]:
    out: list[str] = []
    for a in _searched(report):
        out += ["", f"#### {a.name}: layer errors and accuracy search", ""]
        if a.layer_errors is not None:
            out += ["| " + " | ".join(LAYER_HEADERS) + " |", "|" + "---|" * len(LAYER_HEADERS)]
            out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in layer_rows(a)]
        out += ["", *[f"- {line.strip()}" for line in accuracy_search_lines(a)]]
    return out


def layer_html(report: Report) -> str:
    """Per searched artifact: a chart of each layer's error, the layer table, and the search trace."""
    parts = []
    for a in _searched(report):
        parts.append(f'<h2 id="layers-{html.escape(a.name)}">{html.escape(a.name)}: layer errors and accuracy search</h2>')
        if a.layer_errors is not None:
            kept = set((a.accuracy_search.chosen or {}).get("exclude", [])) if a.accuracy_search else set()
            items = []
            for layer in a.layer_errors.layers[:LAYER_ROWS]:
                rel = _num(layer.get("rel_rmse"))
                items.append((_short(str(layer.get("node")), 18), None if rel is None else min(rel, 2.0) * 100,
                              "-" if rel is None else f"{rel * 100:.2f}% (SQNR {_db(layer.get('sqnr_db'))} dB)",
                              "failed" if layer.get("node") in kept else ""))
            parts.append('<div class="charts">' + svg_bar_chart("Error each layer's quantization adds", items,
                                                                "relative RMSE %, worst first; red = kept in float", width=640)
                         + "</div>")
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in layer_rows(a, None))
            parts.append(f'<table class="layers"><thead><tr>{"".join(f"<th>{h}</th>" for h in LAYER_HEADERS)}</tr></thead>'
                         f"<tbody>{rows}</tbody></table>")
        s = a.accuracy_search
        if s is not None:
            parts += [f'<p class="meta">{html.escape(line.strip())}</p>' for line in accuracy_search_lines(a)]
            head = ["#", "stage", "method", "weights", "activations", "ops", "in float", "accuracy drop", "SQNR dB", "gate"]
            body = []
            for i, t in enumerate(s.trials, 1):
                drop = _num(t.get("accuracy_drop"))
                cells_ = [str(i), t["stage"], t["method"], "per-channel" if t["per_channel"] else "per-tensor",
                          "symmetric" if t["symmetric"] else "asymmetric",
                          "Conv/MatMul/Gemm" if t.get("weight_ops_only") else "all", str(t["kept_float"]),
                          "-" if drop is None else f"{drop * 100:.2f} pp", _db(t.get("sqnr_db")),
                          "pass" if t["passed"] else "fail"]
                body.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells_) + "</tr>")
            parts.append(f'<table class="search"><thead><tr>{"".join(f"<th>{h}</th>" for h in head)}</tr></thead>'
                         f'<tbody>{"".join(body)}</tbody></table>')
    return "".join(parts)
