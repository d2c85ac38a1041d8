"""The suite's gate (tests/conftest.py): `.ci/run` fails when no test passed."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST.read_text(encoding="utf-8"))
    return pytester


def test_only_skipped_tests_fail_the_run(suite: pytest.Pytester) -> None:
    suite.makepyfile(
        test_s="""
        import pytest

        @pytest.mark.skip(reason="x")
        def test_a():
            pass

        def test_b():
            pytest.skip("not here")
        """
    )
    result = suite.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*error: no test passed*"])


def test_all_deselected_or_xfailed_fails_the_run(suite: pytest.Pytester) -> None:
    suite.makepyfile(
        test_s="""
        import pytest

        def test_a():
            pass

        @pytest.mark.xfail(reason="known")
        def test_b():
            assert False
        """
    )
    assert suite.runpytest_subprocess("-k", "test_b").ret == pytest.ExitCode.NO_TESTS_COLLECTED


def test_one_passed_test_keeps_the_run_green(suite: pytest.Pytester) -> None:
    suite.makepyfile(
        test_s="""
        import pytest

        def test_a():
            pass

        @pytest.mark.skip(reason="x")
        def test_b():
            pass
        """
    )
    result = suite.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1, skipped=1)


def test_failures_and_collect_only_keep_their_status(suite: pytest.Pytester) -> None:
    suite.makepyfile(test_s="def test_a():\n    assert False\n")
    assert suite.runpytest_subprocess().ret == pytest.ExitCode.TESTS_FAILED
    assert suite.runpytest_subprocess("--collect-only").ret == pytest.ExitCode.OK
