"""The generated part of docs/benchmarks.md: the runs' machine, targets, results, plots and hot path.

Everything between the two markers of the page is rendered from the
published runs in docs/assets/benchmarks/: ``latest.json``, the main run
(whose plots the page shows), and one ``latest-X.Y.json`` per other Python
version the suite was run on, all of one commit on one machine. A full run
of ``python -m benchmarks`` writes its file and rewrites the page from all of
them; ``python -m benchmarks --from-json PATH`` redraws the plots from a
saved run and the page from the runs next to it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ._harness import Row, fmt, fmt_ratio_range

START = "<!-- generated:start -->"
END = "<!-- generated:end -->"
NOTICE = "<!-- written by `python -m benchmarks` from docs/assets/benchmarks/latest*.json: edit benchmarks/_page.py -->"
MAIN = "latest.json"

#: A published run: its file name and its contents.
Run = tuple[str, dict[str, Any]]

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


def _load(meta: dict[str, Any]) -> str:
    before, after = meta.get("load_average_before"), meta.get("load_average_after")
    return f"{before[0]} before the run, {after[0]} after" if before and after else "-"


def _packages(meta: dict[str, Any]) -> str:
    versions = meta.get("versions", {})
    return ", ".join(f"{name} {version}" for name, version in versions.items() if name != "jobdispatch") or "-"


def _gil(meta: dict[str, Any]) -> str:
    return f"GIL {'enabled' if meta.get('gil', True) else 'disabled'}"


def _run(metas: list[dict[str, Any]]) -> list[str]:
    meta = metas[0]
    code = f"commit `{meta['commit']}`" + (" with local changes to src/" if meta.get("src_modified") else "")
    jobdispatch = meta.get("versions", {}).get("jobdispatch", "?")
    machine = ("Machine", f"{meta['nproc']} CPUs ({meta['cpu']}), {meta['platform']}")
    if len(metas) == 1:
        lines = [
            ("Code", f"{code}, jobdispatch {jobdispatch}"),
            ("Date", f"{meta['date_utc']}, {meta['mode']} run of {meta.get('duration_s', '?')} s"),
            machine,
            ("Python", f"{meta['python']}, {_gil(meta)}"),
            ("Other packages", _packages(meta)),
        ]
        if _load(meta) != "-":
            lines.append(("Load average (1 min)", _load(meta)))
        return _table(["", ""], lines)
    runs = ("Runs", f"{meta['mode']}, one per Python version")
    out = _table(["", ""], [("Code", f"{code}, jobdispatch {jobdispatch}"), machine, runs])
    rows = [
        (
            f"{m['python']}, {_gil(m)}",
            m["date_utc"],
            f"{m.get('duration_s', '?')} s",
            _load(m),
            _packages(m),
        )
        for m in metas
    ]
    return [*out, "", *_table(["Python", "date", "duration", "load average (1 min)", "other packages"], rows)]


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


def _hotpath(data: dict[str, Any], python: str | None) -> list[str]:
    from .hotpath import report

    text = report(data).split("\n", 1)[1]  # the first line is a title
    body = ["    " + line if line else "" for line in ["```text", *text.splitlines(), "```"]]
    run = f"the {python} run" if python else "this run"
    return [
        f'??? info "Hot-path figures of {run} (ns per operation or per job)"',
        "",
        "    From `benchmarks/hotpath.py`: the primitives the hot path is made of,",
        "    the two halves of a hand-off in isolation, and every way of dispatching",
        "    end to end against ThreadPoolExecutor.",
        "",
        *body,
    ]


def python_version(meta: dict[str, Any]) -> str:
    """The ``major.minor`` Python version of a run (read from its full version in older files)."""
    version = meta.get("python_version") or meta["python"].split()[-1]
    return ".".join(str(version).split(".")[:2])


def _version_key(meta: dict[str, Any]) -> tuple[int, ...]:
    return tuple(int(part) for part in python_version(meta).split(".") if part.isdigit())


def run_file(version: str, main: bool) -> str:
    """The file name of a published run: `MAIN` for the main Python, ``latest-X.Y.json`` for the others."""
    return MAIN if main else f"latest-{version}.json"


def load_runs(directory: Path) -> list[Run]:
    """The published runs in ``directory``: `MAIN` first, then every ``latest-X.Y.json`` by Python version."""
    runs = [(path.name, json.loads(path.read_text())) for path in directory.glob("latest*.json")]
    return sorted(runs, key=lambda run: (run[0] != MAIN, _version_key(run[1]["meta"]), run[0]))


def coherent(runs: Sequence[Run]) -> tuple[list[Run], list[str]]:
    """Split ``runs`` into those that belong with the first (same commit, machine and mode) and why the others do not.

    The page shows one commit on one machine; a run of another commit, on
    another machine, of another size or of a Python version already shown
    is left out of it.
    """
    if not runs:
        raise ValueError("runs must hold at least one published run, got none")
    (_, first), kept, problems = runs[0], [runs[0]], []
    seen = {python_version(first["meta"])}
    for name, data in runs[1:]:
        meta, why = data["meta"], []
        for key in ("commit", "src_modified", "mode", "nproc", "cpu"):
            if meta.get(key) != first["meta"].get(key):
                why.append(f"{key} {meta.get(key)!r}, not {first['meta'].get(key)!r}")
        if python_version(meta) in seen:
            why.append(f"Python {python_version(meta)} is shown already")
        if why:
            problems.append(f"{name} left off the page: {'; '.join(why)}")
        else:
            kept.append((name, data))
            seen.add(python_version(meta))
    return kept, problems


def _python(meta: dict[str, Any]) -> str:
    return str(meta["python"])


def render(runs: Sequence[Run]) -> str:
    """Render the generated section of the page from the published runs (`load_runs`).

    The first run is the main one: its plots are shown. Every other run that
    belongs with it (see `coherent`) adds its own targets, results and
    hot-path figures.
    """
    kept, _ = coherent(runs)
    main, several = kept[0][1], len(kept) > 1
    out = [START, NOTICE, "", "## The run", ""]
    if several:
        names = ", ".join(_python(data["meta"]) for _, data in kept)
        out += [
            "Every figure, table and plot below comes from `python -m benchmarks`,",
            f"run on one commit and one machine, once per Python version ({names}).",
        ]
    else:
        out += ["Every figure, table and plot below comes from this one run of", "`python -m benchmarks`."]
    out += ["", *_run([data["meta"] for _, data in kept]), "", "## Targets", ""]
    for _, data in kept:
        out += ([f"**{_python(data['meta'])}**", ""] if several else []) + [*_targets(_rows(data)), ""]
    out += [
        "## Results",
        "",
        "Figures are medians over trials; a ratio above 1 means jobdispatch is better",
        "(rates divided, times and sizes inverted), with the range of the per-trial",
        "ratios in brackets.",
    ]
    for _, data in kept:
        if several:
            out += ["", f"### {_python(data['meta'])}"]
        out += _results(_rows(data))
    scenarios = main.get("scenarios", {})
    plots = [(file, caption) for scenario, file, caption in PLOTS if scenario in scenarios]
    if plots:
        out += ["", "## Plots"]
        if several:
            out += ["", f"From the {_python(main['meta'])} run."]
        for file, caption in plots:
            out += ["", caption, "", f"![{caption}](assets/benchmarks/{file})"]
    files = ", ".join(f"[{name}](assets/benchmarks/{name})" for name, _ in kept)
    out += ["", "The raw figures of every trial are in", f"{files}."]
    for _, data in kept:
        if "hotpath" in data.get("scenarios", {}):
            out += ["", *_hotpath(data["scenarios"]["hotpath"], _python(data["meta"]) if several else None)]
    out += ["", END]
    return "\n".join(line.rstrip() for line in out)


def replace_generated(page: str, section: str) -> str:
    """Return ``page`` with the text between its markers (included) replaced by ``section``."""
    start, end = page.find(START), page.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the page has no {START} ... {END} section")
    return page[:start] + section + page[end + len(END) :]
