"""One shard process of ``faceverify align --workers N``: ``python -m data_prep.shard_worker SPEC``
with ``SPEC`` a JSON object (src, dst, config, shard, count, threads, progress, only). A process of
its own, started by path rather than by ``multiprocessing``, so a caller's script needs no
``if __name__ == "__main__"`` guard."""

from __future__ import annotations

import json
import sys


def main(argv: list[str] | None = None) -> int:
    spec = json.loads((argv if argv is not None else sys.argv[1:])[0])
    import torch

    from data_prep.options import AlignConfig
    from data_prep.prepare import align_tree
    from data_prep.shards import Shard
    from faceverify.config import merge

    torch.set_num_threads(spec["threads"])
    config = merge(AlignConfig(), spec["config"])
    only = set(spec["only"]) if spec["only"] is not None else None
    align_tree(spec["src"], spec["dst"], config, progress=spec["progress"], only=only,
               shard=Shard(spec["shard"], spec["count"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
