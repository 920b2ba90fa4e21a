"""The results contract (analysis.records): the atomic writer, the one load-unit map and the
lab-alive check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import psutil
import pytest

from analysis.records.atomic import atomic_path, write_json_atomic, write_text_atomic
from analysis.records.layout import boot_id, lab_alive, lab_stamp
from analysis.records.run import LOAD_UNITS, load_unit


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    p = tmp_path / "run.json"
    write_json_atomic(p, {"a": 1})
    write_json_atomic(p, {"a": 2})
    assert json.loads(p.read_text()) == {"a": 2}
    assert [f.name for f in tmp_path.iterdir()] == ["run.json"]
    assert p.stat().st_mode & 0o777 == 0o666 & ~_umask()


def test_atomic_write_never_follows_a_symlink(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    p = tmp_path / "report.html"
    p.symlink_to(victim)  # a pre-placed symlink at the destination
    (tmp_path / "report.html.tmp").symlink_to(victim)  # and at the old fixed temp name
    write_text_atomic(p, "new")
    assert victim.read_text() == "keep me"
    assert not p.is_symlink() and p.read_text() == "new"


def test_atomic_path_removes_temp_on_error(tmp_path):
    p = tmp_path / "x.parquet"
    p.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(p) as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer failed")
    assert p.read_text() == "old" and [f.name for f in tmp_path.iterdir()] == ["x.parquet"]


def test_concurrent_writers_use_distinct_temp_names(tmp_path):
    p = tmp_path / "sweep.json"
    errors = []

    def write(i: int) -> None:
        try:
            for _ in range(20):
                write_json_atomic(p, {"writer": i})
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and json.loads(p.read_text())["writer"] in range(4)
    assert [f.name for f in tmp_path.iterdir()] == ["sweep.json"]


def test_one_load_unit_map():
    assert load_unit("concurrency") == "users" and load_unit("trace") == "x speed-up"
    assert load_unit("poisson") == load_unit(None) == "req/s"
    assert set(LOAD_UNITS.values()) == {"users", "x speed-up"}


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def test_lab_alive_through_pid_create_time_and_boot_id():
    me = lab_stamp()
    assert me["pid"] == os.getpid() and me["boot_id"] == boot_id() and lab_alive(me)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stamp = {"pid": child.pid, "boot_id": boot_id(), "create_time": psutil.Process(child.pid).create_time()}
        assert lab_alive(stamp)
        assert lab_alive({"pid": child.pid, "boot_id": boot_id()})  # written before create_time was kept
        assert not lab_alive({**stamp, "create_time": stamp["create_time"] - 3600})  # the pid was recycled
        assert not lab_alive({**stamp, "boot_id": "another-boot"})  # the machine rebooted since
        child.kill()
        child.wait()  # reaped: the pid is gone
        assert not lab_alive(stamp)
    finally:
        child.kill()
        child.wait()
    assert not lab_alive(None) and not lab_alive({"pid": 0}) and not lab_alive({"pid": 2**22 + 12345, "boot_id": ""})


def test_a_zombie_lab_is_not_alive():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 10
        while psutil.Process(child.pid).status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not lab_alive({"pid": child.pid, "boot_id": boot_id()})  # exited, not yet reaped
    finally:
        child.wait()
