"""The pytest plugin behind ``pytest conformance --backend NAME``.

It collects one test item per backend × concept × check × vector × dtype from the spec, with ids
like ``conv2d[torch-figure3-float32]`` (forward), ``conv2d[torch-figure3-float32-vjp]``,
``conv2d[torch-basic-float64-fd]``, ``conv2d[torch-error-zero_stride]`` and
``conv2d[cross-basic-float32]``, and records every outcome in ``reports/results.json`` as it goes.
"""

from __future__ import annotations

import ctypes
import importlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from nutshell import backends
from nutshell import spec as spec_mod
from nutshell.conformance import checks, shards
from nutshell.conformance.results import (
    CheckResult,
    EventWriter,
    Outcome,
    ResultsWriter,
    Section,
    load_results,
    rerun_command,
    summary_table,
)

DTYPES = ("float32", "float64")
# Modules that add items beyond the op-level concepts; each defines items(spec_file, state).
PROVIDERS = tuple(f"nutshell.conformance.{m}" for m in ("catalogue", "fuzz", "model_checks", "claims", "onnx_interop",
                                                        "precision"))
_STATE = pytest.StashKey[dict]()
# The folders that install as nutshell.spec, nutshell.backends and nutshell.conformance (pytest_collect_directory).
_OWN_FOLDERS = ("backends", "conformance", "spec")
_OWN_DIRS = frozenset(Path(m.__file__).resolve().parent for m in (backends, spec_mod, checks))


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("nutshell", "nutshell conformance")
    group.addoption("--backend", action="append", default=None,
                    help="backend to check (repeatable); default: every registered backend that loads")
    group.addoption("--nutshell-device", default=None, help="device for every backend: cpu or cuda")
    group.addoption("--results", default="reports/results.json", help="where results.json goes")
    group.addoption("--spec", default=None, help="spec file (default: the repository's spec/concepts.yaml)")
    group.addoption("--no-nutshell-summary", action="store_true", help="leave the summary table to the caller")
    group.addoption("--nutshell-group", default=None,
                    help="worker mode: only this backend's checks, or 'cross' for the checks spanning backends")
    group.addoption("--events", default=None,
                    help="worker mode: append start events and records to this JSON-lines file instead of results.json")
    group.addoption("--skip-ids", default=None, help="file of check ids (one per line) to leave out")
    group.addoption("--shard", default=None, metavar="I/N",
                    help="run shard I of N: a deterministic share of the selected checks (conformance/shards.py)")
    group.addoption("--shard-durations", default=None, metavar="RESULTS_JSON",
                    help="balance the shards by the seconds each check took in this earlier results file")
    group.addoption("--nutshell-run-id", default=None,
                    help="worker mode: the token every event line carries, so the runner takes only this worker's")
    group.addoption("--nutshell-batch", default=None, metavar="I/K",
                    help="worker mode: batch I of K of the group's checks (nutshell run -j)")
    group.addoption("--nutshell-batch-timings", default=None, metavar="JSON",
                    help="worker mode: {check id: seconds} of an earlier run, to balance the batches by")
    group.addoption("--nutshell-parent", type=int, default=None,
                    help="worker mode: the runner's process id; the worker ends as soon as that process ends")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_STATE] = {"backends": None, "writer": None, "unavailable": {}, "pending": {}}
    if _xdist_controller(config):
        config.pluginmanager.register(XdistController(config), "nutshell-xdist-controller")
    config.addinivalue_line("markers", "nutshell: a conformance check generated from the spec")
    # registered here too, not only in the repository's pyproject: the suite also runs from outside it
    config.addinivalue_line("markers", "slow: takes more than a few seconds")
    parent = config.getoption("--nutshell-parent")
    if parent is not None:
        die_with(parent)


PR_SET_PDEATHSIG = 1   # linux/prctl.h


def die_with(parent: int) -> None:
    """Worker mode: end this process when the runner ``parent`` ends, however it ends (SIGKILL too).

    On Linux the kernel sends SIGKILL on the parent's death (prctl PR_SET_PDEATHSIG); everywhere,
    a thread also checks the parent twice a second, which covers a parent that died before the prctl."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    threading.Thread(target=poll_parent, args=(parent,), name="nutshell-parent-watch", daemon=True).start()


def poll_parent(parent: int, every_s: float = 0.5) -> None:
    """Wait while ``parent`` is this process's parent; end the process at once when it no longer is."""
    while os.getppid() == parent:
        time.sleep(every_s)
    os._exit(1)


