"""The mutation suite's own contract (tests/mutation), without building anything: every anchor still matches exactly
once in today's core (a stale one must fail loudly, not pass), every mutant names the rule it breaks, the CI subset
keeps the bugs that once survived every test, and a mutant is planted and removed in the scratch copy only."""
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO))  # tests.mutation, as `python -m tests.mutation` imports it
from tests.mutation import mutants as suite  # noqa: E402
from tests.mutation import runner  # noqa: E402

# The seven realistic bugs that passed every test before the boundary tests (issue 18's table).
FORMER_SURVIVORS = {"legacy_backward_hinge_inclusive", "hardness_key_nan_easiest_double", "duplicate_test_inclusive",
                    "row_valid_threshold_inclusive", "hardnet_harder_tie_high", "swap_at_equal_value",
                    "forward_mean_counts_empty_rows"}


def test_every_anchor_matches_exactly_once():
    assert runner.stale_anchors(suite.MUTANTS) == []


def test_a_stale_anchor_is_an_error(tmp_path):
    (tmp_path / "core.hpp").write_text("return a < b;\nreturn a < b;\n")
    twice = suite.Mutant("twice", "core.hpp", "return a < b;", "return a <= b;", "rule")
    gone = suite.Mutant("gone", "core.hpp", "return a > b;", "return a >= b;", "rule")
    missing = suite.Mutant("missing", "nowhere.hpp", "x", "y", "rule")
    messages = runner.stale_anchors([twice, gone, missing], root=tmp_path)
    assert [m.split(":")[0] for m in messages] == ["twice", "gone", "missing"]
    assert "found 2 times" in messages[0] and "found 0 times" in messages[1] and "file missing" in messages[2]


def test_mutants_are_well_formed():
    ids = [m.id for m in suite.MUTANTS]
    assert len(ids) == len(set(ids)) and len(ids) >= 40
    for m in suite.MUTANTS:
        assert m.rule and m.anchor != m.replacement, m.id
        assert m.equivalent is None or len(m.equivalent) > 40, m.id  # an equivalent mutant says why
        assert set(m.kill_first) <= set(suite.TEST_FILES), m.id
    assert all((REPO / f).is_file() for f in suite.TEST_FILES)
    assert set(suite.DESELECTED) and all(n.split("::")[0] in suite.TEST_FILES for n in suite.DESELECTED)


def test_ci_subset_keeps_the_former_survivors_and_covers_both_losses():
    ci = {m.id for m in suite.MUTANTS if m.ci}
    assert FORMER_SURVIVORS <= ci
    assert {m.file for m in suite.MUTANTS if m.ci} == {m.file for m in suite.MUTANTS}


class FakeScratch:
    """Builds nothing; its tests fail while the mutant is in place (a kill) and records what the file held."""

    def __init__(self, path, kill=True):
        self.path, self.kill, self.seen = path, kill, []

    def build(self):
        return True, ""

    def test(self, files):
        self.seen.append((self.path / "core.hpp").read_text())
        return (False, "tests/test_x.py::test_y", "") if self.kill else (True, "", "")


@pytest.mark.parametrize("kill, equivalent, status", [(True, None, "killed"), (False, None, "SURVIVED"),
                                                      (False, "x" * 41, "equivalent"), (True, "x" * 41, "ERROR")])
def test_run_mutant_plants_then_restores(tmp_path, kill, equivalent, status):
    (tmp_path / "core.hpp").write_text("int f() { return a < b; }\n")
    scratch = FakeScratch(tmp_path, kill)
    m = suite.Mutant("m", "core.hpp", "a < b", "a <= b", "rule", equivalent=equivalent)
    outcome = runner.run_mutant(scratch, m, "int f() { return a < b; }\n")
    assert outcome.status == status
    assert scratch.seen[0] == "int f() { return a <= b; }\n"
    assert (tmp_path / "core.hpp").read_text() == "int f() { return a < b; }\n"
    if status == "killed":
        assert outcome.detail == "tests/test_x.py::test_y"


def test_cli_lists_and_checks_anchors():
    listed = subprocess.run([sys.executable, "-m", "tests.mutation", "--list"], cwd=REPO, capture_output=True,
                            text=True)
    assert listed.returncode == 0 and f"{len(suite.MUTANTS)} mutants" in listed.stdout
    checked = subprocess.run([sys.executable, "-m", "tests.mutation", "--check-anchors", "--subset", "ci"], cwd=REPO,
                             capture_output=True, text=True)
    assert checked.returncode == 0 and "anchors match exactly once" in checked.stdout
