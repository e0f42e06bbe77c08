"""Tests for the transformer families, SegFormer and DPT: sizes smp refuses, normalisation, cached weights.

Every registered model (their presets included) also runs the shared tests in test_models.py.
"""

from __future__ import annotations

from pathlib import Path

import huggingface_hub.constants
import pytest
import segmentation_models_pytorch as smp
import timm
import torch
from safetensors.torch import save_file

from depthcore.models import DepthModel, count_parameters, create_model
from depthcore.models.base import IMAGENET_MEAN, MIN_DEPTH

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def empty_hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    return tmp_path / "hf"


def _put_in_cache(cache: Path, repo_id: str, revision: str | None, state: dict[str, torch.Tensor]) -> None:
    """Write ``state`` as the cached ``model.safetensors`` of ``repo_id`` (``main`` when revision is None)."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = revision or "0123456789abcdef0123456789abcdef01234567"
    if revision is None:
        (repo / "refs").mkdir(parents=True)
        (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    save_file({k: v.clone().contiguous() for k, v in state.items()}, str(repo / "snapshots" / commit / "model.safetensors"))


@pytest.mark.parametrize(("height", "width"), [(208, 240), (96, 80)])
def test_dpt_takes_sizes_that_smp_refuses(height: int, width: int) -> None:
    # Raw smp DPT with a dynamic ViT still needs multiples of 32; the wrapper pads and crops.
    raw = smp.DPT(encoder_name="tu-vit_tiny_patch16_224", encoder_weights=None, dynamic_img_size=True,
                  decoder_intermediate_channels=(32, 64, 128, 256), decoder_fusion_channels=32).eval()
    with torch.no_grad(), pytest.raises(RuntimeError):
        raw(torch.rand(1, 3, height, width))
    model = create_model("dpt_7m").eval()
    with torch.no_grad():
        depth = model(torch.rand(1, 3, height, width))
    assert depth.shape == (1, 1, height, width) and (depth >= MIN_DEPTH).all()


def test_dpt_normalises_as_its_vit_was_pretrained_and_has_no_dead_parameters() -> None:
    model = create_model("dpt_7m")
    assert isinstance(model, DepthModel)
    assert torch.allclose(model.mean.flatten(), torch.tensor([0.5, 0.5, 0.5]))
    assert torch.allclose(model.std.flatten(), torch.tensor([0.5, 0.5, 0.5]))
    vit = model.net.encoder.model
    assert isinstance(vit.norm, torch.nn.Identity) and isinstance(vit.head, torch.nn.Identity)
    # The encoder's parameters are ViT-Tiny's minus its final norm and classifier.
    full = count_parameters(timm.create_model("vit_tiny_patch16_224"))["total"]
    assert count_parameters(vit)["total"] == full - 2 * 192 - (192 * 1000 + 1000)


def test_segformer_normalises_with_imagenet_statistics() -> None:
    model = create_model("segformer_3m")
    assert isinstance(model, DepthModel)
    assert torch.allclose(model.mean.flatten(), torch.tensor(IMAGENET_MEAN))


def test_wider_decoders_add_parameters() -> None:
    def total(name: str, **kwargs: object) -> int:
        return count_parameters(create_model(name, **kwargs))["total"]

    assert total("segformer_3m", decoder_channels=64) > total("segformer_3m")
    assert total("dpt_7m", fusion_channels=64) > total("dpt_7m")
    assert total("dpt_7m", decoder_channels=(64, 128, 256, 512)) > total("dpt_7m")


@pytest.mark.parametrize("encoder", ["mit_b0", "mit_b1"])
def test_segformer_pretrained_loads_cached_encoder_weights(encoder: str, empty_hf_cache: Path) -> None:
    with pytest.raises(FileNotFoundError, match=rf"smp-hub/{encoder}\.imagenet/model\.safetensors"):
        create_model("segformer", encoder=encoder, pretrained=True)
    settings = smp.encoders.encoders[encoder]["pretrained_settings"]["imagenet"]
    saved = smp.encoders.get_encoder(encoder).state_dict()  # a stand-in for the ImageNet file
    _put_in_cache(empty_hf_cache, settings["repo_id"], settings["revision"], saved)

    loaded = create_model("segformer", encoder=encoder, pretrained=True).net.encoder.state_dict()
    assert loaded and loaded.keys() <= saved.keys()
    assert all(torch.equal(loaded[k], saved[k]) for k in loaded)


def test_dpt_pretrained_loads_cached_vit_weights(empty_hf_cache: Path) -> None:
    repo_id = "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    with pytest.raises(FileNotFoundError, match=f"{repo_id}/model.safetensors under {empty_hf_cache}"):
        create_model("dpt_7m", pretrained=True)
    saved = timm.create_model("vit_tiny_patch16_224").state_dict()  # a stand-in, with its classifier
    _put_in_cache(empty_hf_cache, repo_id, None, saved)

    loaded = create_model("dpt_7m", pretrained=True).net.encoder.model.state_dict()
    assert loaded and loaded.keys() <= saved.keys()
    assert all(torch.equal(loaded[k], saved[k]) for k in loaded)
    # Pretrained or not, the same architecture: a checkpoint of one loads into the other.
    create_model("dpt_7m").load_state_dict(create_model("dpt_7m", pretrained=True).state_dict())
