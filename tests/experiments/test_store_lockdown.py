"""`experiments.store query` is read-only SQL over the results folder and nothing else (issue 25,
finding 6): no file outside the folder, no writes, no attached database, no extension, and the
lock cannot be lifted from SQL."""

from __future__ import annotations

import pytest

from experiments.store_views import StoreError, open_store, query


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "results"
    r.mkdir()
    (r / "inside.csv").write_text("a\n1\n")
    (tmp_path / "outside.csv").write_text("secret\n42\n")
    return r


@pytest.mark.parametrize("sql", [
    "SELECT * FROM read_csv('{outside}')",
    "SELECT * FROM read_csv('{root}/../outside.csv')",
    "SELECT * FROM read_text('/etc/hostname')",
    "COPY (SELECT 1) TO '{root}/written.csv'",
    "COPY (SELECT 1) TO '{outside_dir}/written.csv'",
    "ATTACH '{outside_dir}/x.duckdb' AS x",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET enable_external_access = true",
    "SET lock_configuration = false",
    "CREATE TABLE t AS SELECT 1",
    "SELECT 1; COPY (SELECT 1) TO '{root}/w.csv'",
    "PRAGMA enable_profiling",
])  # fmt: skip
def test_query_refuses_what_is_not_reading_the_results(root, sql):
    text = sql.format(root=root, outside=root.parent / "outside.csv", outside_dir=root.parent)
    with pytest.raises(StoreError):
        query(root, text)
    assert not list(root.parent.rglob("written.csv")) and not list(root.rglob("w.csv"))


def test_the_lock_holds_on_the_connection_itself(root):
    """compare and other code use open_store's connection directly: the lock is on it, not only in query."""
    con = open_store(root)
    try:
        with pytest.raises(Exception, match="disabled by configuration"):
            con.execute(f"SELECT * FROM read_csv('{root.parent / 'outside.csv'}')").fetchall()
        with pytest.raises(Exception, match="locked"):
            con.execute("SET enable_external_access = true")
        assert con.execute("SELECT current_setting('autoinstall_known_extensions')").fetchone() == (False,)
        assert con.execute("SELECT current_setting('autoload_known_extensions')").fetchone() == (False,)
    finally:
        con.close()


def test_reading_inside_the_results_folder_still_works(root):
    assert query(root, f"SELECT a FROM read_csv('{root / 'inside.csv'}')")["a"].tolist() == [1]
    assert query(root, "SELECT count(*) AS n FROM runs")["n"].tolist() == [0]
    assert not query(root, "EXPLAIN SELECT * FROM runs").empty
    assert "name" in query(root, "DESCRIBE runs").columns or not query(root, "DESCRIBE runs").empty
