"""What the losses are about, measured on held-out identities' embeddings.

On L2-normalised embeddings ``x`` with class centroids ``c_j`` (means of the class's normalised
embeddings; identities with at least two images):

* compactness = mean_i || x_i - c_{y_i} ||              (intra-class spread; lower is tighter)
* separation  = mean_j min_{l != j} || c_j - c_l ||     (distance to the nearest other class)
* ratio       = compactness / separation                (lower is better)
* effective rank = exp(H(sigma / sum sigma)) of the centred embedding matrix's singular values
  (Roy & Vetterli 2007): how many dimensions the embedding really uses

An embedding has **collapsed** when it maps faces to (almost) one point or one direction: effective
rank below 2, or compactness and separation both below 0.01 (batch-hard triplet did this in the
first CPU ablation). The table flags it.

and a 2-D projection (PCA) of a few identities for plots.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from sklearn.decomposition import PCA

from faceverify.errors import InvalidInputError


def class_geometry(embeddings: np.ndarray, labels: list[str]) -> dict[str, float]:
    counts = Counter(labels)
    keep = np.array([counts[label] >= 2 for label in labels])
    x = embeddings[keep].astype(np.float64)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    y = np.array(labels)[keep]
    classes, inverse = np.unique(y, return_inverse=True)
    if classes.size < 2:
        raise InvalidInputError("geometry needs at least two identities with two or more images")
    centroids = np.zeros((classes.size, x.shape[1]))
    np.add.at(centroids, inverse, x)
    centroids /= np.bincount(inverse)[:, None]
    compactness = float(np.linalg.norm(x - centroids[inverse], axis=1).mean())
    gram = np.sum(centroids**2, axis=1)
    d2 = np.maximum(gram[:, None] + gram[None, :] - 2 * centroids @ centroids.T, 0.0)
    np.fill_diagonal(d2, np.inf)
    separation = float(np.sqrt(d2.min(axis=1)).mean())
    rank = effective_rank(embeddings[keep])
    collapsed = rank < 2.0 or (compactness < 0.01 and separation < 0.01)
    return {"compactness": compactness, "separation": separation, "ratio": compactness / separation,
            "effective_rank": rank, "collapsed": bool(collapsed),
            "geometry_identities": int(classes.size), "geometry_images": int(x.shape[0])}


def effective_rank(embeddings: np.ndarray) -> float:
    """exp of the entropy of the normalised singular values of the centred, L2-normalised rows."""
    x = np.asarray(embeddings, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sigma = np.linalg.svd(x - x.mean(axis=0, keepdims=True), compute_uv=False)
    if sigma.sum() <= 1e-12:
        return 0.0  # every row the same point
    p = sigma / sigma.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def projection(embeddings: np.ndarray, labels: list[str], identities: list[str]) -> np.ndarray:
    """PCA to two dimensions of the normalised embeddings of ``identities`` -> [n, 2]."""
    chosen = np.isin(np.array(labels), identities)
    x = embeddings[chosen].astype(np.float64)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return PCA(n_components=2, random_state=0).fit_transform(x)


def largest_identities(labels: list[str], n: int) -> list[str]:
    """The ``n`` identities with most images (ties by name), for projection plots."""
    counts = Counter(labels)
    return [name for name, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]
