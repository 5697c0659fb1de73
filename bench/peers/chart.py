"""Draw the peer benchmark's latency chart as a self-contained SVG file.

One horizontal bar per system, as long as its median time per image. qdet's bars are split into
its pipeline stages, in proportion to each stage's median time, because the stage medians do not
add up to the end-to-end median exactly. Plain SVG text, so no plotting package is needed.
"""

from xml.sax.saxutils import escape

LABELS = {
    "qdet_int8": "qdet INT8",
    "qdet_fp32": "qdet FP32",
    "torchvision_fp32": "torchvision FP32",
    "torchvision_dynamic_int8": "torchvision dynamic INT8",
    "onnxruntime_fp32": "ONNX Runtime FP32",
    "onnxruntime_qdq_int8": "ONNX Runtime QDQ INT8",
}

# qdet's stages in pipeline order, with their colours.
STAGES = [
    ("preprocess", "#999933"),
    ("backbone+fpn", "#4477aa"),
    ("rpn", "#66ccee"),
    ("roi_heads", "#ee6677"),
    ("postprocess", "#ccbb44"),
]
PEER_COLOUR = "#bbbbbb"

WIDTH = 820
LABEL_WIDTH = 190
VALUE_WIDTH = 110
TOP = 58
ROW = 34
BAR = 22
AXIS_HEIGHT = 44
LEGEND_HEIGHT = 34


def tick_step(largest):
    """Return an axis step of 1, 2 or 5 times a power of ten that gives at most 10 ticks up to largest."""
    step = 1.0
    while largest / step > 10:
        for factor in (2, 2.5, 2):
            step *= factor
            if largest / step <= 10:
                break
    return step


def text(x, y, value, anchor="start", size=13, weight="normal"):
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" '
            f'font-weight="{weight}">{escape(value)}</text>')


def rect(x, y, width, height, colour, title):
    return (f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(width, 0.0):.2f}" height="{height}" fill="{colour}">'
            f'<title>{escape(title)}</title></rect>')


def latency_svg(report):
    """Return the SVG text of the median latency chart for a run_peers report."""
    rows = report["systems"]
    reference = report["reference_system"]
    largest = max(row["median_ms"] for row in rows)
    step = tick_step(largest)
    axis_end = step * (int(largest / step) + 1)
    plot_width = WIDTH - LABEL_WIDTH - VALUE_WIDTH
    scale = plot_width / axis_end
    height = TOP + ROW * len(rows) + AXIS_HEIGHT + LEGEND_HEIGHT

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="DejaVu Sans, Arial, sans-serif">',
        f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
        text(12, 24, f"Median latency per image: {report['images']} road-cars eval images, "
                     f"{report['threads']} threads", size=15, weight="bold"),
        text(12, 44, f"{report['machine']['cpu']}. Shorter is faster. Ratios are each system's median over "
                     f"{LABELS.get(reference, reference)}'s. qdet's bars are split by pipeline stage.", size=12),
    ]

    axis_y = TOP + ROW * len(rows) + 4
    tick = 0.0
    while tick <= axis_end + 1e-9:
        x = LABEL_WIDTH + tick * scale
        parts.append(f'<line x1="{x:.1f}" y1="{TOP - 6}" x2="{x:.1f}" y2="{axis_y}" stroke="#e4e4e4"/>')
        parts.append(text(x, axis_y + 16, f"{tick:g}", anchor="middle", size=11))
        tick += step
    parts.append(text(LABEL_WIDTH + plot_width / 2, axis_y + 34, "milliseconds per image (median)",
                      anchor="middle", size=12))

    for index, row in enumerate(rows):
        system = row["system"]
        y = TOP + ROW * index
        median = row["median_ms"]
        parts.append(text(LABEL_WIDTH - 8, y + BAR - 6, LABELS.get(system, system), anchor="end"))
        stages = row.get("stages_median_ms")
        stage_total = sum(stages.get(name, 0.0) for name, _ in STAGES) if stages else 0.0
        if stage_total > 0:
            x = LABEL_WIDTH
            for name, colour in STAGES:
                width = median * stages.get(name, 0.0) / stage_total * scale
                parts.append(rect(x, y, width, BAR, colour, f"{name}: median {stages.get(name, 0.0):.1f} ms"))
                x += width
        else:
            parts.append(rect(LABEL_WIDTH, y, median * scale, BAR, PEER_COLOUR, f"{system}: median {median:.1f} ms"))
        ratio = row.get("time_ratio_to_reference")
        label = f"{median:.1f} ms" + ("" if ratio is None else f" ({ratio:.2f}x)")
        parts.append(text(LABEL_WIDTH + median * scale + 6, y + BAR - 6, label, size=12))

    legend_y = axis_y + AXIS_HEIGHT + 8
    x = LABEL_WIDTH
    for name, colour in STAGES:
        parts.append(rect(x, legend_y, 12, 12, colour, name))
        parts.append(text(x + 16, legend_y + 11, name, size=12))
        x += 28 + 7.5 * len(name)
    parts.append(rect(x, legend_y, 12, 12, PEER_COLOUR, "peers"))
    parts.append(text(x + 16, legend_y + 11, "peers (no stage times)", size=12))
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
