"""The README is a promise: what it says to copy is enough, its scripts run as written, they print as shown.

Each test takes its text from README.md itself (between ``<!-- example:NAME:begin/end -->`` markers, or
from the tables), so the README and these checks cannot drift apart. The scripts (job.py, resume.py) run the
way a reader would run them: the files the README names are copied into a fresh package in a temporary folder
outside the repository, and each script is started there with ``python -S`` (no site-packages: neither this
repository nor anything installed is importable, only the standard library and the copy).

Near the end, one test keeps README.ja.md in step with README.md: same headings, markers, anchors, code blocks,
links to files, and the same generated sections; the last checks that .ci/run runs the README's Quick start.
"""

from __future__ import annotations

import ast
import inspect
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from experiments.lab.harness import group_members
from variants.supervisor import run as supervisor_run

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_JA = ROOT / "README.ja.md"
PACKAGE = "fanout"  # the package name the README's layout and script use
# One run of the README's script takes well under 1 s (spawning 4 workers on an idle machine); 60 s is
# the margin for a 2-core machine busy with the whole suite. A run that needs it is a hang, not a slow run.
RUN_LIMIT = 60.0
# multiprocessing's resource tracker (started by spawn, in the script's process group) exits on EOF of its
# pipe within milliseconds of the script; 2 s absorbs a loaded machine. Anything alive after that is a leak.
TRACKER_EXIT = 2.0


def example(text: str, name: str) -> str:
    """The code block between <!-- example:NAME:begin --> and <!-- example:NAME:end -->, without its fences."""
    m = re.search(rf"<!-- example:{re.escape(name)}:begin -->\n```[a-z]*\n(.*?)```\n<!-- example:{re.escape(name)}:end -->",
                  text, re.S)
    assert m, f"README.md has no fenced code block between <!-- example:{name}:begin/end --> markers"
    return m.group(1)


def files_to_copy(text: str) -> list[str]:
    """The README's "What to copy" layout: every 'copy of variants/X' line, as X."""
    return re.findall(r"copy of variants/(\S+)", text)


@pytest.fixture
def project() -> Iterator[Path]:
    """A reader's project outside the repository: the README's files copied into PACKAGE, job.py and resume.py."""
    text = README.read_text()
    with tempfile.TemporaryDirectory(prefix="readme-project-") as tmp:
        folder = Path(tmp)
        assert ROOT not in folder.resolve().parents
        (folder / PACKAGE).mkdir()
        (folder / PACKAGE / "__init__.py").write_text("")  # "keep its __init__.py empty or light"
        for rel in files_to_copy(text):
            dest = folder / PACKAGE / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes((ROOT / "variants" / rel).read_bytes())
        (folder / "job.py").write_text(example(text, "job.py"))
        (folder / "resume.py").write_text(example(text, "resume"))  # "next to job.py"
        yield folder
    assert not folder.exists()