def _state(config: pytest.Config) -> dict:
    """The run's spec (``--spec``, else the repository's) and the backends, built on that spec so
    that every check, every backend and the results header read the same file."""
    st = config.stash[_STATE]
    if st["backends"] is None:
        requested = config.getoption("--backend")
        group = config.getoption("--nutshell-group")
        if group not in (None, "cross"):
            requested = [group]
        st["spec"] = spec_mod.load(config.getoption("--spec"))
        loaded, missing = backends.available(requested, config.getoption("--nutshell-device"), spec=st["spec"])
        st["backends"], st["unavailable"] = loaded, missing
        st["explicit"] = bool(requested)
    return st


def _writer(config: pytest.Config) -> ResultsWriter | EventWriter:
    st = _state(config)
    if st["writer"] is None:
        header = {"spec_version": st["spec"].version,
                  "backends": {n: {"device": b.device} for n, b in st["backends"].items()},
                  "unavailable": st["unavailable"]}
        events = config.getoption("--events")
        st["writer"] = EventWriter(Path(events), header | {"pending": st["pending"]},
                                    config.getoption("--nutshell-run-id")) if events else \
            ResultsWriter(Path(config.getoption("--results")), header)
    return st["writer"]


def _group_of(item: pytest.Item, st: dict) -> str | None:
    """The runner's group of an item: its backend's, or ``cross`` for a check that spans backends."""
    if not isinstance(item, (CheckItem, BackendItem)):
        return None
    return item.backend if item.backend in st["backends"] or item.backend in st["unavailable"] else "cross"


@pytest.hookimpl(trylast=True)   # after -k and -m have deselected theirs: "pending" counts what is left
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    """Worker mode: leave out the ids already done, keep one group's checks, and write the header
    event, with the number of checks still to run in each group (``pending``), even when none is."""
    _keep_shard(config, items)
    group, skip_file = config.getoption("--nutshell-group"), config.getoption("--skip-ids")
    if group is None and skip_file is None:
        return
    skip = set(Path(skip_file).read_text().split("\n")) if skip_file and Path(skip_file).is_file() else set()
    st = _state(config)
    batch = _batch(config, [i for i in items if group is None or _group_of(i, st) in (None, group)])
    keep, dropped, pending = [], [], {}
    for item in items:
        owner = _group_of(item, st)
        if item.name in skip:
            dropped.append(item)
            continue
        if isinstance(item, CheckItem):
            pending[owner] = pending.get(owner, 0) + 1
        mine = (group is None or owner in (None, group)) and (
            batch is None or not isinstance(item, CheckItem) or item.name in batch)
        (keep if mine else dropped).append(item)
    st["pending"] = pending
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
    if config.getoption("--events"):
        _writer(config)


def _batch(config: pytest.Config, items: list) -> set[str] | None:
    """``--nutshell-batch I/K`` (``nutshell run -j``): the ids of batch I among the group's checks
    ``items``, balanced by ``--nutshell-batch-timings``; None without a batch. The assignment is
    over the whole group, the checks already done included, so that every worker of the group
    agrees on it however late it starts."""
    text = config.getoption("--nutshell-batch")
    if text is None:
        return None
    index, k = shards.parse(text)
    timings = config.getoption("--nutshell-batch-timings")
    seconds = json.loads(Path(timings).read_text()) if timings else None
    owner = shards.assign([i.name for i in items if isinstance(i, CheckItem)], k, seconds)
    return {name for name, n in owner.items() if n == index}


def _keep_shard(config: pytest.Config, items: list) -> None:
    """``--shard I/N``: keep the checks assigned to shard I (conformance/shards.py), assigned over
    every check the selection holds, before a worker keeps its group's or a resume skips its done."""
    text = config.getoption("--shard")
    if text is None:
        return
    index, n = shards.parse(text)
    source = config.getoption("--shard-durations")
    durations = shards.durations_of(load_results(source)) if source else None
    owner = shards.assign([i.name for i in items if isinstance(i, CheckItem)], n, durations)
    dropped = [i for i in items if isinstance(i, CheckItem) and owner[i.name] != index]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [i for i in items if not isinstance(i, CheckItem) or owner[i.name] == index]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if isinstance(item, CheckItem) and item.config.getoption("--events"):
        _writer(item.config).start(item.name, item.section)


