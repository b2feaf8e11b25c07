"""`python -m bench [--sections=records,...]`: run the sections, write bench/results.json, print a table.

results.json keeps the latest figures of every section ever run, each with
when and where it was measured, so running one section does not erase the
others. The table shows only this run: each figure next to its baseline,
the ratio value/baseline, and the target where there is one.
"""

from __future__ import annotations

import datetime
import importlib
import json
import os
import platform
import sys
import time
import traceback

from absl import app, flags, logging

from bench import Figure
from records import files

# Section name -> module with run(workdir) -> list[Figure], in the order they run.
SECTIONS = {
    "records": "bench.records_bench",
    "scale": "bench.scale_bench",
    "resume": "bench.resume_bench",
    "train": "bench.train_bench",
    "verify": "bench.verify_bench",
    "predict": "bench.predict_bench",
}


def _import_sections() -> tuple[dict, dict]:
    """Imported up front so that their flags exist before the command line is parsed; a section
    that fails to import is reported when asked for, and does not take the others down."""
    modules, broken = {}, {}
    for name, module in SECTIONS.items():
        try:
            modules[name] = importlib.import_module(module)
        except Exception:  # noqa: BLE001 - any error in one section's module
            broken[name] = traceback.format_exc()
    return modules, broken


_MODULES, _BROKEN = _import_sections()

_HERE = os.path.dirname(os.path.abspath(__file__))
FLAGS = flags.FLAGS
flags.DEFINE_list("sections", list(SECTIONS), f"Sections to run, any of: {', '.join(SECTIONS)}.")
flags.DEFINE_string(
    "workdir", os.path.join(_HERE, "out"), "Generated data (cached between runs), logs, scratch output."
)
flags.DEFINE_string(
    "results", os.path.join(_HERE, "results.json"), "Where the figures go (merged with earlier sections)."
)


def _machine() -> dict:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": os.getloadavg(),
    }


def _number(value: float) -> str:
    if value != value or value in (float("inf"), float("-inf")):
        return str(value)
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if magnitude >= 10 else f"{value:.2f}"


def _target(figure: Figure) -> str:
    if figure.target is None:
        return ""
    sign = "<=" if figure.lower_is_better else ">="
    verdict = {True: "met", False: "MISSED", None: "not measured"}[figure.target_met]
    return f"{sign} {_number(figure.target)} {verdict}"


def table(figures: list[Figure]) -> str:
    """Markdown; a value's [low-high] is its range over repeated runs (see each note in results.json)."""
    rows = ["| figure | value | baseline | ratio | target |", "|---|---:|---:|---:|---|"]
    for f in figures:
        baseline = "" if f.baseline_value is None else f"{_number(f.baseline_value)} {f.unit} ({f.baseline_name})"
        ratio = "" if f.ratio is None else f"{f.ratio:.2f}x"
        spread = "" if f.low is None or f.high is None else f" [{_number(f.low)}-{_number(f.high)}]"
        rows.append(f"| {f.name} | {_number(f.value)} {f.unit}{spread} | {baseline} | {ratio} | {_target(f)} |")
    return "\n".join(rows)


def write_results(path: str, sections: dict[str, dict]) -> None:
    """Merges this run's sections into the file (atomically: a crash never leaves half a file)."""
    results = {}
    if os.path.exists(path):
        try:
            with open(path) as f:
                results = json.load(f)
        except (OSError, ValueError) as error:
            logging.warning("%s is unreadable (%s); starting it afresh", path, error)
    results.setdefault("sections", {}).update(sections)
    files.write_atomically(path, json.dumps(results, indent=1, sort_keys=True) + "\n")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    unknown = [s for s in FLAGS.sections if s not in SECTIONS]
    if unknown:
        raise app.UsageError(f"--sections: unknown {unknown}; choose from {', '.join(SECTIONS)}")
    os.makedirs(FLAGS.workdir, exist_ok=True)
    machine = _machine()
    done: dict[str, dict] = {}
    shown: list[Figure] = []
    failed = []
    for name in FLAGS.sections:
        if name in _BROKEN:
            logging.error("section %s cannot run: %s failed to import:\n%s", name, SECTIONS[name], _BROKEN[name])
            failed.append(name)
            continue
        logging.info("bench section %s", name)
        started = time.monotonic()
        try:
            figures = _MODULES[name].run(FLAGS.workdir)
        except Exception:  # noqa: BLE001 - one broken section must not hide the others' figures
            logging.error("section %s failed:\n%s", name, traceback.format_exc())
            failed.append(name)
            continue
        done[name] = {
            "measured_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "seconds": round(time.monotonic() - started, 1),
            "machine": machine,
            "figures": [f.to_json() for f in figures],
        }
        shown += figures
    if done:
        write_results(FLAGS.results, done)
    print(
        f"\nbench ({', '.join(done) or 'nothing'}; {machine['cpus']} CPUs, load average at start "
        f"{machine['load_average_at_start'][0]:.1f}) -> {FLAGS.results}\n"
    )
    print(table(shown))
    for figure in shown:
        if figure.target is not None and figure.note:
            print(f"- {figure.name}: {figure.note}")
    sys.stdout.flush()
    if failed:
        sys.exit(f"sections failed: {', '.join(failed)} (see the log above)")


if __name__ == "__main__":
    app.run(main)
