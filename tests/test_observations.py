"""The end-of-run tables ("what each design did", experiments/expect.py) read whole: no figure loses its unit,
no two tables share a caption, and two runs of one design in one table say what sets them apart."""

from __future__ import annotations

import ast
from pathlib import Path

from experiments import expect

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def _row(test: str, variant: str, status: str = "raised", **more):
    return {"test": test, "fault": "Fault 6 of the article: the whole run exceeds its time limit",
            "variant": variant, "status": status, "kind": "worker_died" if status == "raised" else None,
            "item": None, "fault_item": None, "exitcode": None, "detect": None, "left": [], "orphans_exit": None,
            "nothing_left": False, "fault_starts": None} | more


def _design_lines(text: str) -> dict[str, str]:
    return {line.split()[0].rstrip(","): line for line in text.splitlines()
            if line.startswith("  ") and "design" not in line}


def test_no_outcome_is_cut_and_every_figure_keeps_its_unit():
    test = "experiments/test_main_process.py::test_main_process_sigkilled"
    rows = [_row(f"{test}[supervisor]", "supervisor", "parent_killed", orphans_exit=1.06),
            _row(f"{test}[pebble_pool]", "pebble_pool", "parent_killed", orphans_exit=0.015),
            _row(f"{test}[pool]", "pool", "parent_killed")]
    text = "\n".join(expect.observation_tables(rows))
    lines = _design_lines(text)
    assert "parent killed, orphans gone in 1.06 s" in lines["supervisor"], text
    assert "parent killed, orphans gone in 15 ms" in lines["pebble_pool"], text
    assert "parent killed, orphans survive" in lines["pool"], text
    for r in rows:  # whole, whatever its length
        assert expect.outcome_words(r) in lines[r["variant"]], text


def test_each_table_has_a_caption_of_its_own():
    """Four tests of one file (one module docstring) and a test's parameters: a caption each."""
    timeouts = [f"experiments/test_timeouts.py::test_{name}[{v}]" for name in
                ("whole_run_timeout", "worker_hangs_with_run_timeout", "worker_hangs_without_any_timeout",
                 "worker_hangs_with_task_timeout") for v in ("pool", "supervisor")]
    crashes = [f"experiments/test_worker_killed.py::test_worker_dies_by_itself[{v}-{kind}]"
               for kind in ("KillSelfAt", "SegfaultAt", "ExitAt") for v in ("pool", "supervisor")]
    pipeline = [_row(f"experiments/test_pipeline.py::test_fault_then_database[{v}-{mode}]", v,
                     scenario=f"12 items fetched from the API, item 3: {words}")
                for mode, words in (("slow", "answers after 1 s"), ("500", "answers HTTP 500"))
                for v in ("pool", "supervisor")]
    rows = [_row(t, t.split("[")[1].split("-")[0].rstrip("]")) for t in timeouts + crashes] + pipeline
    tables = expect.observation_table_list(rows)
    captions = [t.caption for t in tables]
    assert len(tables) == 4 + 3 + 2
    assert len(set(captions)) == len(captions), captions
    assert all(t.caption not in t.heading for t in tables), "a caption repeats the file's heading"
    assert "worker hangs with task timeout" in captions
    text = "\n".join(expect.observation_tables(rows))
    assert text.count(tables[0].heading) == 1, "the file's heading is printed once, above its tables"
    for caption in captions:
        assert sum(line.startswith(caption) for line in text.splitlines()) == 1, (caption, text)


def test_two_runs_of_one_design_in_one_table_are_labelled():
    test = ("experiments/test_worker_lifecycle.py::"
            "test_what_the_limit_buys_the_kernel_otherwise_kills_the_largest_process_the_parent")
    rows = [_row(test, "supervisor", "runner_died", label="no memory_limit"),
            _row(test, "supervisor", "raised", label="memory_limit=100 MiB, on_error=continue")]
    text = "\n".join(expect.observation_tables(rows))
    designs = [line.split("  ")[1].strip() for line in text.splitlines()
               if line.startswith("  supervisor")]
    assert designs == ["supervisor, no memory_limit", "supervisor, memory_limit=100 MiB, on_error=continue"], text


def _calls(node: ast.AST, name: str) -> list[ast.Call]:
    return [c for c in ast.walk(node) if isinstance(c, ast.Call) and getattr(c.func, "id", None) == name]


def test_every_experiment_that_checks_one_design_twice_labels_each_run():
    """A test whose check() runs more than once (two calls, or one in a loop) puts several rows of a design in one
    table: each call passes ``label=``, saying what sets its run apart."""
    unlabelled = []
    for path in sorted(EXPERIMENTS.glob("test_*.py")):
        for fn in ast.parse(path.read_text()).body:
            if not isinstance(fn, ast.FunctionDef):
                continue
            checks = _calls(fn, "check")
            in_loop = any(_calls(loop, "check") for loop in ast.walk(fn) if isinstance(loop, ast.For | ast.While))
            if len(checks) > 1 or in_loop:
                unlabelled += [f"{path.name}::{fn.name} line {c.lineno}" for c in checks
                               if not any(k.arg == "label" for k in c.keywords)]
    assert not unlabelled, f"check() without label= where a design runs more than once: {unlabelled}"


def test_the_pipeline_tables_show_the_database_check_not_an_empty_latency():
    rows = [_row(f"experiments/test_pipeline.py::test_fault_then_database[{v}-500]", v, fault_item=3, item=item,
                 database={"rows": rows, "of": 12, "twice": 0, "agrees": agrees})
            for v, item, rows, agrees in (("pool", None, 11, "yes (count)"), ("supervisor", 3, 8, "yes"))]
    text = "\n".join(expect.observation_tables(rows))
    header = next(line for line in text.splitlines() if line.lstrip().startswith("design"))
    assert "database" in header and "latency" not in header, text
    lines = _design_lines(text)
    assert "11/12 rows, 0 saved twice, report agrees: yes (count)" in lines["pool"], text
    assert "8/12 rows, 0 saved twice, report agrees: yes" in lines["supervisor"], text


def test_a_heading_is_the_whole_first_sentence_and_a_return_says_what_is_left():
    doc = """Faults at the other moments of a worker's life: while it sends an answer, when its pipe is gone but it lives,
    when its job starts processes of its own. More text.

    Next paragraph."""
    assert expect.first_sentence(doc) == ("Faults at the other moments of a worker's life: while it sends an answer, "
                                          "when its pipe is gone but it lives, when its job starts processes of its own.")
    assert expect.outcome_words(_row("t", "pool", "returned", nothing_left=True, items_left=0)) == \
        "returned, every item done"
    assert expect.outcome_words(_row("t", "pool", "returned", items_left=3)) == "returned, 3 item(s) left"
    assert expect.outcome_words(_row("t", "pool", "returned", items_left=None)) == "returned"
