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


def test_a_pool_that_broke_between_two_results_is_a_dead_worker_and_the_refused_item_stays():
    """loky's submit() raises the TerminatedWorkerError that broke the pool when a worker died after the last
    wait() returned (CI caught it once: the pipeline's HTTP 500 run came back kind=None). The bounded loop
    classifies it like the same error from a future and keeps the refused item in ``remaining()``."""
    import concurrent.futures as cf

    from variants._bounded import drive
    from variants.loky_executor import classify

    class Broken(Exception):
        pass

    def classify_broken(e):
        return ("worker_died", 1, False) if isinstance(e, Broken) else classify(e)

    submitted = []

    def submit(item):
        if item == 2:
            raise Broken("A worker process managed by the executor was unexpectedly terminated. {EXIT(1)}")
        submitted.append(item)
        f = cf.Future()
        f.set_result(item)
        return f

    with pytest.raises(RunFailed) as info:
        drive("t", submit, range(5), None, None, 2, classify_broken, stop=lambda: None, close=lambda: None)
    e = info.value
    assert (e.kind, e.item, e.exitcode) == ("worker_died", None, 1)
    assert submitted == [0, 1]
    assert list(e.report.remaining()) == [2, 3, 4]
