"""The load-generator process's roles, run by ``python -m loadgen.locust_runner``.

- :mod:`.common`: the one state object of the process (:class:`~.common.LoadGen`), the record
  sink, the loop-lag monitor and the Locust users that send and time the requests;
- :mod:`.local`: one process drives the whole load point;
- :mod:`.master`: distributed, hands the spec to workers, keeps their clocks, merges records;
- :mod:`.worker`: distributed, runs its share and streams records to the master.

Importing any of them imports Locust, which monkey-patches the stdlib with gevent: only the
generator process may import this package, never the lab.
"""
