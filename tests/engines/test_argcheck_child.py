"""engines.argcheck's parse child is a supervised child like every other (engines.process): a parser
that hangs is stopped with its whole process group at the timeout, an answer is read from its
output, a child that dies without one is reported with its last line, and nothing of the request
is left on disk. A shell script stands in for the engine's interpreter (no engine needed)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from engines.argcheck import ParserUnavailable, parse_with_engine
from engines.parse_argv import RESULT_MARK


def _fake_python(tmp_path: Path, body: str) -> str:
    exe = tmp_path / "python"
    exe.write_text("#!/bin/sh\n" + body)
    exe.chmod(0o755)
    return str(exe)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill 0; it has exited all the same
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


def test_a_hanging_parser_is_stopped_with_its_whole_group_at_the_timeout(tmp_path):
    pidfile = tmp_path / "grandchild.pid"
    py = _fake_python(tmp_path, f"sleep 300 &\necho $! > {pidfile}\nwait\n")
    t0 = time.monotonic()
    with pytest.raises(ParserUnavailable, match="gave no answer in 1 s"):
        parse_with_engine(py, "vllm", [["--model", "m"]], timeout_s=1.0)
    assert time.monotonic() - t0 < 15
    grandchild = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild), "the parser's own child outlived it"


def test_the_answer_is_read_from_the_childs_output_and_its_request_is_not_left_behind(tmp_path):
    seen = tmp_path / "request-path"
    answer = {"engine": "vllm", "version": "0.0-test", "parser": "p", "results": [{"ok": False,
              "error": "unrecognized arguments: --max-num-seqz 4", "values": {}}]}  # fmt: skip
    # the request arrives as a file (the supervisor gives children /dev/null as stdin)
    py = _fake_python(tmp_path, f'[ "$2" = --request ] && echo "$3" > {seen} && grep -q max-num-seqz "$3"\n'
                                f"echo 'INFO engine noise'\necho '{RESULT_MARK}{json.dumps(answer)}'\n")  # fmt: skip
    got = parse_with_engine(py, "vllm", [["--max-num-seqz", "4"]], timeout_s=30)
    assert got.version == "0.0-test" and got.results[0].error == answer["results"][0]["error"]
    assert not Path(seen.read_text().strip()).exists()  # the private folder is gone


def test_a_child_that_dies_without_an_answer_is_reported_with_its_last_line(tmp_path):
    py = _fake_python(tmp_path, "echo 'ImportError: no module named vllm' >&2\nexit 3\n")
    with pytest.raises(ParserUnavailable, match=r"exited 3 without an answer: ImportError: no module named vllm"):
        parse_with_engine(py, "vllm", [["--model", "m"]], timeout_s=30)
