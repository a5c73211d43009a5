"""Losses and miners (see each module's docstring for the paper and the equation)."""

from faceverify.losses.center import CenterLoss
from faceverify.losses.classification import ArcFaceLoss, CosFaceLoss, SoftmaxLoss, SphereFaceLoss
from faceverify.losses.distances import DISTANCES, cosine_similarity, euclidean, squared_euclidean
from faceverify.losses.miners import (
    MINERS,
    BatchHardMiner,
    DistanceWeightedMiner,
    MultiSimilarityMiner,
    SemiHardMiner,
)
from faceverify.losses.objective import LOSSES, LossConfig, Objective
from faceverify.losses.pair import ContrastiveLoss, MarginLoss, MultiSimilarityLoss, NPairLoss, TripletLoss
from faceverify.losses.proxy import ProxyNCALoss

__all__ = [
    "ArcFaceLoss", "BatchHardMiner", "CenterLoss", "ContrastiveLoss", "CosFaceLoss", "DISTANCES",
    "DistanceWeightedMiner", "LOSSES", "LossConfig", "MINERS", "MarginLoss", "MultiSimilarityLoss",
    "MultiSimilarityMiner", "NPairLoss", "Objective", "ProxyNCALoss", "SemiHardMiner",
    "SoftmaxLoss", "SphereFaceLoss", "TripletLoss", "cosine_similarity", "euclidean",
    "squared_euclidean",
]
