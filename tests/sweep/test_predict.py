"""``python -m sweep.predict`` against a real export folder and a real local MLflow registry."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from matplotlib.colors import Normalize
from PIL import Image
from torch import nn

from depthcore.config import ExperimentConfig
from depthcore.models import create_model
from depthcore.viz import DEPTH_CMAP
from sweep.predict import (
    DEPTH_LABELS,
    ExportError,
    figure_pixels,
    load_exported,
    main,
    output_names,
    predict_images,
)

SIZE = [64, 64]  # training resolution of the test model
TOLERANCE = 1e-4  # metres; the prediction's values span several metres


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: on two shared cores, two threads make a forward pass ~50x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def training_config(name: str, size: list[int], stage: str) -> dict[str, Any]:
    """A full depthcore config as ``sweep.export`` writes it (a plain dict)."""
    raw: dict[str, Any] = {"model": {"name": name}, "data": {"nyu_path": "data/nyu.mat", "size": size},
                           "train": {"stage": stage}}
    if stage == "diw":
        raw["data"].update(diw_root="data/diw", diw_train_csv="data/diw/DIW_train_val.csv")
        raw["train"]["init_checkpoint"] = "runs/train/nyu/best"
    return ExperimentConfig.from_dict(raw).to_dict()


def write_export(directory: Path, model: nn.Module, config: dict[str, Any]) -> Path:
    """The two files of the export contract that prediction reads: ``state_dict.pt`` and ``config.yaml``."""
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), directory / "state_dict.pt")
    (directory / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return directory


def varied_model(name: str = "unetpp_3m", seed: int = 0) -> nn.Module:
    """A freshly initialised model whose depth varies by metres across an image.

    An untrained network predicts nearly the same depth everywhere, which would hide a
    transposed axis or a wrong resize; a larger output layer makes its structure visible.
    """
    torch.manual_seed(seed)
    model = create_model(name)
    with torch.no_grad():
        for key, param in model.named_parameters():
            if key.startswith("net.segmentation_head"):
                param.mul_(20.0)
    return model.eval()


def write_image(path: Path, height: int, width: int, seed: int = 0) -> Path:
    """A structured, non-symmetric RGB image (gradients and a checkerboard)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    checker = ((xx // 9 + yy // 7 + seed) % 2).astype(np.float32)
    rgb = np.stack([xx / width, yy / height, 0.3 + 0.5 * checker * (xx > width / 3)], axis=-1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((rgb * 255).astype(np.uint8)).save(path)
    return path


def reference_depth(model: nn.Module, path: Path, size: list[int], transpose: bool = False) -> np.ndarray:
    """The eager model's prediction at the training size, resized back to the image's resolution."""
    rgb = np.array(Image.open(path).convert("RGB"))
    if transpose:  # a deliberately wrong pipeline, to show the comparison can fail
        rgb = np.ascontiguousarray(rgb.transpose(1, 0, 2))
    image = torch.from_numpy(rgb).permute(2, 0, 1).float()[None] / 255.0  # (1, 3, H, W)
    small = F.interpolate(image, size=tuple(size), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
    with torch.inference_mode():
        depth = model(small)  # (1, 1, h, w)
    full = F.interpolate(depth, size=rgb.shape[:2], mode="bilinear", align_corners=False)[0, 0].numpy()
    return full.T if transpose else full


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> dict[str, Any]:
    """A real export folder of a small U-Net++ trained at 64x64 (stage nyu), and its in-memory model."""
    model = varied_model()
    directory = write_export(tmp_path_factory.mktemp("export") / "unetpp_3m-nyu", model,
                             training_config("unetpp_3m", SIZE, "nyu"))
    return {"dir": directory, "model": model}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("images")
    return {"wide": write_image(root / "wide.png", 72, 100), "tall": write_image(root / "tall.png", 90, 60, seed=1)}


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_npy_and_png_at_each_images_resolution_match_the_eager_model(export, images, tmp_path, capsys):
    out = tmp_path / "pred"
    code, stdout, stderr = run_cli(capsys, "--model", export["dir"], images["wide"], images["tall"],
                                   "--out", out, "--npy", "--batch-size", "2")
    assert code == 0, stderr
    assert f"predicted depth for 2 images with unetpp_3m (nyu) -> {out}/" in stdout
    assert "images/s" in stdout
    cmap = matplotlib.colormaps[DEPTH_CMAP]
    for key, (height, width) in (("wide", (72, 100)), ("tall", (90, 60))):
        depth = np.load(out / f"{key}_depth.npy")
        assert depth.dtype == np.float32 and depth.shape == (height, width)
        expected = reference_depth(export["model"], images[key], SIZE)
        assert np.abs(depth - expected).max() < TOLERANCE
        # The comparison is sharp enough to catch a swapped axis.
        assert np.abs(depth - reference_depth(export["model"], images[key], SIZE, transpose=True)).mean() > 100 * TOLERANCE
        assert depth.max() - depth.min() > 0.5  # the test model's depth has structure

        png = Image.open(out / f"{key}_depth.png")
        assert png.text["Description"].startswith("depth (m);")
        fig_h, fig_w = figure_pixels(height, width)
        assert png.size == (fig_w, fig_h) and fig_w > width and fig_h >= height
        # The depth panel shows the map pixel for pixel, upright, in the colour map's colours.
        pixels = np.asarray(png.convert("RGB")).astype(int)
        top = fig_h - (fig_h - height) // 2 - height
        colours = (cmap(Normalize(depth.min(), depth.max())(depth))[..., :3] * 255).round().astype(int)
        assert np.abs(pixels[top:top + height, :width] - colours).mean() < 1.0
        assert np.abs(pixels[top + 1:top + 1 + height, :width] - colours).mean() > 3.0


def test_batches_of_mixed_sizes_give_the_same_depth_as_one_at_a_time(export, images, tmp_path):
    exported = load_exported(str(export["dir"]))
    assert (exported.name, exported.stage, exported.size, exported.directory) == ("unetpp_3m", "nyu", (64, 64), export["dir"])
    one = predict_images(exported, [images["wide"], images["tall"]], tmp_path / "one", npy=True, batch_size=1)
    two = predict_images(exported, [images["wide"], images["tall"]], tmp_path / "two", npy=True, batch_size=8)
    assert one.predicted == two.predicted == 2 and not one.failures and len(two.written) == 4
    for key in ("wide", "tall"):
        np.testing.assert_allclose(np.load(tmp_path / "one" / f"{key}_depth.npy"),
                                   np.load(tmp_path / "two" / f"{key}_depth.npy"), atol=TOLERANCE)


def test_folder_and_glob_inputs_with_colliding_names(export, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    write_image(a / "x.png", 40, 56)
    write_image(a / "y.jpg", 48, 40)
    (a / "notes.txt").write_text("not an image")
    write_image(b / "x.png", 36, 52, seed=1)
    write_image(b / "z.bmp", 30, 30)  # not matched by the pattern
    out = tmp_path / "pred"
    code, stdout, stderr = run_cli(capsys, "--model", export["dir"], a, str(b / "*.png"), "--out", out, "--npy")
    assert code == 0, stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "a_x_depth.npy", "a_x_depth.png", "b_x_depth.npy", "b_x_depth.png", "y_depth.npy", "y_depth.png"]
    assert np.load(out / "a_x_depth.npy").shape == (40, 56)
    assert np.load(out / "b_x_depth.npy").shape == (36, 52)
    assert np.load(out / "y_depth.npy").shape == (48, 40)
    assert "predicted depth for 3 images" in stdout


def test_output_names_are_distinct():
    paths = [Path("/p/a/x.png"), Path("/p/b/x.png"), Path("/p/b/x.jpg"), Path("/p/y.png"), Path("/p/a/y.png")]
    assert output_names(paths) == ["a_x_png", "b_x_png", "b_x_jpg", "p_y", "a_y"]
    assert output_names([Path("/q/x_png.png"), Path("/q/x.png"), Path("/q/x.jpg")]) == ["x_png", "x_png-2", "x_jpg"]
    assert output_names([Path("/p/x.png")]) == ["x"]


def test_unreadable_image_is_named_and_the_others_are_written(export, tmp_path, capsys):
    folder = tmp_path / "in"
    for i in range(4):
        write_image(folder / f"good{i}.png", 30 + i, 40)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    out = tmp_path / "pred"
    code, stdout, stderr = run_cli(capsys, "--model", export["dir"], folder, "--out", out, "--batch-size", "3")
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == [f"good{i}_depth.png" for i in range(4)]
    broken = [line for line in stderr.splitlines() if "broken.png" in line]
    assert broken and broken[0].startswith(f"error: {folder / 'broken.png'}: cannot read image")
    assert f"error: 1 of 5 images could not be read: {folder / 'broken.png'}" in stderr
    assert "predicted depth for 4 images" in stdout
    assert "Traceback" not in stderr


def _break_weights(directory: Path, export_dir: Path) -> None:
    write_export(directory, nn.Identity(), yaml.safe_load((export_dir / "config.yaml").read_text()))
    state = torch.load(export_dir / "state_dict.pt", weights_only=True)
    torch.save(dict(list(state.items())[: len(state) // 2]), directory / "state_dict.pt")


@pytest.mark.parametrize("case, expected", [
    ("missing", "no such file or folder; expected an export folder holding config.yaml and state_dict.pt"),
    ("empty", "no folder holds both config.yaml and state_dict.pt"),
    ("corrupt_weights", "is not a saved state dict"),
    ("partial_weights", "does not fit model 'unetpp_3m'"),
    ("unknown_model", "model: unknown model 'no_such_net'"),
    ("no_stage", "train.stage: expected one of nyu, diw, found None"),
    ("two_exports", "2 exports found (lraspp-nyu, unetpp-nyu); name one of them"),
])
def test_bad_model_is_one_line_and_exit_2(case, expected, export, images, tmp_path, capsys):
    source = tmp_path / case
    if case == "empty":
        source.mkdir()
    elif case == "corrupt_weights":
        write_export(source, nn.Identity(), training_config("unetpp_3m", SIZE, "nyu"))
        (source / "state_dict.pt").write_bytes(b"not a torch file")
    elif case == "partial_weights":
        _break_weights(source, export["dir"])
    elif case == "unknown_model":
        config = training_config("unetpp_3m", SIZE, "nyu")
        config["model"]["name"] = "no_such_net"
        write_export(source, nn.Linear(1, 1), config)
    elif case == "no_stage":
        config = training_config("unetpp_3m", SIZE, "nyu")
        del config["train"]["stage"]
        write_export(source, nn.Linear(1, 1), config)
    elif case == "two_exports":
        for name in ("unetpp-nyu", "lraspp-nyu"):
            write_export(source / name, nn.Linear(1, 1), training_config("unetpp_3m", SIZE, "nyu"))
    code, stdout, stderr = run_cli(capsys, "--model", source, images["wide"], "--out", tmp_path / "pred")
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], stderr
    assert str(source) in lines[0]
    assert not (tmp_path / "pred").exists()


@pytest.mark.parametrize("pattern", ["nothing_here.png", "folder_without_images", "*.tif"])
def test_input_matching_nothing_exits_2(pattern, export, tmp_path, capsys):
    (tmp_path / "folder_without_images").mkdir()
    (tmp_path / "folder_without_images" / "readme.txt").write_text("x")
    item = str(tmp_path / pattern)
    code, _, stderr = run_cli(capsys, "--model", export["dir"], item)
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {item}: "), stderr


def test_diw_model_is_labelled_relative_depth(export, images, tmp_path):
    directory = write_export(tmp_path / "diw", export["model"], training_config("unetpp_3m", SIZE, "diw"))
    exported = load_exported(str(directory))
    assert exported.stage == "diw" and exported.depth_label == DEPTH_LABELS["diw"]
    result = predict_images(exported, [images["tall"]], tmp_path / "pred")
    assert result.written == [tmp_path / "pred" / "tall_depth.png"]
    assert Image.open(result.written[0]).text["Description"].startswith("relative depth (arbitrary scale);")


def test_registry_uri_without_a_store_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # no runs/sweeps/mlflow.db here
    with pytest.raises(ExportError, match="no MLflow store to look it up in: pass --tracking-uri"):
        load_exported("models:/depth@champion")
    assert list(tmp_path.iterdir()) == []  # MLflow did not create ./mlflow.db
    with pytest.raises(ExportError, match=r"MLflow store sqlite:///.*missing\.db does not exist"):
        load_exported("models:/depth@champion", tracking_uri=f"sqlite:///{tmp_path / 'missing.db'}")


MODEL_NAME = "depth-test"


@pytest.fixture(scope="module")
def registry(export, tmp_path_factory) -> str:
    """A local MLflow store (sqlite) in which ``depth-test@champion`` is the export, logged as a run artifact.

    As with MLflow's pytorch flavour, the export files sit one folder below the version's source.
    """
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment("predict", artifact_location=(root / "artifacts").as_uri())
    run = client.create_run(experiment)
    client.log_artifacts(run.info.run_id, str(export["dir"]), artifact_path="depth_model/extra_files")
    notes = root / "MLmodel"
    notes.write_text("flavors: {}\n")
    client.log_artifact(run.info.run_id, str(notes), artifact_path="depth_model")
    client.set_terminated(run.info.run_id)
    client.create_registered_model(MODEL_NAME)
    version = client.create_model_version(MODEL_NAME, source=f"{run.info.artifact_uri}/depth_model", run_id=run.info.run_id)
    client.set_registered_model_alias(MODEL_NAME, "champion", version.version)
    return uri


def test_models_uri_predicts_like_the_export_folder(registry, export, images, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    code, stdout, stderr = run_cli(capsys, "--model", f"models:/{MODEL_NAME}@champion", "--tracking-uri", registry,
                                   images["wide"], images["tall"], "--out", tmp_path / "uri", "--npy")
    assert code == 0, stderr
    assert "MLFLOW_TRACKING_URI" not in os.environ  # the override is undone
    predict_images(load_exported(str(export["dir"])), [images["wide"], images["tall"]], tmp_path / "dir", npy=True)
    for key in ("wide", "tall"):
        np.testing.assert_array_equal(np.load(tmp_path / "uri" / f"{key}_depth.npy"),
                                      np.load(tmp_path / "dir" / f"{key}_depth.npy"))

    # The environment variable is honoured too, and a version number works like an alias.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry)
    exported = load_exported(f"models:/{MODEL_NAME}/1")
    assert exported.directory.name == "extra_files" and exported.directory.is_dir()
    assert (exported.name, exported.stage, exported.size) == ("unetpp_3m", "nyu", (64, 64))
    with pytest.raises(ExportError, match="cannot download from MLflow"):
        load_exported(f"models:/{MODEL_NAME}@no_such_alias")

    capsys.readouterr()  # MLflow's download progress bars so far
    code, _, stderr = run_cli(capsys, "--model", "models:/no-such-model@champion", "--tracking-uri", registry,
                              images["wide"], "--out", tmp_path / "bad")
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --model models:/no-such-model@champion: "), stderr
    assert registry in lines[0]
