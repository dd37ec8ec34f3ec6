"""How the suite is shared out among processes (pytest-xdist), so that the README's `python3 -m pytest -q`
uses every core: the tiny models run on one torch thread, so a single process leaves the other cores idle.

- How many: with pytest-xdist installed and no `-n` given, a run of more than one test file starts one
  worker per core (`PYTEST_XDIST_AUTO_NUM_WORKERS` overrides the count), at most MAX_WORKERS; a run of one
  file, or on one core, stays in this process. `-n 0` or `-p no:xdist` runs everything here (for --pdb or
  prints); `-n N` picks N.
- The unit of work is a test file: its module fixtures (tiny pipelines, servers) are built once and its
  tests run in their order, on one worker. Tests that share a resource only one process may hold at a time,
  or a costly session fixture, form one group across files instead: a fixture named in SHARED_FIXTURES puts
  every test using it into that group, and `@pytest.mark.xdist_group("name")` puts a test into "name".
- Files with slow tests (the `slow` mark) are handed out first, so that no long file starts last while the
  other workers idle.
"""
from __future__ import annotations

import pytest

MAX_WORKERS = 4  # more than enough for ~100 files of which the longest takes a tenth of the whole
SHARED_FIXTURES = {"ray_cluster": "ray"}  # fixture -> group: one private Ray cluster, not one per worker


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """Choose the workers when the command line did not (before pytest-xdist reads the options)."""
    if (not config.pluginmanager.hasplugin("xdist") or hasattr(config, "workerinput")
            or config.option.numprocesses is not None or config.option.collectonly or config.option.usepdb
            or _one_file(config)):
        return
    workers = min(int(config.hook.pytest_xdist_auto_num_workers(config=config)), MAX_WORKERS)
    if workers > 1:
        config.option.numprocesses = workers
        if config.option.dist == "no":
            config.option.dist = "loadgroup"


def _one_file(config: pytest.Config) -> bool:
    here = config.invocation_params.dir
    files = {(here / arg.split("::", 1)[0]).resolve() for arg in config.args}
    return len(files) == 1 and next(iter(files)).is_file()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Group the tests of SHARED_FIXTURES; on a worker, put the files with slow tests first (every worker
    collects the same order, as pytest-xdist requires; tests keep their order within a file)."""
    if getattr(config, "workerinput", {}).get("dist") == "loadgroup":
        config.option.loadgroup = True  # a worker parses the command line again, which did not say loadgroup
    for item in items:
        for fixture, group in SHARED_FIXTURES.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(pytest.mark.xdist_group(group))
    if hasattr(config, "workerinput"):
        slow_files = {_file_of(item.nodeid) for item in items if item.get_closest_marker("slow")}
        items.sort(key=lambda item: _file_of(item.nodeid) not in slow_files)  # a stable sort


def _file_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    """Tell each worker the distribution mode chosen here (workers read only the command line)."""
    node.workerinput["dist"] = node.config.getvalue("dist")


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """For --dist loadgroup: an unmarked test's unit is its file (pytest-xdist's own unit is the single test)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class FileOrGroupScheduling(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            group = super()._split_scope(nodeid)
            return group if group != nodeid else _file_of(nodeid)

    config.option.loadscopereorder = False  # keep the slow-files-first order (not the largest file first)
    return FileOrGroupScheduling(config, log)
