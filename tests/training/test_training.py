import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from geodl.errors import UserInputError
from geodl.training import (
    CheckpointMismatch,
    PhaseSection,
    TaskModule,
    TrainingDiverged,
    TrainSection,
    average_state_dicts,
    fit,
    fit_phases,
    load_checkpoint,
)
from geodl.training.spec import check_hardware

SCRIPT = Path(__file__).with_name("train_script.py")
sys.path.insert(0, str(SCRIPT.parent))
import train_script  # noqa: E402

SPEC = dict(progress_bar=False, accelerator="cpu", lr=1e-2, batch_size=16)


def _script(out, *args, env=None):
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(out), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    proc = _script(out)
    assert proc.returncode == 0, proc.stderr
    return out, json.loads((out / "result.json").read_text())


def test_sigkill_in_epoch_2_resumes_from_last_checkpoint(reference_run, tmp_path):
    _, reference = reference_run
    marker = tmp_path / "paused"
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(tmp_path), "--pause-at", "1:2", "--marker", str(marker)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 120
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() < deadline, "training never reached epoch 2"
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpt = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert ckpt["epoch"] == 0  # epoch 1 (index 0) finished, epoch 2 was interrupted
    again = _script(tmp_path)
    assert again.returncode == 0, again.stderr
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["resumed"] and result["epochs"] == reference["epochs"]
    # the learning curve spans the interruption: epoch 0 before, epochs 1-3 after
    from geodl.report import read_learning_curves

    assert [e for e, _ in read_learning_curves(tmp_path / "logs")["val/loss"]] == [0, 1, 2, 3]
    assert result["val_loss"] == pytest.approx(reference["val_loss"], rel=1e-5)
    assert result["pred_sum"] == pytest.approx(reference["pred_sum"], rel=1e-5)


def test_checkpoint_reloads_in_fresh_process_exactly(reference_run):
    out, reference = reference_run
    code = (
        "import sys, torch; sys.path.insert(0, {!r});"
        "import train_script as t;"
        "from geodl.training import load_checkpoint, load_model_weights;"
        "ck = load_checkpoint({!r}, expected_config={{'demo': 1}});"
        "m = load_model_weights(t.make_model(), ck).eval();"
        "x = t.make_data(8, seed=9).tensors[0];"
        "print(repr(float(m(x).double().sum())))"
    ).format(str(SCRIPT.parent), str(out / "ckpt" / "last.ckpt"))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert float(proc.stdout.strip()) == reference["pred_sum"]


@pytest.mark.slow
def test_ddp_two_processes_matches_one_process(reference_run, tmp_path):
    _, reference = reference_run
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            str(torchrun),
            "--nproc_per_node=2",
            "--master_port=29517",
            str(SCRIPT),
            str(tmp_path),
            "--batch",
            "8",  # 2 ranks x 8 = the single process's 16
            "--strategy",
            "ddp",
            "--devices",
            "2",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["world_size"] == 2
    assert result["val_loss"] == pytest.approx(reference["val_loss"], rel=1e-4)
    assert result["pred_sum"] == pytest.approx(reference["pred_sum"], rel=1e-4)


def test_checkpoint_from_other_config_names_keys(reference_run):
    out, _ = reference_run
    with pytest.raises(CheckpointMismatch, match="differing keys: demo, extra"):
        load_checkpoint(out / "ckpt" / "last.ckpt", expected_config={"demo": 2, "extra": 1})


def test_checkpoint_from_other_major_version(reference_run, tmp_path):
    out, _ = reference_run
    ckpt = torch.load(out / "ckpt" / "last.ckpt", weights_only=True)
    ckpt["geodl"]["version"] = "99.0.0"
    torch.save(ckpt, tmp_path / "old.ckpt")
    with pytest.raises(CheckpointMismatch, match="written by geodl 99.0.0"):
        load_checkpoint(tmp_path / "old.ckpt")


@pytest.mark.parametrize(
    "ckpt",
    [
        {"state_dict": {}, "geodl": {"config": {"demo": 1}}},  # a geodl entry without version
        {"state_dict": {}},  # no geodl entry (e.g. a plain Lightning checkpoint)
        {"state_dict": {}, "geodl": {"version": None}},
    ],
    ids=["no-version", "no-geodl-entry", "null-version"],
)
def test_checkpoint_without_geodl_version_is_refused(tmp_path, ckpt):
    # geodl's major version may be 0: a missing version must not be read as "0" and pass.
    path = tmp_path / "foreign.ckpt"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointMismatch, match="not written by geodl") as err:
        load_checkpoint(path)
    message = str(err.value)
    assert "\n" not in message and f"'{path}'" in message and "no geodl version" in message


