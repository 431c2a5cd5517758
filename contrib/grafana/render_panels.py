#!/usr/bin/env python3
"""Draws the panels of replwarden.json from a Prometheus server's data with
matplotlib (no Grafana needed): one small chart per panel, every target's
series over the last SECONDS seconds.

    python3 render_panels.py http://127.0.0.1:9090 replwarden.json out.png [SECONDS]

tests/dashboards.rs runs it when REPLWARDEN_PANELS_PNG names an output file.
"""

import json
import re
import sys
import time
import urllib.parse
import urllib.request

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def query_range(base, expr, start, end, step):
    params = urllib.parse.urlencode(
        {"query": expr, "start": start, "end": end, "step": step}
    )
    with urllib.request.urlopen(f"{base}/api/v1/query_range?{params}") as r:
        body = json.load(r)
    if body["status"] != "success":
        raise RuntimeError(f"{expr}: {body}")
    return body["data"]["result"]


def legend(fmt, labels):
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt)


def main():
    base, dashboard, out = sys.argv[1:4]
    seconds = float(sys.argv[4]) if len(sys.argv) > 4 else 300
    end = time.time()
    start = end - seconds
    step = max(1, int(seconds / 200))
    panels = json.load(open(dashboard))["panels"]
    cols = 4
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 5, rows * 3.2))
    for ax, panel in zip(axes.flat, panels):
        ax.set_title(panel["title"], fontsize=10)
        unit = panel["fieldConfig"]["defaults"].get("unit", "")
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", "15s")
            expr = expr.replace('instance=~"$instance"', 'instance=~".*"')
            for series in query_range(base, expr, start, end, step):
                xs = [float(t) - end for t, _ in series["values"]]
                ys = [float(v) for _, v in series["values"]]
                label = legend(target.get("legendFormat", ""), series["metric"])
                ax.plot(xs, ys, label=label[:48])
        ax.set_xlabel("seconds before the end of the run", fontsize=7)
        ax.set_ylabel(unit, fontsize=7)
        ax.tick_params(labelsize=7)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, loc="upper left")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle("replwarden dashboard panels (from Prometheus, drawn by matplotlib)")
    fig.tight_layout()
    fig.savefig(out, dpi=80)


if __name__ == "__main__":
    main()
