"""servelab's Hydra sweeper plugin (experiments/sweeps/plan.py holds the logic). Discovered by Hydra
through the `hydra_plugins` namespace package; selected in conf/config.yaml (hydra/sweeper: servelab)."""