def _own_dir(path: Path) -> bool:
    """Whether ``path`` is one of nutshell's folders (``spec/``, ``backends/``, ``conformance/``), either the
    ones this plugin was imported from or a source checkout's.

    A checkout's folders need not be the imported ones: tox (and any wheel install) puts nutshell in
    site-packages while ``pytest conformance`` runs from the checkout, and so would a second checkout or a
    copy of the tree. So a folder also counts when its ``__init__.py`` holds nutshell's one-name guard
    (``if __name__ != "nutshell.conformance"`` and the like): that guard is exactly what raises when the folder
    is imported under its short name, so a folder holding it must never be imported as a package. The test
    reads one small file, and only for a folder of one of the three names; a user's own ``conformance/`` or
    ``backends/`` (no guard) is collected as usual."""
    if path.resolve() in _OWN_DIRS:
        return True
    if path.name not in _OWN_FOLDERS:
        return False
    try:
        init = (path / "__init__.py").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return f'if __name__ != "nutshell.{path.name}"' in init


@pytest.hookimpl(tryfirst=True)
def pytest_collect_directory(path: Path, parent: pytest.Collector):
    """nutshell's own folders are collected as plain directories: pytest would otherwise import their
    ``__init__.py`` under a second name (``conformance``), which the folder's guard refuses, and put the
    repository on ``sys.path``. See :func:`_own_dir` for which folders count, whatever the install."""
    if _own_dir(path):
        return pytest.Dir.from_parent(parent, path=path)
    return None


def pytest_collect_file(file_path: Path, parent: pytest.Collector):
    if file_path.suffix == ".nutshell":
        return SpecFile.from_parent(parent, path=file_path)
    return None


class SpecFile(pytest.File):
    """Turns the spec into items."""

    def collect(self):
        st = _state(self.config)
        s = st["spec"]
        for name, why in st["unavailable"].items():
            yield BackendItem.from_parent(self, name=f"backend[{name}]", why=why, explicit=st["explicit"])
        for concept in s.concepts.values():
            for bname in st["backends"]:
                yield from self._per_backend(bname, concept)
            for vec in concept.vectors:
                if vec.kind == "generated":
                    yield CheckItem.from_parent(self, name=f"{concept.id}[cross-{vec.name}-float32]", backend="cross",
                                                concept=concept, check="cross", vec=vec, dtype="float32",
                                                section=Section.CROSS)
        for provider in PROVIDERS:
            yield from importlib.import_module(provider).items(self, st)

    def _per_backend(self, bname: str, concept):
        for vec in concept.vectors:
            for dtype in DTYPES:
                base = f"{concept.id}[{bname}-{vec.name}-{dtype}"
                yield CheckItem.from_parent(self, name=base + "]", backend=bname, concept=concept, check="forward",
                                            vec=vec, dtype=dtype, section=Section.OPS)
                if vec.grad:
                    yield CheckItem.from_parent(self, name=base + "-vjp]", backend=bname, concept=concept,
                                                check="vjp", vec=vec, dtype=dtype, section=Section.OPS)
            if vec.kind == "generated":
                yield CheckItem.from_parent(self, name=f"{concept.id}[{bname}-{vec.name}-float64-fd]", backend=bname,
                                            concept=concept, check="fd", vec=vec, dtype="float64",
                                            section=Section.OPS)
        for ev in concept.errors:
            yield CheckItem.from_parent(self, name=f"{concept.id}[{bname}-error-{ev.name}]", backend=bname,
                                        concept=concept, check="error", vec=ev, dtype=None, section=Section.OPS)


class BackendItem(pytest.Item):
    """A backend that could not be loaded: reported, never fatal for the others."""

    def __init__(self, *, why: str, explicit: bool, **kw):
        super().__init__(**kw)
        self.why, self.explicit = why, explicit
        self.backend = self.name[len("backend["):-1]

    def runtest(self) -> None:
        if self.explicit:
            raise backends.BackendUnavailable(self.why)
        pytest.skip(f"unavailable: {self.why}")


