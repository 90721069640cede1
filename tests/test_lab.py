"""The fault lab's own parts: jobs, the items iterator, events, cgroup detection, expected tables."""

from __future__ import annotations

import pickle

import pytest

from experiments import expect
from experiments.lab import cgroup, jobs, scenarios
from variants.supervisor import describe_exit


def test_workload_builds_the_articles_list():
    out = jobs.Workload(n=1000)(0)
    assert out == [1] * 1000


@pytest.mark.parametrize("name", sorted(jobs.JOBS))
def test_every_job_pickles(name):
    job = jobs.make_job({"type": name, "at": 3, "n": 10})
    assert pickle.loads(pickle.dumps(job)) == job


def test_raise_at_is_the_articles_name_error(tmp_path):
    events = str(tmp_path / "ev.jsonl")
    job = jobs.RaiseAt(at=2, n=10, events=events)
    assert job(1) == [1] * 10
    with pytest.raises(NameError, match="name 'hoge' is not defined"):
        job(2)
    evs = jobs.read_events(events)
    assert [e["ev"] for e in evs] == ["start", "start", "fault"]
    assert evs[-1]["item"] == 2 and evs[0]["t"] <= evs[-1]["t"]


def test_raising_items_raise_at_their_index():
    it = iter(jobs.RaisingItems(5, raise_at=3))
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(RuntimeError, match="index 3"):
        next(it)


def test_cgroup_availability_says_why():
    ok, why = cgroup.availability()
    assert isinstance(ok, bool) and why


def test_every_scenario_builds_with_workers_in_run_kwargs():
    for name, make in scenarios.SCENARIOS.items():
        sc = make(workers=2)
        assert sc.kwargs["run_kwargs"]["workers"] == 2, name
        assert sc.kwargs["watchdog"] > 0, name


def test_expected_table_must_cover_every_variant():
    with pytest.raises(AssertionError, match="missing"):
        expect.params({"pool": expect.Expect("hung")})


@pytest.mark.parametrize(("code", "before", "after", "words"), [
    (-9, 3, 4, "OOM killer did it"),
    (-9, 3, 3, "something else sent it"),
    (-11, None, None, "SIGSEGV"),
    (1, None, None, "exited with code 1"),
])
def test_supervisor_says_how_a_worker_died(code, before, after, words):
    assert words in describe_exit(code, before, after)
