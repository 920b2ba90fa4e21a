"""The results contract: what a run leaves on disk and how every reader finds and reads it.

The lowest floor of the lab. The runner (experiments/) writes through it; the decision, the
report and the store (analysis/, experiments.store) read through it. It imports no other
project module, so both sides can depend on it without a circle (the layers are checked by
`lint-imports`, configured in pyproject.toml).

- :mod:`analysis.records.run`       run.json (schema v2): its dataclasses, the reader and the v1 upgrade,
                                    the one load-unit map.
- :mod:`analysis.records.identity`  the identity hashes (run_id, variant_id, point_id; docs/identity.md).
- :mod:`analysis.records.layout`    the folder layout: variant folders, launch-<n>/, points/, finding
                                    run folders and request files, whether a run's lab still lives.
- :mod:`analysis.records.atomic`    the one atomic writer (unique temp name, fsync, rename).
- :mod:`analysis.records.plain`     dataclass trees and numpy/pandas values as plain JSON.

Side effects: importing it has none.
"""
