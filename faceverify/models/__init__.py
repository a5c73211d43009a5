"""Backbones (``BACKBONES``). Classification heads live with their losses in
:mod:`faceverify.losses.classification`, because the Objective owns them."""

from faceverify.models.backbones import BACKBONES, build_backbone, count_macs, count_parameters

__all__ = ["BACKBONES", "build_backbone", "count_macs", "count_parameters"]
