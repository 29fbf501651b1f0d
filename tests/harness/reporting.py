"""Know whether the current test failed, and put a fixture's evidence (e.g. a broker log) in its report.

`pytest_runtest_makereport` (registered by `tests.harness.plugin`) records each phase's report on the
item and, for a failing phase, appends every attached description as a report section, so the failure
output shows it next to the traceback. Fixtures use `test_failed()` in their teardown to keep files.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS_DIR = REPO_ROOT / "test-artifacts"

PHASE_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()
ATTACHMENTS = pytest.StashKey[list[tuple[str, Callable[[], str]]]]()


def record_report(item: pytest.Item, report: pytest.TestReport) -> None:
    """Called from the makereport hook for each phase (setup, call, teardown)."""
    item.stash.setdefault(PHASE_REPORTS, {})[report.when] = report
    if report.failed:
        for title, describe in item.stash.get(ATTACHMENTS, []):
            try:
                text = describe()
            except Exception as exc:  # evidence must never hide the real failure
                text = f"(could not describe: {exc!r})"
            report.sections.append((title, text))


def test_failed(request: pytest.FixtureRequest) -> bool:
    """True if any phase of the requesting test reported a failure so far."""
    reports = request.node.stash.get(PHASE_REPORTS, {})
    return any(r.failed for r in reports.values())


test_failed.__test__ = False  # type: ignore[attr-defined]  # not a test, despite its name


def attach_on_failure(request: pytest.FixtureRequest, title: str, describe: Callable[[], str]) -> None:
    """Show `describe()` under `title` in the report if the test fails."""
    request.node.stash.setdefault(ATTACHMENTS, []).append((title, describe))


def artifact_dir(request: pytest.FixtureRequest) -> Path:
    """Where a failing test's kept files go: test-artifacts/<test id made filesystem-safe>/."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid).strip("_")
    return ARTIFACTS_DIR / safe[:150]


def tail(text: str, lines: int = 200) -> str:
    parts = text.splitlines()
    if len(parts) <= lines:
        return text
    return f"... ({len(parts) - lines} earlier lines)\n" + "\n".join(parts[-lines:])
