"""Tests for depthcore.models: every registered model, the shared wrapper and each family."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import huggingface_hub.constants
import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from torchvision.models import mobilenet_v3_large, mobilenet_v3_small
from torchvision.models.segmentation import lraspp_mobilenet_v3_large

from depthcore._registry import MODELS
from depthcore.models import (
    PRESETS,
    DepthModel,
    check_model_args,
    count_parameters,
    create_model,
    describe_model,
    get_family,
    list_families,
    list_models,
    matched_pairs,
    model_family,
    model_from_spec,
    model_info,
)
from depthcore.models.base import INIT_DEPTH, MIN_DEPTH, crop_padding, pad_to_multiple, positive_depth
from depthcore.models.lraspp import lraspp_on_mobilenet_v3
from depthcore.models.unetpp import ENCODERS

ALL_MODELS = list_models()


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def empty_weight_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the Hugging Face and torch hub caches at an empty folder, offline."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch"))
    return tmp_path


# --- shared tester -------------------------------------------------------------------------------


def inner(model: nn.Module) -> Any:
    """The wrapped network of a ``DepthModel`` (typed loosely so tests can reach its parts)."""
    assert isinstance(model, DepthModel)
    return model.net


def assert_predicts_depth(model: nn.Module, height: int, width: int, batch: int = 2) -> torch.Tensor:
    """Run an inference forward pass and check the depth contract; return the depth."""
    model.eval()
    with torch.no_grad():
        depth = model(torch.rand(batch, 3, height, width))
    assert depth.shape == (batch, 1, height, width)
    assert torch.isfinite(depth).all()
    assert (depth >= MIN_DEPTH).all()
    return depth


def assert_trains(model: nn.Module, size: int = 64, batch: int = 2) -> None:
    """One MSE training step on metres in 0.5..10: every trainable parameter gets a finite gradient."""
    model.train()
    target = 0.5 + 9.5 * torch.rand(batch, 1, size, size)
    depth = model(torch.rand(batch, 3, size, size))
    assert depth.shape == target.shape
    assert torch.isfinite(depth).all() and (depth > 0).all()
    F.mse_loss(depth, target).backward()
    missing = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"
    bad = [name for name, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients: {bad[:5]}"
    assert any(p.grad.abs().sum() > 0 for p in model.parameters() if p.grad is not None)


# --- every registered model ----------------------------------------------------------------------


def test_registry_lists_families_and_presets() -> None:
    assert {"unetpp", "lraspp", "segformer", "dpt"} == set(list_families())
    assert set(list_families()) <= set(ALL_MODELS)
    assert set(PRESETS) <= set(ALL_MODELS)
    assert set(ALL_MODELS) == set(list_families()) | set(PRESETS)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_model_predicts_depth_at_any_size(name: str) -> None:
    model = create_model(name)
    assert_predicts_depth(model, 200, 200)
    assert_predicts_depth(model, 61, 83)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_model_trains(name: str) -> None:
    assert_trains(create_model(name))


@pytest.mark.parametrize("name", ALL_MODELS)
def test_pretrained_offline_fails_fast_naming_the_weights(name: str, empty_weight_caches: Path) -> None:
    start = time.perf_counter()
    with pytest.raises((FileNotFoundError, ValueError)) as info:
        create_model(name, pretrained=True)
    assert time.perf_counter() - start < 5.0
    message = str(info.value)
    assert "\n" not in message
    if info.type is FileNotFoundError:
        # Names the file and where it was looked for.
        assert (".safetensors" in message or ".pth" in message) and str(empty_weight_caches) in message
        assert "pretrained=False" in message
    else:
        assert "width_mult" in message  # widened backbones have no ImageNet weights


# --- factory: errors, specs, presets ---------------------------------------------------------------


def test_unknown_model_name_lists_valid_names() -> None:
    with pytest.raises(KeyError, match="unetpp") as info:
        create_model("unet")
    assert "lraspp" in str(info.value)


@pytest.mark.parametrize(
    ("name", "kwargs", "listed"),
    [
        ("unetpp", {"encoder": "resnet999"}, "mobilenet_v2"),
        ("unetpp", {"decoder_channels": (64, 32, 16)}, "5 positive integers"),
        ("lraspp", {"size": "medium"}, "large, small"),
        ("lraspp", {"width_mult": 0.0}, "> 0"),
        ("lraspp_7m", {"pretrained": True}, "width_mult=1.0"),
        ("unetpp_3m", {"encodr": "resnet18"}, "valid arguments: encoder, decoder_channels, pretrained"),
        ("segformer", {"encoder": "mit_b9"}, "mit_b0, mit_b1, mit_b2"),
        ("segformer_3m", {"decoder_channels": 0}, "positive integer"),
        ("dpt", {"encoder": "vit_huge"}, "vit_tiny_patch16_224, vit_small_patch16_224"),
        ("dpt_7m", {"decoder_channels": (32, 64)}, "4 positive integers"),
        ("dpt", {"fusion_channels": 2.5}, "positive integer"),
    ],
)
def test_bad_arguments_raise_value_error_listing_choices(name: str, kwargs: dict, listed: str) -> None:
    with pytest.raises(ValueError, match=listed.replace("(", r"\(")):
        create_model(name, **kwargs)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("unetpp", {"encoder": "resnet999"}),
        ("unetpp_7m", {"decoder_channels": [64, 32]}),
        ("lraspp", {"size": "medium"}),
        ("lraspp", {"width_mult": -1.0}),
        ("lraspp_16m", {"pretrained": True}),
        ("lraspp", {"bn_momentum": 0.0}),
        ("segformer_16m", {"encoder": "mit_b7"}),
        ("segformer", {"decoder_channels": True}),
        ("dpt_7m", {"decoder_channels": "wide"}),
        ("dpt", {"fusion_channels": -4}),
    ],
)
def test_check_model_args_matches_the_builders_message_without_building(name: str, kwargs: dict) -> None:
    # The builder checks before building anything, so calling it directly stays cheap here.
    with pytest.raises(ValueError) as from_builder:
        MODELS.get(name)(**kwargs)
    with pytest.raises(ValueError) as from_check:
        check_model_args(name, **kwargs)
    assert str(from_check.value) == str(from_builder.value)


def test_check_model_args_accepts_every_model_and_rejects_names_and_arguments() -> None:
    for name in ALL_MODELS:
        check_model_args(name)
    check_model_args("unetpp_3m", encoder="resnet18", pretrained=False)
    check_model_args("lraspp", size="small", width_mult=0.5)
    with pytest.raises(KeyError, match="valid names: dpt, dpt_7m, lraspp"):
        check_model_args("unet")
    with pytest.raises(ValueError, match="valid arguments: size, width_mult, pretrained"):
        check_model_args("lraspp_3m", encoder="resnet18")
    with pytest.raises(ValueError, match="width_mult must be > 0, found '2'"):
        check_model_args("lraspp", width_mult="2")
    with pytest.raises(ValueError, match="pretrained must be true or false"):
        check_model_args("unetpp", pretrained="yes")


def test_describe_model_names_family_and_encoder_from_the_registry() -> None:
    assert describe_model("unetpp_3m") == {"architecture": "unetpp", "encoder": "mobilenet_v2"}
    assert describe_model("unetpp_3m", {"encoder": "resnet18"})["encoder"] == "resnet18"
    assert describe_model("lraspp_7m") == {"architecture": "lraspp", "encoder": "mobilenet_v3_large_x1.5"}
    assert describe_model("lraspp", {"size": "small"})["encoder"] == "mobilenet_v3_small"
    assert describe_model("segformer_16m") == {"architecture": "segformer", "encoder": "mit_b1"}
    assert describe_model("dpt_7m") == {"architecture": "dpt", "encoder": "vit_tiny_patch16_224"}
    for name in ALL_MODELS:
        family = model_family(name)
        assert family in list_families() and describe_model(name)["architecture"] == family
        assert get_family(family).label and describe_model(name)["encoder"]
    assert {get_family(f).label for f in list_families()} == {"U-Net++", "LR-ASPP", "SegFormer", "DPT"}
    with pytest.raises(KeyError, match="valid names: dpt"):
        model_family("unet")
    with pytest.raises(KeyError, match="valid families: dpt, lraspp, segformer, unetpp"):
        get_family("unetpp_3m")


def test_spec_rebuilds_the_same_network() -> None:
    model = create_model("unetpp_3m", pretrained=False)
    assert model.depthcore_spec == {"name": "unetpp_3m", "args": {"pretrained": False}}
    rebuilt = model_from_spec({"name": "unetpp_3m", "args": {"pretrained": True}})  # offline: forced off
    rebuilt.load_state_dict(model.state_dict())  # strict: same architecture
    image = torch.rand(1, 3, 40, 40)
    model.eval(), rebuilt.eval()
    with torch.no_grad():
        assert torch.equal(model(image), rebuilt(image))
    with pytest.raises(ValueError, match="'args' and 'name'"):
        model_from_spec({"name": "unetpp"})


def test_model_info_reports_name_args_and_counts() -> None:
    model = create_model("lraspp", size="small")
    info = model_info(model)
    assert info["name"] == "lraspp" and info["args"] == {"size": "small"}
    assert info["total"] == info["trainable"] == sum(p.numel() for p in model.parameters())


def test_preset_arguments_can_be_overridden() -> None:
    narrow = create_model("unetpp_3m")
    wide = create_model("unetpp_3m", decoder_channels=(128, 64, 32, 16, 8))
    assert count_parameters(wide)["total"] > count_parameters(narrow)["total"]


def test_matched_pairs_are_within_5_percent() -> None:
    pairs = matched_pairs()
    assert {"3m", "7m", "16m"} <= set(pairs)
    for label, names in pairs.items():
        families = [PRESETS[n].builder for n in names]
        assert len(families) >= 2 and len(set(families)) == len(families), f"pair {label}: one preset per family"
        counts = {n: count_parameters(create_model(n))["total"] for n in names}
        assert max(counts.values()) <= 1.05 * min(counts.values()), f"pair {label}: {counts}"
    assert {PRESETS[n].builder for names in pairs.values() for n in names} == set(list_families())


def test_count_parameters_separates_frozen() -> None:
    model = create_model("lraspp")
    for p in inner(model).backbone.parameters():
        p.requires_grad_(False)
    counts = count_parameters(model)
    backbone = sum(p.numel() for p in inner(model).backbone.parameters())
    assert backbone > 0
    assert counts["total"] - counts["trainable"] == backbone


# --- shared wrapper --------------------------------------------------------------------------------


@pytest.mark.parametrize(("height", "width"), [(200, 200), (61, 83), (64, 32), (10, 7), (1, 1)])
def test_padding_reaches_multiple_and_crops_back(height: int, width: int) -> None:
    x = torch.rand(2, 3, height, width)
    padded, pads = pad_to_multiple(x, 32)
    assert padded.shape[-2] % 32 == 0 and padded.shape[-1] % 32 == 0
    assert torch.equal(crop_padding(padded, pads), x)


def test_wrapper_crop_aligns_with_input() -> None:
    # A per-pixel network must give the same depth with or without padding.
    net = nn.Conv2d(3, 1, kernel_size=1)
    image = torch.rand(2, 3, 45, 71)
    with torch.no_grad():
        assert torch.allclose(DepthModel(net, pad_multiple=32)(image), DepthModel(net)(image))


def test_wrapper_rejects_wrong_input_shape() -> None:
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\), found \(2, 1, 8, 8\)"):
        DepthModel(nn.Conv2d(3, 1, 1))(torch.rand(2, 1, 8, 8))


def test_positive_depth_is_positive_smooth_and_metric() -> None:
    logits = torch.tensor([-100.0, -1.0, 0.0, 5.0, 20.0], requires_grad=True)
    depth = positive_depth(logits)
    assert (depth >= MIN_DEPTH).all() and (depth.diff() > 0).all()
    # Zero logits give the initial depth; far depths are the identity up to that shift.
    assert depth[2].item() == pytest.approx(INIT_DEPTH + MIN_DEPTH, abs=1e-5)
    assert (depth[-1] - logits[-1]).item() == pytest.approx(math.log(math.expm1(INIT_DEPTH)) + MIN_DEPTH, abs=1e-4)
    (grad,) = torch.autograd.grad(depth.sum(), logits)
    assert ((grad > 0) & (grad <= 1)).all()


# --- U-Net++ ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoder", [e for e in ENCODERS if e not in ("resnet34", "resnext50_32x4d")])
def test_unetpp_encoders_train(encoder: str) -> None:
    # resnet34 is the registry default, tested above; resnext50 is too slow for a training step.
    assert_trains(create_model("unetpp", encoder=encoder))


def test_unetpp_resnext50_is_the_seeds_48m_model() -> None:
    model = create_model("unetpp", encoder="resnext50_32x4d")
    assert 47e6 < count_parameters(model)["total"] < 50e6
    assert_predicts_depth(model, 33, 47, batch=1)


@pytest.mark.parametrize("encoder", ["mobilenet_v2", "efficientnet-b0"])
def test_unetpp_pretrained_loads_cached_encoder_weights(encoder: str, empty_weight_caches: Path) -> None:
    settings = smp.encoders.encoders[encoder]["pretrained_settings"]["imagenet"]
    snapshot = (
        Path(huggingface_hub.constants.HF_HUB_CACHE)
        / ("models--" + settings["repo_id"].replace("/", "--"))
        / "snapshots"
        / settings["revision"]
    )
    snapshot.mkdir(parents=True)
    # A stand-in for the ImageNet file, with the same keys as smp's encoder.
    saved = {k: v.clone().contiguous() for k, v in smp.encoders.get_encoder(encoder).state_dict().items()}
    save_file(saved, str(snapshot / "model.safetensors"))

    model = create_model("unetpp", encoder=encoder, pretrained=True)
    loaded = inner(model).encoder.state_dict()
    assert loaded.keys() <= saved.keys()
    assert all(torch.equal(loaded[k], saved[k]) for k in loaded)


# --- LR-ASPP ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [{"size": "small"}, {"size": "small", "width_mult": 0.75}])
def test_lraspp_variants_train_and_predict(kwargs: dict) -> None:
    model = create_model("lraspp", **kwargs)
    assert_trains(model)
    assert_predicts_depth(model, 61, 83)


def test_lraspp_head_wiring_matches_torchvision_large_builder() -> None:
    reference = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=1)
    ours = lraspp_on_mobilenet_v3(mobilenet_v3_large(dilated=True).features, num_classes=1)
    ours.load_state_dict(reference.state_dict())  # strict: same blocks, same low/high channels
    image = torch.rand(1, 3, 64, 64)
    reference.eval(), ours.eval()
    with torch.no_grad():
        assert torch.equal(ours(image)["out"], reference(image)["out"])


def test_lraspp_small_taps_stride_8_and_16() -> None:
    net = inner(create_model("lraspp", size="small"))
    features = net.backbone(torch.rand(1, 3, 64, 64))
    assert features["low"].shape[-1] == 64 // 8 and features["high"].shape[-1] == 64 // 16


@pytest.mark.parametrize(("size", "builder"), [("large", mobilenet_v3_large), ("small", mobilenet_v3_small)])
def test_lraspp_pretrained_loads_cached_backbone_weights(size: str, builder, empty_weight_caches: Path) -> None:
    message = ""
    try:
        create_model("lraspp", size=size, pretrained=True)
    except FileNotFoundError as error:
        message = str(error)
    expected = message.split("expected ")[1].split(";")[0]  # the path the error names
    assert expected.startswith(torch.hub.get_dir()) and expected.endswith(".pth")
    saved = builder().state_dict()  # a stand-in for the ImageNet file
    os.makedirs(os.path.dirname(expected))
    torch.save(saved, expected)

    backbone = inner(create_model("lraspp", size=size, pretrained=True)).backbone.state_dict()
    assert backbone and all(torch.equal(v, saved[f"features.{k}"]) for k, v in backbone.items())


@pytest.mark.parametrize("size", ["large", "small"])
def test_lraspp_batchnorm_tracks_short_runs(size: str) -> None:
    # torchvision's MobileNetV3 uses momentum 0.01: after 200 steps the running statistics would
    # still be 13 % their initial values, and evaluation-mode predictions nearly constant.
    norms = [m for m in create_model("lraspp", size=size).modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(m.momentum == 0.1 for m in norms)
    slow = [m for m in create_model("lraspp", size=size, bn_momentum=0.01).modules()
            if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(m.momentum == 0.01 for m in slow)
    with pytest.raises(ValueError, match="bn_momentum must be in"):
        create_model("lraspp", bn_momentum=0.0)