class CheckItem(pytest.Item):
    """One check of one backend (or, for 'cross', of all of them).

    ``concept`` and ``vec`` need only an ``id`` / a ``name`` (models and claims pass their own
    records); ``fn``, when given, runs the check: ``fn(state) -> checks.Record``. ``section`` is
    where the report shows its result: the code that makes the item knows what it checks.
    """

    def __init__(self, *, backend: str, concept, check: str, vec, dtype: str | None, section: Section, fn=None,
                 **kw):
        super().__init__(**kw)
        self.backend, self.concept, self.check, self.vec, self.dtype = backend, concept, check, vec, dtype
        self.section, self.fn = section, fn
        self.result: CheckResult | None = None
        self.add_marker(pytest.mark.nutshell)

    def runtest(self) -> None:
        st = _state(self.config)
        tol = st["spec"].tolerance
        started = time.perf_counter()
        b = st["backends"].get(self.backend)

        def seconds() -> float:
            return round(time.perf_counter() - started, 6)

        try:
            declared = b.deviation(self.name) if b is not None else None
            if declared is not None:
                self._expect_deviation(st, tol, declared)
            rec = self._run(st, tol)
            self.result = self.make_result(Outcome.PASS, usage=rec.usage, details=rec.details, seconds=seconds())
        except checks.Unsupported as exc:
            self.result = self.make_result(Outcome.UNSUPPORTED, message=str(exc), seconds=seconds())
            pytest.skip(f"unsupported: {exc}")
        except checks.CheckFailed as exc:
            self.result = self.make_result(Outcome.FAIL, message=str(exc), usage=exc.record.get("usage"),
                                           details=exc.record.get("details"), seconds=seconds())
            raise
        except spec_mod.SpecFileError as exc:   # the spec's own files are broken: no backend was checked
            self.result = self.make_result(Outcome.SPEC, message=str(exc), seconds=seconds())
            raise
        except Exception as exc:
            self.result = self.make_result(Outcome.ERROR, message=f"{type(exc).__name__}: {exc}", seconds=seconds())
            raise

    def make_result(self, outcome: Outcome, **measured: Any) -> CheckResult:
        """This check's record; a failure or an error carries the command that reruns it."""
        rerun = self.rerun_command() if outcome in (Outcome.FAIL, Outcome.ERROR) else None
        return CheckResult(id=self.name, backend=self.backend, concept=self.concept.id, check=self.check,
                           section=self.section, outcome=outcome, vector=self.vec.name, dtype=self.dtype,
                           nodeid=self.nodeid, rerun=rerun, **measured)

    def _expect_deviation(self, st: dict, tol: dict, why: str) -> None:
        """A declared deviation: its failure is reported unsupported; a pass means the entry is stale."""
        try:
            self._run(st, tol)
        except checks.CheckFailed as exc:
            raise checks.Unsupported(f"declared deviation: {why} ({exc})") from None
        raise checks.CheckFailed(f"declared deviation no longer happens ({why}): remove it from "
                                 f"{type(st['backends'][self.backend]).__name__}.deviations", {"usage": 0.0})

    def _run(self, st: dict, tol: dict) -> checks.Record:
        b = st["backends"].get(self.backend)
        if b is not None and self.concept.id in st["spec"].concepts and self.concept.id not in b.concepts:
            # a concept the backend offers in no dtype: its error, catalogue and fuzz checks would
            # only exercise the shared validation, so they are unsupported too, never passed
            raise checks.Unsupported(f"{b.name} declares {self.concept.id} unsupported in every dtype")
        if self.fn is not None:
            return self.fn(st)
        if self.check == "cross":
            return checks.cross(st["backends"], self.concept, self.vec, self.dtype, tol)
        b = st["backends"][self.backend]
        if self.check == "forward":
            return checks.forward(b, self.concept, self.vec, self.dtype, tol)
        if self.check == "vjp":
            return checks.vjp(b, self.concept, self.vec, self.dtype, tol)
        if self.check == "fd":
            return checks.finite_difference(b, self.concept, self.vec, tol)
        return checks.error(b, self.concept, self.vec)

    def rerun_command(self) -> str:
        """A command that reruns exactly this check, with the backends it ran with (all of this
        run's for a check spanning backends), the device and the spec file of this run."""
        st = _state(self.config)
        names = list(st["backends"]) if self.backend == "cross" else [self.backend]
        return rerun_command(self.path, self.name, names, self.config.getoption("--nutshell-device"),
                             self.config.getoption("--spec"))

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, checks.CheckFailed):
            return f"{self.name}: {excinfo.value}\n  rerun: {self.rerun_command()}"
        if isinstance(excinfo.value, spec_mod.SpecFileError):
            return f"{self.name}: a spec problem, the backend was not run: {excinfo.value}"
        raised = super().repr_failure(excinfo, style)
        return f"{self.name}: the backend raised\n{raised}\n  rerun: {self.rerun_command()}"

    def reportinfo(self):
        return self.path, None, self.name


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    outcome = yield
    report = outcome.get_result()
    if not isinstance(item, CheckItem) or report.when != "call":
        return
    # no result: the check was ended by a BaseException that is not an Exception (SystemExit, say)
    record = item.result or item.make_result(Outcome.ERROR, message="no record")
    if _xdist_worker(item.config):           # the controller writes: the record travels with the report
        report.user_properties.append((RECORD_KEY, json.dumps(record.to_json(), default=str)))
    else:
        _writer(item.config).add(record)


