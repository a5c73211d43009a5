"""Brute-force reference implementations: plain Python loops over samples, pairs and triplets,
in float64, written straight from each paper's equation. Slow on purpose; never vectorised."""

from __future__ import annotations

import math

import torch


def norm(v: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(sum(v[k] * v[k] for k in range(v.shape[0])))


def unit(v: torch.Tensor) -> torch.Tensor:
    return v / norm(v)


def dist(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return norm(u - v)


def dot(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return sum(u[k] * v[k] for k in range(u.shape[0]))


def rows(x: torch.Tensor, normalize: bool) -> list[torch.Tensor]:
    return [unit(x[i]) if normalize else x[i] for i in range(x.shape[0])]


def contrastive(x, labels, margin, squared=True, normalize=True, reduction="mean"):
    f = rows(x, normalize)
    y = labels.tolist()
    pos, neg = [], []
    for i in range(len(y)):
        for j in range(len(y)):
            if i == j:
                continue
            d = dist(f[i], f[j])
            if y[i] == y[j]:
                pos.append(d * d if squared else d)
            else:
                h = max(margin - d, torch.zeros((), dtype=x.dtype))
                neg.append(h * h if squared else h)
    if not pos and not neg:
        return torch.zeros((), dtype=x.dtype)
    if reduction == "mean":
        return sum(pos + neg) / (len(pos) + len(neg))
    if reduction == "pos_neg_mean":
        return (sum(pos) / len(pos) if pos else 0.0) + (sum(neg) / len(neg) if neg else 0.0)
    nz_p = [v for v in pos if v > 0]
    nz_n = [v for v in neg if v > 0]
    return (sum(nz_p) / len(nz_p) if nz_p else 0.0) + (sum(nz_n) / len(nz_n) if nz_n else 0.0)


def pair_measure(f, i, j, distance):
    if distance == "euclidean":
        return dist(f[i], f[j])
    if distance == "squared_euclidean":
        d = dist(f[i], f[j])
        return d * d
    return dot(f[i], f[j]) / (norm(f[i]) * norm(f[j]))


def triplet(x, labels, margin, mining="all", distance="euclidean", normalize=True, reduction="mean"):
    f = rows(x, normalize)
    y = labels.tolist()
    b = len(y)
    sim = distance == "cosine_similarity"
    m = {(i, j): pair_measure(f, i, j, distance) for i in range(b) for j in range(b)}

    def closer(i, j):  # "distance-like": smaller is closer
        return -m[(i, j)] if sim else m[(i, j)]

    losses = []
    if mining == "batch_hard":
        for a in range(b):
            positives = [p for p in range(b) if p != a and y[p] == y[a]]
            negatives = [n for n in range(b) if y[n] != y[a]]
            if not positives or not negatives:
                continue
            p = max(positives, key=lambda q: float(closer(a, q)))
            n = min(negatives, key=lambda q: float(closer(a, q)))
            losses.append(max(closer(a, p) - closer(a, n) + margin, torch.zeros((), dtype=x.dtype)))
    else:
        for a in range(b):
            for p in range(b):
                if p == a or y[p] != y[a]:
                    continue
                for n in range(b):
                    if y[n] == y[a]:
                        continue
                    gap = closer(a, n) - closer(a, p)
                    if mining == "semi_hard" and not (0 < gap <= margin):
                        continue
                    losses.append(max(margin - gap, torch.zeros((), dtype=x.dtype)))
    if not losses:
        return torch.zeros((), dtype=x.dtype)
    if reduction == "mean":
        return sum(losses) / len(losses)
    nz = [v for v in losses if v > 0]
    return sum(nz) / len(nz) if nz else torch.zeros((), dtype=x.dtype)


def npair(x, labels, l2_reg):
    y = labels.tolist()
    seen: dict[int, list[int]] = {}
    for i, label in enumerate(y):
        seen.setdefault(label, []).append(i)
    pairs = [(idx[0], idx[1]) for idx in seen.values() if len(idx) >= 2]
    if not pairs:
        return torch.zeros((), dtype=x.dtype)
    total = 0.0
    for i, (a, p) in enumerate(pairs):
        z = [dot(x[a], x[q]) - dot(x[a], x[p]) for j, (_, q) in enumerate(pairs) if j != i]
        top = max([0.0] + [float(v) for v in z])  # log(1 + sum e^z), shifted to avoid overflow
        inner = torch.exp(torch.tensor(-top, dtype=x.dtype)) + sum(torch.exp(v - top) for v in z)
        total = total + top + torch.log(inner)
    loss = total / len(pairs)
    used = [k for pair in pairs for k in pair]
    reg = sum(dot(x[k], x[k]) for k in used) / len(used)
    return loss + l2_reg * reg


def multi_similarity(x, labels, alpha, beta, base, epsilon):
    y = labels.tolist()
    b = len(y)
    s = [[dot(x[i], x[j]) / (norm(x[i]) * norm(x[j])) for j in range(b)] for i in range(b)]
    total = 0.0
    for i in range(b):
        positives = [j for j in range(b) if j != i and y[j] == y[i]]
        negatives = [j for j in range(b) if y[j] != y[i]]
        if epsilon >= 0 and positives and negatives:
            min_pos = min(float(s[i][j]) for j in positives)
            max_neg = max(float(s[i][j]) for j in negatives)
            kept_neg = [j for j in negatives if float(s[i][j]) + epsilon > min_pos]
            kept_pos = [j for j in positives if float(s[i][j]) - epsilon < max_neg]
        elif epsilon >= 0:
            kept_pos, kept_neg = [], []
        else:
            kept_pos, kept_neg = positives, negatives
        pos_sum = sum(torch.exp(-alpha * (s[i][j] - base)) for j in kept_pos)
        neg_sum = sum(torch.exp(beta * (s[i][j] - base)) for j in kept_neg)
        total = total + torch.log(1 + torch.as_tensor(pos_sum, dtype=x.dtype)) / alpha
        total = total + torch.log(1 + torch.as_tensor(neg_sum, dtype=x.dtype)) / beta
    return total / b


def proxy_nca(x, labels, proxies, scale, include_positive=True):
    total = 0.0
    for i, label in enumerate(labels.tolist()):
        xi = unit(x[i])
        d = [dist(xi, unit(proxies[c])) ** 2 for c in range(proxies.shape[0])]
        numerator = torch.exp(-scale * d[label])
        denominator = sum(torch.exp(-scale * d[c]) for c in range(len(d)) if include_positive or c != label)
        total = total - torch.log(numerator / denominator)
    return total / x.shape[0]


def center(x, labels, centers):
    total = 0.0
    for i, label in enumerate(labels.tolist()):
        d = dist(x[i], centers[label])
        total = total + 0.5 * d * d
    return total / x.shape[0]


def center_update(centers, x, labels, alpha):
    """Wen et al. Eq. 4: c_j <- c_j - alpha * sum_i [y_i=j](c_j - x_i) / (1 + n_j)."""
    new = centers.clone()
    y = labels.tolist()
    for j in range(centers.shape[0]):
        members = [i for i in range(len(y)) if y[i] == j]
        delta = torch.zeros_like(centers[j])
        for i in members:
            delta = delta + (centers[j] - x[i])
        new[j] = centers[j] - alpha * delta / (1 + len(members))
    return new


def cross_entropy(logits_row: list, target: int):
    top = max(float(v.detach()) if torch.is_tensor(v) else float(v) for v in logits_row)
    denominator = sum(torch.exp(v - top) for v in logits_row)
    return -(logits_row[target] - top - torch.log(denominator))


def softmax(x, labels, weight, bias):
    total = 0.0
    for i, label in enumerate(labels.tolist()):
        logits = [dot(weight[c], x[i]) + (bias[c] if bias is not None else 0.0) for c in range(weight.shape[0])]
        total = total + cross_entropy(logits, label)
    return total / x.shape[0]


def margin_head(x, labels, weight, kind, s=64.0, m=0.35, lam=5.0):
    total = 0.0
    for i, label in enumerate(labels.tolist()):
        xi = x[i]
        cos = [dot(unit(xi), unit(weight[c])) for c in range(weight.shape[0])]
        logits = []
        for c in range(weight.shape[0]):
            if kind == "sphereface":
                value = norm(xi) * cos[c]
                if c == label:
                    t = math.acos(max(-1.0, min(1.0, float(cos[c].detach()))))
                    k = min(int(math.floor(m * t / math.pi)), int(m) - 1)
                    theta = torch.acos(torch.clamp(cos[c], -1.0, 1.0))
                    psi = (-1) ** k * torch.cos(m * theta) - 2 * k
                    value = norm(xi) * (lam * cos[c] + psi) / (1 + lam)
            elif c != label:
                value = s * cos[c]
            elif kind == "cosface":
                value = s * (cos[c] - m)
            else:  # arcface
                theta = torch.acos(torch.clamp(cos[c], -1.0, 1.0))
                if float(theta.detach()) + m <= math.pi:
                    value = s * torch.cos(theta + m)
                else:
                    value = s * (cos[c] - m * math.sin(m))
            logits.append(value)
        total = total + cross_entropy(logits, label)
    return total / x.shape[0]


def batch_hard_distances(x, labels):
    """(anchor, d(a, hardest p), d(a, hardest n)) for each valid anchor, Euclidean."""
    y = labels.tolist()
    out = []
    for a in range(len(y)):
        ps = [dist(x[a], x[p]) for p in range(len(y)) if p != a and y[p] == y[a]]
        ns = [dist(x[a], x[n]) for n in range(len(y)) if y[n] != y[a]]
        if ps and ns:
            out.append((a, float(max(ps)), float(min(ns))))
    return out


def semi_hard_triplets(x, labels, margin):
    y = labels.tolist()
    out = set()
    for a in range(len(y)):
        for p in range(len(y)):
            if p == a or y[p] != y[a]:
                continue
            for n in range(len(y)):
                if y[n] == y[a]:
                    continue
                gap = float(dist(x[a], x[n]) - dist(x[a], x[p]))
                if 0 < gap <= margin:
                    out.add((a, p, n))
    return out


def multi_similarity_pairs(x, labels, epsilon):
    y = labels.tolist()
    b = len(y)
    s = [[float(dot(x[i], x[j]) / (norm(x[i]) * norm(x[j]))) for j in range(b)] for i in range(b)]
    pos, neg = set(), set()
    for i in range(b):
        positives = [j for j in range(b) if j != i and y[j] == y[i]]
        negatives = [j for j in range(b) if y[j] != y[i]]
        if not positives or not negatives:
            continue
        for j in negatives:
            if s[i][j] + epsilon > min(s[i][k] for k in positives):
                neg.add((i, j))
        for j in positives:
            if s[i][j] - epsilon < max(s[i][k] for k in negatives):
                pos.add((i, j))
    return pos, neg


def distance_weighted_probabilities(x, labels, cutoff, nonzero_cutoff):
    y = labels.tolist()
    b, dim = x.shape
    out = torch.zeros(b, b, dtype=torch.float64)
    for a in range(b):
        weights = {}
        for n in range(b):
            if y[n] == y[a]:
                continue
            d = max(float(dist(unit(x[a]), unit(x[n]))), cutoff)
            if d >= nonzero_cutoff:
                continue
            log_q = (dim - 2) * math.log(d) + (dim - 3) / 2 * math.log(max(1 - d * d / 4, 1e-8))
            weights[n] = -log_q
        if not weights:
            negatives = [n for n in range(b) if y[n] != y[a]]
            weights = {n: 0.0 for n in negatives}
        if not weights:
            continue
        top = max(weights.values())
        total = sum(math.exp(w - top) for w in weights.values())
        for n, w in weights.items():
            out[a, n] = math.exp(w - top) / total
    return out


def margin_loss(x, labels, margin, beta, nu=0.0, learn_beta=True):
    """Wu et al. 2017, Eq. 4-5, over every valid triplet's (a, p) and (a, n) pairs; beta a float or a
    per-class list; the sum over pairs divided by the pairs whose loss is positive."""
    f = rows(x, True)
    y = labels.tolist()
    values, boundaries = [], []
    for a in range(len(y)):
        for p in range(len(y)):
            if p == a or y[p] != y[a]:
                continue
            for n in range(len(y)):
                if y[n] == y[a]:
                    continue
                b = beta if isinstance(beta, float) else beta[y[a]]
                values.append(max(dist(f[a], f[p]) - b + margin, torch.zeros((), dtype=x.dtype)))
                values.append(max(b - dist(f[a], f[n]) + margin, torch.zeros((), dtype=x.dtype)))
                boundaries.append(b)
    positive = [v for v in values if v > 0]
    divisor = max(len(positive), 1)
    loss = sum(values) / divisor if values else torch.zeros((), dtype=x.dtype)
    if learn_beta and nu:
        loss = loss + (nu * beta if isinstance(beta, float) else sum(nu * b for b in boundaries) / divisor)
    return loss