def test_corrupted_checkpoint(tmp_path):
    path = tmp_path / "bad.ckpt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(UserInputError, match="cannot be loaded safely"):
        load_checkpoint(path)


def test_gpu_request_without_gpu_is_one_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the no-GPU error cannot happen here")
    with pytest.raises(UserInputError, match="no CUDA GPU is visible"):
        check_hardware(TrainSection(accelerator="gpu"))
    with pytest.raises(UserInputError, match="'16-mixed' needs a GPU"):
        check_hardware(TrainSection(precision="16-mixed", accelerator="cpu"))


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path):
    calls = {"n": 0}

    def loss_fn(model, batch):
        x, y = batch
        calls["n"] += 1
        loss = ((model(x) - y) ** 2).mean()
        return {"loss": loss * float("nan") if calls["n"] > 8 else loss}

    spec = TrainSection(max_epochs=5, **SPEC)
    module = TaskModule(
        train_script.make_model(),
        loss_fn,
        spec,
        describe_batch=lambda b: f"batch of {len(b[0])}",
    )
    data = train_script.make_data(64)  # 4 batches an epoch: NaN in epoch 3
    with pytest.raises(TrainingDiverged, match=r"at step 8 \(epoch 2, batch of 16\)"):
        fit(module, data, None, spec, ckpt_dir=tmp_path / "c", log_dir=tmp_path / "l", key="k")
    ckpt = load_checkpoint(tmp_path / "c" / "last.ckpt")
    assert ckpt["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())


def test_stale_checkpoints_of_another_key_are_not_resumed(tmp_path):
    spec = TrainSection(max_epochs=1, **SPEC)
    data = train_script.make_data(32)

    def run(key):
        module = TaskModule(train_script.make_model(), train_script.loss_fn, spec)
        return fit(
            module, data, None, spec, key=key, ckpt_dir=tmp_path / "c", log_dir=tmp_path / "l"
        )

    assert run("a").resumed_from is None
    assert run("a").resumed_from is not None
    assert run("b").resumed_from is None


def test_average_last_and_state_dict_average(tmp_path):
    a = {"w": torch.tensor([1.0, 3.0]), "n": torch.tensor(1)}
    b = {"w": torch.tensor([3.0, 5.0]), "n": torch.tensor(2)}
    avg = average_state_dicts([a, b])
    assert torch.equal(avg["w"], torch.tensor([2.0, 4.0])) and int(avg["n"]) == 2
    spec = TrainSection(max_epochs=3, average_last=2, **SPEC)
    module = TaskModule(train_script.make_model(), train_script.loss_fn, spec)
    result = fit(
        module,
        train_script.make_data(32),
        None,
        spec,
        ckpt_dir=tmp_path / "c",
        log_dir=tmp_path / "l",
        key="k",
    )
    ckpt = load_checkpoint(result.averaged_path)  # stamped with the version like any other
    assert ckpt["geodl"]["averaged"] == 2
    epochs = sorted((tmp_path / "c" / "epochs").glob("*.ckpt"))
    states = [torch.load(p, weights_only=True)["state_dict"] for p in epochs]
    key = "model.0.weight"
    assert torch.allclose(ckpt["state_dict"][key], (states[0][key] + states[1][key]) / 2)
    assert (tmp_path / "l" / "metrics.csv").exists()
    assert any((tmp_path / "l" / "tensorboard").glob("events.out.tfevents.*"))


def test_phases_freeze_and_bad_prefix(tmp_path):
    spec = TrainSection(
        max_epochs=1,
        phases=[
            PhaseSection(name="first", max_epochs=1, trainable=["0."]),
            PhaseSection(name="second", max_epochs=1, lr=1e-3),
        ],
        **SPEC,
    )
    model = train_script.make_model()
    frozen_before = model[2].weight.detach().clone()
    seen = {}

    def loss_fn(m, batch):
        seen.setdefault("phase1", m[2].weight.requires_grad)
        return train_script.loss_fn(m, batch)

    module = TaskModule(model, loss_fn, spec)
    results = fit_phases(
        module,
        train_script.make_data(32),
        None,
        spec,
        ckpt_dir=tmp_path / "c",
        log_dir=tmp_path / "l",
        key="k",
    )
    assert len(results) == 2 and seen["phase1"] is False
    first = torch.load(tmp_path / "c" / "first" / "last.ckpt", weights_only=True)
    assert torch.equal(first["state_dict"]["model.2.weight"], frozen_before)
    assert not torch.equal(model[2].weight, frozen_before)  # trained in phase 2
    bad = TrainSection(
        max_epochs=1, phases=[PhaseSection(name="x", max_epochs=1, trainable=["enc"])], **SPEC
    )
    with pytest.raises(UserInputError, match="match no parameter"):
        fit_phases(
            TaskModule(model, loss_fn, bad),
            train_script.make_data(8),
            None,
            bad,
            ckpt_dir=tmp_path / "d",
            log_dir=tmp_path / "m",
            key="k",
        )


def test_fit_honours_the_config_phases(tmp_path):
    """What the tasks call (``fit``) runs ``train.phases``; before, only ``fit_phases`` did."""
    spec = TrainSection(
        max_epochs=5,
        phases=[
            PhaseSection(name="head", max_epochs=1, trainable=["2."]),
            PhaseSection(name="all", max_epochs=2),
        ],
        **SPEC,
    )
    model = train_script.make_model()
    first_layer = model[0].weight.detach().clone()
    result = fit(
        TaskModule(model, train_script.loss_fn, spec),
        train_script.make_data(32),
        None,
        spec,
        ckpt_dir=tmp_path / "c",
        log_dir=tmp_path / "l",
        key="k",
    )
    head = torch.load(tmp_path / "c" / "head" / "last.ckpt", weights_only=True)
    assert torch.equal(head["state_dict"]["model.0.weight"], first_layer)  # frozen in phase 1
    assert result.last_path == tmp_path / "c" / "all" / "last.ckpt" and result.epochs == 2
    assert not torch.equal(model[0].weight, first_layer)  # trained in phase 2


def test_bf16_mixed_on_cpu_trains_the_unet(tmp_path):
    from geodl.models import build_model

    spec = TrainSection(max_epochs=1, precision="bf16-mixed", **SPEC)
    model = build_model("unet", in_channels=1, n_times=1, depth=1, width=4)
    seen = {}

    def loss_fn(m, batch):
        x, y = batch  # (B, 1, H, W) -> (B, T=1, C=1, H, W)
        out = m(x[:, None], torch.ones_like(x[:, None])).mean
        seen["dtype"] = out.dtype
        return {"loss": ((out.float()[:, 0] - y) ** 2).mean()}

    result = fit(
        TaskModule(model, loss_fn, spec),
        train_script.make_data(32),
        None,
        spec,
        ckpt_dir=tmp_path / "c",
        log_dir=tmp_path / "l",
        key="k",
    )
    assert seen["dtype"] == torch.bfloat16 and result.global_step == 2


def test_every_model_file_is_one_envelope_and_a_versionless_one_is_refused(tmp_path):
    """dynamics ``model.pt``, emulator ``models/*.pt`` and the DA 4DVarNet file are all written as
    geodl's envelope (read by ``load_checkpoint``); a file without a version is refused."""
    import numpy as np

    from geodl.errors import DataError
    from geodl.methods.assimilation import fourdvarnet_info
    from geodl.methods.dynamics import read_dynamics_checkpoint, save_dynamics_model
    from geodl.methods.emulation import save_emulator
    from geodl.training import load_checkpoint

    net = torch.nn.Linear(3, 3)
    dyn = save_dynamics_model(tmp_path / "dyn.pt", net, {"dim": 3, "dt": 0.01})
    emu = save_emulator(
        tmp_path / "emu.pt", net, method="cnn", variable="q", mean=np.zeros(2), std=np.ones(2),
        epochs=1, best_val_loss=None, config={},
    )  # fmt: skip
    for path in (dyn, emu):
        assert load_checkpoint(path)["geodl"]["version"]
    state, meta = read_dynamics_checkpoint(dyn)
    assert meta["dim"] == 3 and torch.equal(state["weight"], net.weight)

    meta = {"fourdvarnet": {"window": 5}, "dim": 3, "dt": 0.01, "obs_std": 1.0}
    torch.save({"state_dict": {}, "geodl": meta}, tmp_path / "old.pt")  # no version
    with pytest.raises(DataError, match="no geodl version"):
        fourdvarnet_info(tmp_path / "old.pt")
    with pytest.raises(UserInputError, match="no geodl version"):
        read_dynamics_checkpoint(tmp_path / "old.pt")
