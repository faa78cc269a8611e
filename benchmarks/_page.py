"""The generated part of docs/benchmarks.md: one run's machine, targets, results, plots and hot path.

Everything between the two markers of the page is rendered from one
``latest.json``, so the page names one run. ``python -m benchmarks`` (a full
run) rewrites it; ``python -m benchmarks --from-json PATH`` redraws it and
the plots from a saved run.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ._harness import Row, fmt, fmt_ratio_range

START = "<!-- generated:start -->"
END = "<!-- generated:end -->"
NOTICE = "<!-- written by `python -m benchmarks` from docs/assets/benchmarks/latest.json: edit benchmarks/_page.py -->"

#: The plots the page shows, when the run has their scenario: (scenario, file, caption).
PLOTS = [
    (
        "isolation",
        "isolation.png",
        "Isolation (scenario 3): the distribution of probe start latencies, all trials pooled. "
        "The shared executor's probes wait behind the bulk backlog.",
    ),
    ("scaling", "scaling.png", "Throughput against workers (6a) and against pools (6b), medians over trials."),
    (
        "scaling",
        "scaling-lifecycle.png",
        "Creating and finalizing a pool (6c: no job run; 6d: every thread started first), medians over trials.",
    ),
]


def _rows(data: dict[str, Any]) -> list[Row]:
    rows = []
    for raw in data["rows"]:
        fields = dict(raw)
        if fields.get("ratio_range") is not None:
            fields["ratio_range"] = tuple(fields["ratio_range"])
        rows.append(Row(**fields))
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _table(header: Iterable[str], lines: Iterable[Iterable[str]]) -> list[str]:
    header = list(header)
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_cell(cell) for cell in line) + " |" for line in lines]
    return out


def _run(meta: dict[str, Any]) -> list[str]:
    load_before, load_after = meta.get("load_average_before"), meta.get("load_average_after")
    code = f"commit `{meta['commit']}`" + (" with local changes to src/" if meta.get("src_modified") else "")
    versions = meta.get("versions", {})
    others = ", ".join(f"{name} {version}" for name, version in versions.items() if name != "jobdispatch")
    lines = [
        ("Code", f"{code}, jobdispatch {versions.get('jobdispatch', '?')}"),
        ("Date", f"{meta['date_utc']}, {meta['mode']} run of {meta.get('duration_s', '?')} s"),
        ("Machine", f"{meta['nproc']} CPUs ({meta['cpu']}), {meta['platform']}"),
        ("Python", f"{meta['python']}, GIL {'enabled' if meta.get('gil', True) else 'disabled'}"),
        ("Other packages", others or "-"),
    ]
    if load_before and load_after:
        lines.append(("Load average (1 min)", f"{load_before[0]} before the run, {load_after[0]} after"))
    return _table(["", ""], lines)


def _targets(rows: list[Row]) -> list[str]:
    lines = []
    for row in rows:
        if row.target is None:
            continue
        measured = f"{fmt(row.jobdispatch, row.unit)}; {row.competitor} {fmt(row.competitor_value, row.unit)}"
        measured += f"; ratio {fmt_ratio_range(row)}"
        met = "" if row.met is None else ("yes" if row.met else "**NO**")
        lines.append((f"{row.scenario.split()[0]}: {row.target}", measured, met))
    return _table(["target", "measured", "met"], lines)


def _group_key(row: Row) -> str:
    return row.scenario.split()[0]


def _results(rows: list[Row]) -> list[str]:
    out: list[str] = []
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(_group_key(row), []).append(row)
    for group in groups.values():
        scenarios = list(dict.fromkeys(row.scenario for row in group))
        if len(scenarios) == 1:
            heading, cases = scenarios[0], False
        else:
            heading, cases = scenarios[0].split(", ", 1)[0], True
        out += ["", f"**{heading}**", ""]
        header = (["case"] if cases else []) + ["metric", "jobdispatch", "against", "its figure", "ratio (range)"]
        lines = []
        for row in group:
            case = [row.scenario.split(", ", 1)[-1]] if cases else []
            value = fmt(row.competitor_value, row.unit) if row.competitor else ""
            lines.append([*case, row.metric, fmt(row.jobdispatch, row.unit), row.competitor or "", value])
            lines[-1].append(fmt_ratio_range(row))
        out += _table(header, lines)
    notes = [f"- {row.scenario.split()[0]}, {row.competitor}: {row.note}" for row in rows if row.note]
    if notes:
        out += ["", "Notes:", "", *notes]
    return out


def _hotpath(data: dict[str, Any]) -> list[str]:
    from .hotpath import report

    text = report(data).split("\n", 1)[1]  # the first line names the source the model copies
    body = ["    " + line if line else "" for line in ["```text", *text.splitlines(), "```"]]
    return [
        '??? info "Hot-path figures of this run (ns per operation or per job)"',
        "",
        "    From `benchmarks/hotpath.py`: primitives, the two halves of a hand-off in",
        "    isolation, an ablation of a line-for-line model of `dispatch()` and of the",
        "    worker loop, and a ladder of hand-offs up to the full model.",
        "",
        *body,
    ]


def render(data: dict[str, Any]) -> str:
    """Render the generated section of the page from one run's JSON."""
    meta, rows, scenarios = data["meta"], _rows(data), data.get("scenarios", {})
    out = [START, NOTICE, "", "## The run", ""]
    out += [
        "Every figure, table and plot below comes from this one run of",
        "`python -m benchmarks`.",
        "",
        *_run(meta),
        "",
        "## Targets",
        "",
        *_targets(rows),
        "",
        "## Results",
        "",
        "Figures are medians over trials; a ratio above 1 means jobdispatch is better",
        "(rates divided, times and sizes inverted), with the range of the per-trial",
        "ratios in brackets.",
        *_results(rows),
    ]
    plots = [(file, caption) for scenario, file, caption in PLOTS if scenario in scenarios]
    if plots:
        out += ["", "## Plots"]
        for file, caption in plots:
            out += ["", caption, "", f"![{caption}](assets/benchmarks/{file})"]
        out += [
            "",
            "The raw figures of every trial are in",
            "[docs/assets/benchmarks/latest.json](assets/benchmarks/latest.json).",
        ]
    if "hotpath" in scenarios:
        out += ["", *_hotpath(scenarios["hotpath"])]
    out += ["", END]
    return "\n".join(line.rstrip() for line in out)


def replace_generated(page: str, section: str) -> str:
    """Return ``page`` with the text between its markers (included) replaced by ``section``."""
    start, end = page.find(START), page.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the page has no {START} ... {END} section")
    return page[:start] + section + page[end + len(END) :]