# --- pytest-xdist: workers check, the controller alone writes results.json ------------------------

RECORD_KEY = "nutshell_record"


def _xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _xdist_controller(config: pytest.Config) -> bool:
    return not _xdist_worker(config) and getattr(config.option, "dist", "no") != "no" \
        and bool(getattr(config.option, "numprocesses", None) or getattr(config.option, "tx", None))


class XdistController:
    """Registered on the pytest-xdist controller only: it writes results.json from the records the
    workers attach to their reports, and takes each worker's header (its backends, those it could
    not load) when the worker ends. Workers never write results.json, so there is one writer."""

    def __init__(self, config: pytest.Config):
        self.config = config

    def writer(self) -> ResultsWriter:
        st = self.config.stash[_STATE]
        if st["writer"] is None:
            st["spec"] = spec_mod.load(self.config.getoption("--spec"))
            st["backends"] = {}
            st["writer"] = ResultsWriter(Path(self.config.getoption("--results")),
                                         {"spec_version": st["spec"].version, "backends": {}, "unavailable": {}})
        return st["writer"]

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for key, value in report.user_properties:
            if key == RECORD_KEY and report.when == "call":
                self.writer().add(CheckResult.from_json(json.loads(value), f"record of {report.nodeid}"))

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error) -> None:
        header = json.loads(getattr(node, "workeroutput", {}).get(HEADER_KEY, "{}"))
        if header:
            w = self.writer()
            w.header["backends"].update(header["backends"])
            w.header["unavailable"].update(header["unavailable"])
            self.config.stash[_STATE]["unavailable"].update(header["unavailable"])


HEADER_KEY = "nutshell_header"


def pytest_sessionfinish(session: pytest.Session) -> None:
    st = session.config.stash.get(_STATE, None)
    if not st:
        return
    if _xdist_worker(session.config) and st.get("backends") is not None:
        session.config.workeroutput[HEADER_KEY] = json.dumps(
            {"backends": {n: {"device": b.device} for n, b in st["backends"].items()},
             "unavailable": st["unavailable"]})
    if st.get("writer") is not None:
        st["writer"].flush(final=True)
    if st.get("explicit") and st["unavailable"] and session.exitstatus in (0, 5):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED  # a requested backend that cannot load is a failure
    if st.get("explicit") and st["unavailable"] and session.exitstatus == pytest.ExitCode.USAGE_ERROR:
        for why in st["unavailable"].values():     # why pytest is about to say "not found: ...::<check>"
            print(f"nutshell: {why}; none of its checks exist", file=sys.stderr)


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    st = config.stash.get(_STATE, None)
    if not st or st.get("writer") is None or config.getoption("--no-nutshell-summary"):
        return
    from nutshell.conformance.results import summarize

    w = st["writer"]
    terminalreporter.section("nutshell conformance summary")
    terminalreporter.write_line(summary_table(summarize(w.records), st["unavailable"]))
    terminalreporter.write_line(f"results: {w.path}")
