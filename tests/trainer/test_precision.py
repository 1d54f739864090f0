"""trainer-fit --precision fp32|bf16|fp16: the machine check, the old --mixed-precision, and bf16 runs.

The machine check takes the CPU flags and GPUs as arguments, so both of its branches are tested
on any machine; the bf16 training test needs a CPU with bf16 units (or a GPU of compute
capability 8.0+) and trains a few steps on a few hundred real faces.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest

import trainer.train
from runtime.cli_support import UserError
from tests.conftest import assert_user_error, run_cli
from trainer.config import ConfigError, FitConfig, config_problem, cpu_flags, precision_problem
from trainer.fit import _config_from_args, _parser, main
from trainer.run_files import RunError, read_config

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu vme sse2 avx2 avx512f {extra}
bugs\t\t: spectre_v1 spectre_v2

processor\t: 1
vendor_id\t: GenuineIntel
flags\t\t: fpu vme sse2 avx2 avx512f {extra}
"""
NO_BF16 = "this CPU has no bf16 units (amx_bf16/avx512_bf16)"


def test_cpu_flags_reads_every_flags_line(tmp_path: Path) -> None:
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO.format(extra="amx_bf16 amx_tile"))
    flags = cpu_flags(path)
    assert {"fpu", "avx2", "avx512f", "amx_bf16", "amx_tile"} <= flags
    assert not flags & {"GenuineIntel", "spectre_v1", "0", "Platinum"}  # only the flags lines
    assert cpu_flags(tmp_path / "missing") is None  # not Linux: unknown, not "no flags"


@pytest.mark.parametrize(
    ("precision", "flags", "gpus", "needle"),
    [
        ("fp32", frozenset(), [], None),
        ("fp32", None, [(6, 1)], None),
        ("bf16", frozenset({"avx512f", "amx_bf16"}), [], None),
        ("bf16", frozenset({"avx512f", "avx512_bf16"}), [], None),
        ("bf16", frozenset({"avx512f", "amx_int8", "avx512_fp16"}), [], NO_BF16),
        ("bf16", None, [], "cannot tell whether this CPU has bf16 units"),
        ("bf16", frozenset(), [(8, 0)], None),  # a GPU does the work: the CPU's units do not matter
        ("bf16", frozenset({"amx_bf16"}), [(7, 5)], "compute capability 8.0 or later, and GPU 0 is 7.5"),
        ("bf16", frozenset({"amx_bf16"}), [(9, 0), (7, 0)], "GPU 1 is 7.0"),
        ("bf16", frozenset({"amx_bf16"}), [None], "GPU 0 is unknown"),
        ("fp16", frozenset({"amx_bf16", "avx512_fp16"}), [], "fp16 needs a GPU, and this machine has none"),
        ("fp16", frozenset(), [(6, 1)], None),
    ],
    ids=["fp32-cpu", "fp32-old-gpu", "bf16-amx", "bf16-avx512", "bf16-cpu-without", "bf16-cpu-unknown",
         "bf16-ampere", "bf16-turing", "bf16-mixed-gpus", "bf16-gpu-unknown", "fp16-cpu", "fp16-gpu"],
)
def test_precision_problem_names_what_is_missing(
    precision: str, flags: frozenset[str] | None, gpus: list, needle: str | None
) -> None:
    problem = precision_problem(precision, flags, gpus)
    if needle is None:
        assert problem is None
    else:
        assert problem is not None and needle in problem


def _write_config(out: Path, **settings: object) -> None:
    out.mkdir(parents=True, exist_ok=True)
    saved = {**dataclasses.asdict(FitConfig(data="../shared/fer2013")), "labels": ["angry"], **settings}
    for key in [k for k, v in settings.items() if v is None]:
        del saved[key]
    (out / "config.json").write_text(json.dumps(saved))


@pytest.mark.parametrize(("mixed", "precision"), [(True, "fp16"), (False, "fp32")])
def test_config_json_from_before_precision_still_resumes(tmp_path: Path, mixed: bool, precision: str) -> None:
    _write_config(tmp_path, precision=None, mixed_precision=mixed)  # an older run: no "precision" key
    assert "precision" not in json.loads((tmp_path / "config.json").read_text())
    cfg = read_config(tmp_path)
    assert (cfg.precision, cfg.mixed_precision) == (precision, mixed)
    assert config_problem(cfg) is None


