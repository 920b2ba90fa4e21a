"""conf/hydra/launcher/{slurm,local_submitit}.yaml: they compose, their GPU request follows the
selected gpu config, and the SLURM one turns into the sbatch script we mean (no cluster needed:
submitit's real code renders it, with a stand-in `srun` on PATH and the submission intercepted)."""

from __future__ import annotations

import os
import stat

import pytest
from omegaconf import OmegaConf

from tests.conftest import ROOT

SLURM = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
LOCAL = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"


def compose_hydra(overrides: list[str]):
    """The real conf/ tree with Hydra's own node (hydra.launcher ...) included."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from experiments.schema import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


def launcher(cfg) -> dict:
    """hydra.launcher resolved as the plugin resolves it (interpolations against the whole config)."""
    return OmegaConf.to_container(cfg.hydra.launcher, resolve=True)


def gpu_count(name: str) -> int:
    return int(OmegaConf.load(ROOT / "conf" / "gpu" / f"{name}.yaml").count)


@pytest.mark.parametrize("gpu", ["h100_sxm_80g", "a100_80g", "cpu"])
def test_slurm_asks_for_the_gpu_configs_count(gpu):
    cfg = compose_hydra(["hydra/launcher=slurm", f"gpu={gpu}"])
    lc = launcher(cfg)
    assert lc["_target_"] == SLURM
    assert lc["gpus_per_node"] == gpu_count(gpu) == cfg.gpu.count
    assert lc["tasks_per_node"] == 1 and lc["nodes"] == 1
    assert lc["partition"] is None  # the user's to set
    assert lc["array_parallelism"] == 4 and lc["additional_parameters"] == {"exclusive": True}
    assert lc["timeout_min"] >= 60 and lc["cpus_per_task"] and lc["mem_gb"]


def test_slurm_follows_a_gpu_count_override_and_can_share_nodes():
    lc = launcher(compose_hydra(["hydra/launcher=slurm", "gpu=h100_sxm_80g", "gpu.count=8",
                                 "hydra.launcher.partition=gpu", "~hydra.launcher.additional_parameters.exclusive"]))  # fmt: skip
    assert lc["gpus_per_node"] == 8 and lc["partition"] == "gpu" and lc["additional_parameters"] == {}


@pytest.mark.parametrize("gpu", ["h200_141g", "cpu"])
def test_local_submitit(gpu):
    cfg = compose_hydra(["hydra/launcher=local_submitit", f"gpu={gpu}"])
    lc = launcher(cfg)
    assert lc["_target_"] == LOCAL
    assert lc["gpus_per_node"] == gpu_count(gpu) == cfg.gpu.count
    assert lc["tasks_per_node"] == 1 and lc["nodes"] == 1


def test_default_launcher_is_still_the_basic_one():
    assert compose_hydra([]).hydra.launcher._target_.endswith("BasicLauncher")


class _Submitted(Exception):
    pass


def _task(cfg):  # the task function the launcher pickles (never run here)
    return 0


def test_slurm_renders_the_sbatch_script(tmp_path, monkeypatch):
    """Through the plugin's own launch(): parameters renamed as it does, checked by submitit, one
    job array for the sweep; only sbatch itself is replaced."""
    import submitit.slurm.slurm as ss
    from hydra.utils import instantiate

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    srun = bin_dir / "srun"  # submitit only checks that srun exists before it builds the script
    srun.write_text("#!/bin/sh\nexit 1\n")
    srun.chmod(srun.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    scripts: list[str] = []

    def submit(self, command):
        scripts.append(self._make_submission_file_text(command, "uid"))
        raise _Submitted

    monkeypatch.setattr(ss.SlurmExecutor, "_submit_command", submit)
    cfg = compose_hydra(["hydra/launcher=slurm", "gpu=h100_sxm_80g", "hydra.launcher.partition=gpu",
                         f"hydra.sweep.dir={tmp_path / 'sweep'}"])  # fmt: skip
    la = instantiate(cfg.hydra.launcher)
    la.setup(hydra_context=None, task_function=_task, config=cfg)
    with pytest.raises(_Submitted):
        la.launch([["engine=vllm"], ["engine=sglang"], ["engine=tgi"]], initial_job_idx=0)
    (script,) = scripts
    flags = {line for line in script.splitlines() if line.startswith("#SBATCH")}
    expected = {"#SBATCH --gpus-per-node=1", "#SBATCH --ntasks-per-node=1", "#SBATCH --nodes=1",
                "#SBATCH --cpus-per-task=16", "#SBATCH --mem=64GB", "#SBATCH --time=120",
                "#SBATCH --partition=gpu", "#SBATCH --exclusive", "#SBATCH --array=0-2%3",
                "#SBATCH --job-name=servelab"}  # fmt: skip
    assert expected <= flags, sorted(flags)
    assert (tmp_path / "sweep" / ".submitit").is_dir()
