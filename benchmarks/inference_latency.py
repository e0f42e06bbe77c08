"""Batch-1 CPU latency at 200x200 of every architecture: eager PyTorch against the files the export writes.

    python benchmarks/inference_latency.py [--quick] [--exporter dynamo|torchscript] [--threads 1] [--rounds 30]

For one preset per family, ``sweep.export.files.write_model_files`` writes the deployment files
exactly as ``python -m sweep.export`` does (and checks them against eager). Then, in rounds,
one forward pass of each format in turn (eager, each PyTorch deployment file the export wrote,
the ONNX model under ONNX Runtime's CPU provider), all with the same intra-op thread count; the
latency of a format is the median over rounds. The PyTorch files timed are whichever the export
writes: ``model.pt2`` (``torch.export``, the default) or ``model.pt`` (TorchScript).

Target (firm): ONNX Runtime at least 1.5x faster than eager for LR-ASPP.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _verdict import interleaved, median, table, verdict  # noqa: E402

from depthcore.models import create_model, describe_model  # noqa: E402
from sweep.export.files import write_model_files  # noqa: E402

ARCHITECTURES = ("lraspp_3m", "unetpp_3m", "segformer_3m", "dpt_7m")
HEADLINE = "lraspp_3m"
TARGET = 1.5


def runners(name: str, size: int, out: Path, exporter: str, threads: int) -> dict[str, Callable[[], None]]:
    """One no-argument forward pass per format for ``name``, all on the same batch-1 image."""
    import onnxruntime

    torch.manual_seed(0)
    model = create_model(name).eval()
    write_model_files(model, {"model": {"name": name, "args": {}}}, (size, size), out, onnx_exporter=exporter)
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    formats: dict[str, torch.nn.Module | Callable[[torch.Tensor], torch.Tensor]] = {"eager": model}
    if (out / "model.pt").is_file():
        formats["TorchScript model.pt"] = torch.jit.load(str(out / "model.pt")).eval()
    if (out / "model.pt2").is_file():
        formats["torch.export model.pt2"] = torch.export.load(str(out / "model.pt2")).module()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: image.numpy()}

    def torch_call(module: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            with torch.inference_mode():
                module(image)
        return run

    out_runs = {label: torch_call(module) for label, module in formats.items()}
    def onnx_call() -> None:
        session.run(None, feed)

    out_runs["ONNX Runtime"] = onnx_call
    return out_runs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="LR-ASPP only, TorchScript-based ONNX exporter, few rounds")
    p.add_argument("--size", type=int, default=200)
    p.add_argument("--exporter", choices=["dynamo", "torchscript"], default="dynamo",
                   help="torch.onnx exporter, as python -m sweep.export --onnx-exporter")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads for torch and ONNX Runtime")
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--models", nargs="+", default=list(ARCHITECTURES))
    args = p.parse_args(argv)
    if args.quick:
        args.models, args.exporter, args.rounds, args.size = [HEADLINE], "torchscript", 8, 96
    torch.set_num_threads(args.threads)
    print(f"batch 1, {args.size}x{args.size}, {args.threads} thread(s), ONNX exporter {args.exporter}, median of "
          f"{args.rounds} interleaved rounds after {args.warmup} warm-up rounds (torch {torch.__version__})", flush=True)
    rows, speedups = [], {}
    with tempfile.TemporaryDirectory(prefix="inference-latency-") as tmp:
        for name in args.models:
            try:
                runs = runners(name, args.size, Path(tmp) / name, args.exporter, args.threads)
            except Exception as err:  # one family that cannot export must not hide the others' numbers
                print(f"{name}: export failed: {str(err).splitlines()[0]}", flush=True)
                continue
            interleaved(runs, args.warmup)
            ms = {label: 1000 * median(values) for label, values in interleaved(runs, args.rounds).items()}
            family = describe_model(name)["architecture"]
            for label, value in ms.items():
                rows.append([name, label, value, ms["eager"] / value])
            speedups[name] = ms["eager"] / ms["ONNX Runtime"]
            print(f"{name} ({family}): " + ", ".join(f"{k} {v:.1f} ms" for k, v in ms.items()), flush=True)
    print(table(["model", "format", "median ms", "speed-up over eager"], rows))
    ratio = speedups.get(HEADLINE, float("nan"))
    verdict("inference_latency", ratio, TARGET, ratio >= TARGET,
            **{f"onnxruntime_speedup_{k}": v for k, v in speedups.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
