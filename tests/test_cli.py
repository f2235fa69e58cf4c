"""The command line's own job: arguments, and turning failures into one clear line and an exit code."""

from __future__ import annotations

import errno

import pytest

from asyncmig.cli import build_parser, failure_message, main
from asyncmig.errors import ConnectionFailed, StorageError, UsageError

KEY = "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw=="
CONNECTION = f"AccountEndpoint=https://localhost:1/;AccountKey={KEY};"


def test_a_full_disk_is_reported_as_a_local_file_problem() -> None:
    message, code = failure_message(OSError(errno.ENOSPC, "No space left on device", "/data/x.jsonl.gz"),
                                    verbose=False)
    assert code == StorageError.exit_code
    assert "writing a local file failed" in message and "/data/x.jsonl.gz" in message


@pytest.mark.parametrize("error", [ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"),
                                   ConnectionResetError(), TimeoutError("timed out")])
def test_a_network_error_is_not_blamed_on_a_local_file(error: OSError) -> None:
    message, code = failure_message(error, verbose=False)
    assert "local file" not in message
    assert code == ConnectionFailed.exit_code


def test_verbose_shows_the_cause_chain_redacted() -> None:
    try:
        try:
            raise ValueError(f"inner detail AccountKey={KEY}")
        except ValueError as inner:
            raise UsageError("outer") from inner
    except UsageError as exc:
        quiet, code = failure_message(exc, verbose=False)
        loud, _ = failure_message(exc, verbose=True)
    assert code == UsageError.exit_code
    assert quiet == "error: outer"
    assert loud.endswith("\nerror: outer") and "caused by: ValueError: inner detail" in loud  # error line last
    assert KEY not in loud


def test_verbose_flag_prints_the_cause_of_a_failed_command(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["copy", "db/a", "db/b", "--transform", "asyncmig_no_such_module:fn",
            "--source-connection", CONNECTION, "--target-connection", CONNECTION]
    assert main(["-v", *argv]) == UsageError.exit_code
    assert "caused by: ModuleNotFoundError" in capsys.readouterr().err
    assert main(argv) == UsageError.exit_code
    assert "caused by" not in capsys.readouterr().err


def test_every_command_parses_its_help() -> None:
    parser = build_parser()
    for command in ("copy", "run", "backup", "create-containers", "migrate", "validate", "rollback", "restore",
                    "seed-demo", "status"):
        with pytest.raises(SystemExit) as exited:
            parser.parse_args([command, "--help"])
        assert exited.value.code == 0
