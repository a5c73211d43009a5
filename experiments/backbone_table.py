"""Parameter counts and multiply-accumulates of every backbone, against published figures.

    python experiments/backbone_table.py

Writes results/backbones.csv and backbones.md. Published figure where one exists: LResNet50E-IR
(ArcFace's IResNet-50 at 112x112): 43.576 M parameters, 12.637 GFLOPs (= 6.32 GMACs), from the
OpenVINO Open Model Zoo description of face-recognition-resnet50-arcface.
"""

from __future__ import annotations

from pathlib import Path

from faceverify.models.backbones import BACKBONES, DEFAULT_INPUT, build_backbone, count_macs, count_parameters
from faceverify.results import provenance, record_rows

ROOT = Path(__file__).resolve().parent.parent
PUBLISHED = {"iresnet50": (43.576e6, 12.637e9 / 2)}


def main() -> None:
    out = ROOT / "results"
    csv_path = out / "backbones.csv"
    if csv_path.exists():
        csv_path.unlink()  # a fresh table: these are properties of the code, not of a run
    rows = []
    where = provenance(device="cpu (counting only)")
    for name in BACKBONES:
        size = DEFAULT_INPUT[name]
        model = build_backbone(name)
        params, macs = count_parameters(model), count_macs(model, size)
        published = PUBLISHED.get(name)
        rows.append({
            "backbone": name, "input": f"{size[0]}x{size[1]}", "embedding": 512,
            "parameters_M": params / 1e6, "GMACs": macs / 1e9,
            "published_parameters_M": published[0] / 1e6 if published else "",
            "published_GMACs": published[1] / 1e9 if published else "",
            "commit": where["commit"],
        })
        print(f"{name:14s} {params / 1e6:7.2f} M  {macs / 1e9:6.2f} GMACs")
    record_rows(csv_path, rows, out / "backbones.md", "Backbones: size and compute",
                note="Produced by `python experiments/backbone_table.py`; one forward pass of one image, "
                     "multiply-accumulates counted by torch.utils.flop_counter (FLOPs / 2).")


if __name__ == "__main__":
    main()
