"""Every registered variant keeps the contract: signature, clear errors on bad input, no hang."""

from __future__ import annotations

import inspect

import pytest

from experiments.lab.harness import run_scenario
from experiments.lab.jobs import Workload
from experiments.lab.scenarios import task_timeout as task_timeout_scenario
from variants import KINDS, VARIANTS, RunFailed, RunReport
from variants.contract import Fate, ItemFate

CONTRACT = {"workers": 4, "on_result": None, "timeout": None, "task_timeout": None}
ALL = [pytest.param(name, id=name, marks=() if v.available()[0] else pytest.mark.skip(reason=v.available()[1]))
       for name, v in VARIANTS.items()]


def module_level_job(item):
    return item


@pytest.mark.parametrize("name", ALL)
def test_signature(name):
    sig = inspect.signature(VARIANTS[name].load().run)
    params = list(sig.parameters.values())
    assert [p.name for p in params[:2]] == ["job", "items"]
    for pname, default in CONTRACT.items():
        p = sig.parameters[pname]
        assert p.kind is inspect.Parameter.KEYWORD_ONLY, pname
        assert p.default == default, pname


@pytest.mark.parametrize("name", ALL)
def test_docstring_first_line_says_what_breaks_or_fixes(name):
    summary = VARIANTS[name].summary
    assert summary.endswith(".") and len(summary) > 30, summary


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize(("kwargs", "error", "words"), [
    ({"workers": 0}, ValueError, "workers"),
    ({"workers": -2}, ValueError, "workers"),
    ({"workers": 2.5}, ValueError, "workers"),
    ({"timeout": -1}, ValueError, "timeout"),
    ({"timeout": 0}, ValueError, "timeout"),
    ({"timeout": float("nan")}, ValueError, "timeout"),
    ({"task_timeout": -0.5}, ValueError, "task_timeout"),
    ({"on_result": 42}, TypeError, "on_result"),
])
def test_bad_input_is_a_clear_error(name, kwargs, error, words):
    with pytest.raises(error, match=words):
        VARIANTS[name].run(module_level_job, range(3), **kwargs)


@pytest.mark.parametrize("name", ALL)
def test_unpicklable_job_is_a_clear_error(name):
    with pytest.raises(TypeError, match="picklable"):
        VARIANTS[name].run(lambda x: x, range(3))


@pytest.mark.parametrize("name", ALL)
def test_job_must_be_callable(name):
    with pytest.raises(TypeError, match="callable"):
        VARIANTS[name].run("not a function", range(3))


@pytest.mark.parametrize("name", ALL)
def test_task_timeout_is_enforced_or_refused(name):
    """A design without per-task limits says so, naming itself; one that accepts task_timeout enforces it:
    a task that never returns ends the run as task_timeout, naming the item (asked of the design's
    behaviour, not of its source text)."""
    try:
        VARIANTS[name].run(Workload(n=1), range(2), workers=1, task_timeout=1.0)
    except NotImplementedError as e:
        assert name in str(e), f"the refusal does not name the design: {e}"
        return
    sc = task_timeout_scenario(workers=2)  # item 1 hangs; task_timeout 1 s; the watchdog cuts a hang at 8 s
    o = run_scenario(name, **sc.kwargs)
    assert (o.status, o.kind, o.item) == ("raised", "task_timeout", sc.fault_item), \
        f"{name} accepted task_timeout but did not enforce it: {o.status} {o.kind} item={o.item!r}\n{o.stderr[-1500:]}"


def test_run_failed_carries_what_a_caller_needs():
    report = RunReport("x", completed=1, fates=[ItemFate(1, Fate.DONE), ItemFate(2, Fate.FAILED, "worker_died"),
                                                ItemFate(3, Fate.NEVER_RUN)])
    e = RunFailed("boom", kind="worker_died", item=2, exitcode=-9, report=report)
    assert (str(e), e.kind, e.item, e.exitcode) == ("boom", "worker_died", 2, -9)
    assert e.report.unfinished() == [2, 3]
    with pytest.raises(ValueError, match="kind"):
        RunFailed("x", kind="oops")
    assert set(KINDS) == {"worker_error", "worker_died", "callback_error", "timeout", "task_timeout"}


def test_report_without_fates_refuses_to_guess_what_to_resume():
    with pytest.raises(ValueError, match="does not track"):
        RunReport("pool").unfinished()