def test_contradicting_precision_settings_are_a_damaged_config(tmp_path: Path) -> None:
    assert config_problem(FitConfig(precision="bf16", mixed_precision=True)) == (
        "mixed_precision is true but precision is bf16"
    )
    assert FitConfig(precision="fp16").mixed_precision is True  # set in Python: kept in step
    _write_config(tmp_path, precision="bf16", mixed_precision=True)
    with pytest.raises(RunError, match="config.json is damaged .mixed_precision is true but precision is bf16"):
        read_config(tmp_path)
    _write_config(tmp_path, precision="fp8")
    with pytest.raises(RunError, match="precision is 'fp8', not one of fp32, bf16, fp16"):
        read_config(tmp_path)


@pytest.mark.parametrize(
    ("flags", "precision"),
    [([], "fp32"), (["--precision", "bf16"], "bf16"), (["--mixed-precision"], "fp16"),
     (["--mixed-precision", "--precision", "fp16"], "fp16"), (["--precision", "fp32"], "fp32")],
)
def test_flags_set_the_precision(tmp_path: Path, flags: list[str], precision: str) -> None:
    args = _parser().parse_args(["--data", "fer", "--out", str(tmp_path / "run"), *flags])
    cfg = _config_from_args(args)
    assert (cfg.precision, cfg.mixed_precision) == (precision, precision == "fp16")


def test_mixed_precision_with_another_precision_is_one_line(tmp_path: Path) -> None:
    proc = run_cli("trainer", "--data", "fer", "--out", str(tmp_path / "run"), "--mixed-precision",
                   "--precision", "bf16")
    assert_user_error(proc, 2, "--mixed-precision means --precision fp16, not bf16")
    assert not (tmp_path / "run").exists()


def _machine(monkeypatch: pytest.MonkeyPatch, flags: frozenset[str] | None, gpus: list) -> None:
    """Make trainer-fit see a machine with these CPU flags and GPUs (no TensorFlow import)."""
    monkeypatch.setattr(trainer.train, "cpu_flags", lambda: flags)
    monkeypatch.setattr(trainer.train, "gpu_capabilities", lambda: gpus)


def test_bf16_on_a_cpu_without_bf16_units_is_refused_before_any_work(
    monkeypatch: pytest.MonkeyPatch, fer_dir: Path, tmp_path: Path
) -> None:
    _machine(monkeypatch, frozenset({"avx2", "avx512f"}), [])
    out = tmp_path / "run"
    with pytest.raises(UserError) as exc:
        main(["--data", str(fer_dir), "--out", str(out), "--precision", "bf16"])
    assert str(exc.value) == f"--precision bf16: {NO_BF16}; use --precision fp32"
    assert exc.value.exit_code == 2 and not out.exists()
    with pytest.raises(ConfigError, match=f"^{re.escape(NO_BF16)}: train in fp32 instead$"):  # the library too
        trainer.train.fit(FitConfig(data=str(fer_dir), out=str(out), precision="bf16"))
    assert not out.exists()

    _write_config(out, precision="bf16")  # a bf16 run moved to this machine
    with pytest.raises(UserError, match="this run trains in bf16, but this CPU has no bf16 units .* --precision fp32"):
        main(["--out", str(out), "--resume"])

    _machine(monkeypatch, frozenset({"avx2"}), [(8, 6)])  # the same CPU beside an Ampere GPU: allowed
    assert trainer.train.machine_precision_problem("bf16") is None
    _machine(monkeypatch, frozenset({"amx_bf16"}), [(7, 5)])  # a bf16 CPU beside a Turing GPU: the GPU trains
    assert "GPU 0 is 7.5" in trainer.train.machine_precision_problem("bf16")


@pytest.mark.tf
@pytest.mark.parametrize("flags", [["--precision", "fp16"], ["--mixed-precision"]], ids=["precision", "alias"])
def test_fp16_without_a_gpu_is_one_line_exit_2(fer_dir: Path, tmp_path: Path, flags: list[str]) -> None:
    pytest.importorskip("tensorflow")
    if trainer.train.gpu_capabilities():
        pytest.skip("this machine has a GPU: fp16 is allowed")
    proc = run_cli("trainer", "--data", str(fer_dir), "--out", str(tmp_path / "run"), *flags)
    assert_user_error(proc, 2, "--precision fp16: fp16 needs a GPU, and this machine has none", "use --precision fp32")
    assert not (tmp_path / "run").exists()


@pytest.fixture
def bf16_machine() -> None:
    """Skip unless this machine trains bf16 faster than fp32 (bf16 CPU units or a GPU of capability 8.0+)."""
    pytest.importorskip("tensorflow")
    problem = trainer.train.machine_precision_problem("bf16")
    if problem:
        pytest.skip(problem)


