"""Benchmarks: scripts that print figures (run each as `python benchmarks/NAME.py`). A package so
that a script can import a sibling as benchmarks.NAME whatever else is on the path."""
