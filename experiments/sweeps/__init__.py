"""Sweeps: many variants, each one engine launch, measured and decided together.

- :mod:`experiments.sweeps.plan`      the job plan of the servelab sweeper (one Hydra job per variant,
                                      point sweeps folded in) and a job's position in its sweep;
- :mod:`experiments.sweeps.resume`    what earlier launches of a variant measured (resume, stale runs, the lock);
- :mod:`experiments.sweeps.schedule`  which points a launch measures next (grid or knee search);
- :mod:`experiments.sweeps.search`    the knee search and its config group (conf/search/);
- :mod:`experiments.sweeps.callback`  the end of a sweep: status table, variant.json, decision and report.

Side effects: importing it has none.
"""
