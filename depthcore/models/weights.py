"""Pretrained weights from the local Hugging Face cache only: found at once, or a one-line error naming the file.

The hub's own download functions retry over the network for a while when offline; looking in
the cache ourselves keeps ``pretrained=True`` on a machine without internet a fast, clear failure.
"""

from __future__ import annotations


def cached_hub_file(repo_id: str, filename: str, revision: str | None, what: str) -> str:
    """Path of ``repo_id/filename`` at ``revision`` (None: ``main``) in the local Hugging Face cache.

    ``what`` names the weights for the error, e.g. ``"ImageNet weights for U-Net++ encoder
    'resnet34'"``. Raises ``FileNotFoundError`` (one line: the file, the cache folder and the
    command that fetches it) when the file is not there.
    """
    from huggingface_hub import constants as hf_constants
    from huggingface_hub import try_to_load_from_cache

    cache_dir = hf_constants.HF_HUB_CACHE  # HF_HOME / HF_HUB_CACHE; looked up per call so tests can move it
    path = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=revision)
    if not isinstance(path, str):
        at = f" (revision {revision})" if revision else ""
        option = f" --revision {revision}" if revision else ""
        raise FileNotFoundError(
            f"{what} are not in the local Hugging Face cache: expected {repo_id}/{filename}{at} under {cache_dir}; "
            f"on a machine with internet run `hf download {repo_id} {filename} config.json{option}` "
            f"and copy that cache here, or use pretrained=False"
        )
    return path


def cached_smp_encoder_weights(encoder: str, family_label: str) -> str:
    """Path of an smp encoder's ImageNet ``model.safetensors`` in the local Hugging Face cache.

    smp 0.6 fetches encoder weights with ``hf_hub_download(repo_id, "model.safetensors",
    revision=...)`` from the repository its encoder table names.
    """
    import segmentation_models_pytorch as smp  # only when pretrained weights are asked for

    settings = smp.encoders.encoders[encoder]["pretrained_settings"]["imagenet"]
    return cached_hub_file(settings["repo_id"], "model.safetensors", settings["revision"],
                           f"ImageNet weights for {family_label} encoder {encoder!r}")