def run_script(folder: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """``python -S ARGS`` in ``folder``, in a session of its own; no process of it outlives the call."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    proc = subprocess.Popen([sys.executable, "-S", *args], cwd=folder, env=env, text=True, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(stdin, timeout=RUN_LIMIT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"python {' '.join(args)} did not finish in {RUN_LIMIT} s\nstdout:\n{out}\nstderr:\n{err}")
    finally:
        # The script's workers and multiprocessing's resource tracker are in its process group (the
        # tracker exits on its own within milliseconds of the script); whatever is still there is killed.
        _, left = psutil.wait_procs(group_members(proc.pid), timeout=TRACKER_EXIT)
        for p in left:
            p.kill()
    assert not left, f"python {' '.join(args)} left {len(left)} process(es) running: {[p.pid for p in left]}"
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.timeout(90)
def test_minimal_script_runs_unchanged_from_a_copy_of_the_named_files(project):
    supervisor = sorted(f"supervisor/{f.name}" for f in (ROOT / "variants" / "supervisor").glob("*.py"))
    assert sorted(files_to_copy(README.read_text())) == ["contract.py", *supervisor], \
        "the README's 'What to copy' must name contract.py and every file of variants/supervisor/"
    r = run_script(project, "job.py")
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(r"100 item\(s\) done in \d+\.\d\d s\n", r.stdout), r.stdout
    with sqlite3.connect(project / "squares.db") as db:
        rows = db.execute("SELECT n, square FROM squares ORDER BY n").fetchall()
    db.close()
    assert rows == [(n, n * n) for n in range(100)]


SHOWN_FOLDER = "/tmp/your_project"  # where the README says its failure example ran


def _as_shown(stderr: str, folder: Path) -> str:
    """A real run's stderr as the README shows it: run in SHOWN_FOLDER, and the line numbers of every file
    but job.py elided as ``line ...`` (the copied supervisor's move whenever its code does; job.py's are the
    README's own, and are kept)."""
    for path in {str(folder.resolve()), str(folder)}:
        stderr = stderr.replace(path, SHOWN_FOLDER)
    return re.sub(rf'(File "{re.escape(SHOWN_FOLDER)}/(?!job\.py")[^"]+", line )\d+', r"\1...", stderr)


def _without_carets(text: str) -> list[str]:
    """The lines of a traceback less its ``^^^``/``~~~`` markers, which differ between Python versions."""
    return [line for line in text.splitlines() if not re.fullmatch(r"\s*[~^]+\s*", line)]


@pytest.mark.timeout(90)
def test_a_failing_item_prints_what_the_readme_shows(project):
    text = README.read_text()
    shown = example(text, "failure")
    command, _ = shown.split("\n", 1)
    assert command == "$ python job.py 1 2 -3 4"
    r = run_script(project, "job.py", "1", "2", "-3", "4")
    assert r.returncode == 1, r.stderr
    real = f"{command}\n{_as_shown(r.stderr, project)}"
    # Every line, every frame's file and function, job.py's line numbers: as a real run prints them now. On a
    # mismatch, paste the output below between the failure markers of both READMEs.
    assert _without_carets(shown) == _without_carets(real), f"the README's failure example is stale; real:\n{real}"
    line = re.search(r'File "[^"]+/job\.py", line (\d+), in square', shown).group(1)
    assert f"(`job.py`, line {line})" in text, "the prose under the example quotes another line of job.py"
    assert f"(`job.py` の {line} 行目)" in README_JA.read_text(), "README.ja.md quotes another line of job.py"


@pytest.mark.timeout(90)
def test_without_the_main_guard_no_worker_starts(project):
    script = example(README.read_text(), "job.py")
    guard = re.search(r'^if __name__ == "__main__":.*\n((?:    .*\n)+)', script, re.M)
    assert guard, "the README's script has no __main__ guard"
    (project / "unguarded.py").write_text(script[:guard.start()] + textwrap.dedent(guard.group(1)))
    r = run_script(project, "unguarded.py")
    assert r.returncode == 1
    assert "bootstrapping phase" in r.stderr
    assert r.stderr.splitlines()[-1].startswith(f"{PACKAGE}.contract.RunFailed: worker_died: a worker could not start")


FLAKY = '''
from pathlib import Path


def square(n):
    """Fails once on item 13, the first time only: a transient fault, what resuming is for."""
    if n == 13 and not Path("seen-13").exists():
        Path("seen-13").write_text("")
        raise ConnectionError("the API did not answer")
    if n < 0:
        raise ValueError(f"cannot take a negative number, got {n}")
    return n * n
'''

# squares.db made before the script runs, with the table the scripts create (they keep it: CREATE TABLE IF NOT
# EXISTS) and a trigger that logs every insert, so a save repeated by a resume shows even under INSERT OR REPLACE.
SAVES_LOG = """
CREATE TABLE squares (n INTEGER PRIMARY KEY, square INTEGER NOT NULL);
CREATE TABLE saves (n INTEGER NOT NULL);
CREATE TRIGGER log_save AFTER INSERT ON squares BEGIN INSERT INTO saves VALUES (NEW.n); END;
"""


def _resume(folder: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], list[int], dict[int, str]]:
    """``python resume.py ARGS`` on a fresh squares.db: the run, every save in order, the failures table."""
    with sqlite3.connect(folder / "squares.db") as db:
        db.executescript(SAVES_LOG)
    db.close()
    r = run_script(folder, "resume.py", *args)
    with sqlite3.connect(folder / "squares.db") as db:
        saves = [n for n, in db.execute("SELECT n FROM saves")]
        failures = dict(db.execute("SELECT n, kind FROM failures"))
        wrong = db.execute("SELECT n FROM squares WHERE square != n * n").fetchall()
    db.close()
    assert wrong == [], "a saved square is wrong"
    return r, saves, failures


def _resumes(r: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in r.stderr.splitlines() if line.startswith("resuming ")]


@pytest.mark.timeout(90)
def test_the_resume_script_sets_a_permanent_culprit_aside(project):
    r, saves, failures = _resume(project, "1", "2", "-3", "4")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "3 item(s) done, 1 set aside (see the table failures)\n", r.stdout
    assert sorted(saves) == [1, 2, 4], f"over all runs every good item is saved exactly once: {saves}"
    assert failures == {-3: "worker_error"}
    assert len(_resumes(r)) == 2, "the culprit runs twice, then is set aside:\n" + r.stderr


@pytest.mark.timeout(90)
def test_the_resume_script_saves_a_transient_culprit_on_its_resume(project):
    (project / "job.py").write_text(FLAKY)  # resume.py imports square from job.py
    r, saves, failures = _resume(project)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "100 item(s) done, 0 set aside (see the table failures)\n", r.stdout
    assert sorted(saves) == list(range(100)), "over all runs every item is saved exactly once"
    assert failures == {}
    resumes = _resumes(r)
    assert len(resumes) == 1 and resumes[0].endswith("(item 13)"), r.stderr
    left = int(resumes[0].split()[1])
    assert 0 < left < 100, "the first run saved some items, and the resume had what was left"


@pytest.mark.timeout(90)
def test_the_resume_script_stops_after_too_many_culprits(project):
    limit = int(re.search(r"^MAX_SET_ASIDE = (\d+)", example(README.read_text(), "resume"), re.M).group(1))
    culprits = [str(-n) for n in range(1, limit + 2)]
    r, saves, failures = _resume(project, *culprits, "5", "6")
    assert r.returncode == 1
    assert r.stderr.splitlines()[-1].startswith(f"{PACKAGE}.contract.RunFailed: worker_error"), r.stderr
    assert len(failures) == limit and set(failures) < {int(c) for c in culprits}, failures
    assert len(saves) == len(set(saves)) and set(saves) <= {5, 6}, saves


def _options_table(text: str) -> dict[str, object]:
    """The README's "Every option of run()" table: option -> the default it states."""
    section = text.split("### Every option of `run()`", 1)[1].split("\n### ", 1)[0]
    table = {}
    for name, default in re.findall(r"^\| `(\w+)` \| `([^`]+)`", section, re.M):
        table[name] = ast.literal_eval(default)
    return table


def test_the_options_table_is_the_real_signature():
    params = inspect.signature(supervisor_run).parameters
    real = {name: p.default for name, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert _options_table(README.read_text()) == real


# -- README.ja.md keeps step with README.md --------------------------------------------------------------
def _structure(text: str) -> dict[str, object]:
    lines = text.splitlines()
    fenced, in_code, code_langs = [], False, []
    for line in lines:
        if line.startswith("```"):
            if not in_code:
                code_langs.append(line[3:].strip())
            in_code = not in_code
        fenced.append(in_code)
    prose = [line for line, code in zip(lines, fenced, strict=True) if not code]
    return {
        "heading levels": [len(m.group(1)) for line in prose if (m := re.match(r"(#+) ", line))],
        "markers": re.findall(r"<!-- ([\w.-]+:[\w.-]+:(?:begin|end)) -->", text),
        "anchors": re.findall(r'<a id="([^"]+)"></a>', text),
        "code block languages": code_langs,
        # every link, as many times as it is given (a term linked five times in one README and twice in the other
        # differs): files, web pages, glossary entries; links to a section by its heading are counted (their
        # anchors are in each README's own language)
        "links to files": sorted(re.findall(r"\]\(((?!#|https?:|README)[^)]+)\)", text)),
        "links to web pages": sorted(re.findall(r"\]\((https?:[^)]+)\)", text)),
        "links to anchors": sorted(re.findall(r"\]\((#g-[^)]+|#fault-time|#left-running)\)", text)),
        "links to sections": len(re.findall(r"\]\(#(?!g-|fault-time|left-running)[^)]+\)", text)),
    }


def _blocks(text: str) -> dict[str, str]:
    """Every marked section (generated by bench/run.py, or an example), by marker name."""
    return dict(re.findall(r"<!-- ([\w.-]+:[\w.-]+):begin -->\n(.*?)<!-- \1:end -->", text, re.S))


def test_the_phases_table_is_the_workers_own():
    """The README's table of a worker's phases is _worker.PHASES, row for row: a phase added, renamed or given a
    new meaning in the code shows here until the README says the same."""
    from variants.supervisor import _worker

    table = _blocks(README.read_text())["code:phases"]
    rows = [[c.strip().replace("`", "") for c in line.strip("|").split("|")]
            for line in table.splitlines() if line.startswith("| ") and not line.startswith("| phase ")]
    code = [[name, *meaning.split(": ", 1)] for name, meaning in _worker.PHASES.values()]
    assert rows == code


def test_every_glossary_term_is_linked_from_the_text():
    text = README.read_text()
    terms = re.findall(r'<a id="(g-[^"]+)"></a>', text)
    assert terms, "README.md has no glossary"
    assert [t for t in terms if f"](#{t})" not in text] == []


def _prose_before_the_glossary(text: str) -> str:
    """README.md as a reader meets it: no generated sections, no code (a link's `code` text is kept)."""
    text = re.sub(r"<!-- ([\w.-]+:[\w.-]+):begin -->\n.*?<!-- \1:end -->", "", text, flags=re.S)
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"`[^`]*`", lambda m: m.group() if text[m.start() - 1:m.start()] == "["
                  and text[m.end():m.end() + 1] == "]" else " " * len(m.group()), text)
    return text[:text.index("## Glossary")]


def test_every_glossary_term_is_linked_where_the_reader_first_meets_it():
    text = README.read_text()
    body = _prose_before_the_glossary(text)
    unlinked = []
    for anchor, word in re.findall(r'<a id="(g-[^"]+)"></a>\*\*([^*]+)\*\*', text):
        word = word.strip("`")
        first = re.search(r"(?<![\w-])" + re.escape(word) + r"(?:e?s)?(?![\w-])", body,
                          flags=0 if word[0].isupper() else re.I)
        assert first, f"glossary term {word!r} is never used before the glossary"
        if '<a id="' in body[max(0, first.start() - 40):first.start()]:
            continue  # the term's own definition in the text (fault time, left running)
        opening = body.rfind("[", 0, first.start())
        closing = body.find("](", first.end())
        linked = (opening != -1 and closing != -1 and "]" not in body[opening:first.start()]
                  and body.startswith(f"](#{anchor})", closing))
        if not linked:
            unlinked.append(f"{word!r}: {body[max(0, first.start() - 50):first.end() + 20]!r}")
    assert unlinked == [], "first use not linked to the glossary:\n" + "\n".join(unlinked)


def test_the_japanese_readme_has_the_same_structure():
    en, ja = README.read_text(), README_JA.read_text()
    s_en, s_ja = _structure(en), _structure(ja)
    for key in s_en:
        assert s_ja[key] == s_en[key], f"README.ja.md differs from README.md in its {key}"
    assert _blocks(ja) == _blocks(en), "a generated section or an example differs between the two READMEs"


# -- CI follows the README ---------------------------------------------------------------------------------
# Each command of the Quick start, and what .ci/run runs for it: the same commands, in a virtual environment
# of CI's own (a temporary folder, never the clone's .venv), called by path instead of activated.
QUICK_START_IN_CI = {
    "python3 -m venv .venv && . .venv/bin/activate": 'fresh_venv python3 "$readme" ".[dev]"',
    'pip install -e ".[dev]"': '"$2/bin/python" -m pip install -q -e "$3"',
    "pytest experiments/": '"$readme/bin/pytest" experiments/\n',
}


def test_ci_runs_the_quick_start_as_the_readme_gives_it():
    quick_start = README.read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", quick_start, re.S)
    assert block, "the Quick start has no bash block"
    commands = [line.split("#", 1)[0].strip() for line in block.group(1).splitlines()]
    assert commands == list(QUICK_START_IN_CI), "the Quick start changed: make .ci/run (and this table) follow it"
    ci = (ROOT / ".ci" / "run").read_text()
    assert [c for c, in_ci in QUICK_START_IN_CI.items() if in_ci not in ci] == [], ".ci/run no longer runs these"
    assert 'fresh_venv() {  # $1: interpreter, $2: venv dir, $3: the pip target\n  "$1" -m venv "$2"\n' in ci
    assert '"$readme/bin/python" bench/run.py --quick' in ci, "CI runs the README's other command, the bench"