@pytest.mark.tf
def test_input_pipeline_is_float32_and_the_same_under_bf16(fer_dir: Path) -> None:
    import keras

    from trainer.data import load_split
    from trainer.train import make_dataset

    faces = load_split(fer_dir, "train", 6, 3)  # 6 real faces per class
    cfg = FitConfig(mixup=0.4, batch_size=len(faces.y), seed=5)  # every augmentation, and mixup

    def first_batch(policy: str) -> np.ndarray:
        keras.mixed_precision.set_global_policy(policy)
        keras.utils.set_random_seed(cfg.seed)
        (x, _), = make_dataset(faces.x, faces.y, 7, cfg, training=True).take(1)
        assert x.dtype == "float32", policy
        return x.numpy()

    try:
        np.testing.assert_array_equal(first_batch("mixed_bfloat16"), first_batch("float32"))
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.tf
@pytest.mark.slow
def test_bf16_run_saves_float32_models_that_export_and_verify(
    bf16_machine: None, fer_dir: Path, tmp_path: Path
) -> None:
    import keras
    import onnx

    from export.config import ExportConfig
    from export.inference import in_batches, ort_session, session_predict
    from export.onnx_export import export
    from trainer.data import load_split
    from trainer.model import load_model

    out = tmp_path / "run"
    cfg = FitConfig(data=str(fer_dir), out=str(out), epochs=1, batch_size=32, limit_per_class=40,
                    precision="bf16", test_eval=False)  # 280 real faces, 8 steps
    report = trainer.train.fit(cfg)
    assert keras.mixed_precision.global_policy().name == "float32"  # the process-wide policy is restored
    assert json.loads((out / "config.json").read_text())["precision"] == "bf16"
    assert report["compute_precision"] == "bf16"
    assert json.loads((out / "metrics.json").read_text())["compute_precision"] == "bf16"

    def policies(path: Path) -> dict[str, str]:
        return {layer.name: layer.dtype_policy.name for layer in load_model(path).layers}

    trained = policies(out / "checkpoints" / "last.keras")  # the checkpoint keeps bf16 compute, for --resume
    assert trained.pop("probs") == "float32" and set(trained.values()) == {"mixed_bfloat16"}
    for name in ("best.keras", "final.keras"):
        assert set(policies(out / name).values()) == {"float32"}, name

    onnx_path = tmp_path / "bf16.onnx"
    exported = export(ExportConfig(model=out / "best.keras", output=onnx_path, verify_dir=fer_dir / "train",
                                   verify_count=140))
    assert exported["fp32"]["max_abs_diff"] <= 1e-4 and exported["fp32"]["argmax_agreement"] == 1.0
    proto = onnx.load(onnx_path)
    float32 = onnx.TensorProto.FLOAT
    assert proto.graph.input[0].type.tensor_type.elem_type == float32
    assert proto.graph.output[0].type.tensor_type.elem_type == float32
    assert onnx.TensorProto.BFLOAT16 not in {t.data_type for t in proto.graph.initializer}
    assert json.loads(dict((p.key, p.value) for p in proto.metadata_props)["training_config"])["precision"] == "bf16"

    faces = load_split(fer_dir, "train", 20, 11)  # 140 real faces
    x = faces.x.astype(np.float32)
    onnx_probs = in_batches(session_predict(ort_session(str(onnx_path))), x)
    assert onnx_probs.dtype == np.float32
    np.testing.assert_allclose(onnx_probs, load_model(out / "best.keras").predict(x, verbose=0), atol=1e-5)
    bf16_probs = load_model(out / "checkpoints" / "last.keras").predict(x, verbose=0)  # the network as trained
    assert bf16_probs.dtype == np.float32
    np.testing.assert_allclose(onnx_probs, bf16_probs, atol=0.02)  # bf16 rounding, no more

    # a resumed bf16 run goes on in bf16 (the epoch count is raised by hand to have an epoch to resume)
    saved = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**saved, "epochs": 2}))
    proc = run_cli("trainer", "--out", str(out), "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming at epoch 2/2" in proc.stderr and "precision bf16 (Keras policy mixed_bfloat16)" in proc.stderr
    assert set(policies(out / "checkpoints" / "last.keras").values()) == {"mixed_bfloat16", "float32"}
    assert set(policies(out / "final.keras").values()) == {"float32"}
