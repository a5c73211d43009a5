"""The records a training run could not use (undecodable RecordIO payloads, see
:class:`~faceverify.data.recordio_dataset.RecordFaces`): each distinct record once, with the step it
was first met and how often, kept in the checkpoint and ``summary.json``; too many stop the run."""

from __future__ import annotations

import sys

from faceverify.data.recordio_format import RecordIOError

# a run stops when more than this share of its images (and more than MIN_SKIPPED_LIMIT) cannot be decoded
MAX_SKIPPED_FRACTION = 0.01
MIN_SKIPPED_LIMIT = 100


def note(records: dict[int, dict], notes: list[dict], step: int, dataset_size: int, source: str) -> None:
    """Add a batch's skip notes (index, record, label, reason) to ``records`` (keyed by image index);
    a record met for the first time is said once on stderr.

    Raises:
        RecordIOError: more than :data:`MAX_SKIPPED_FRACTION` of the data (and more than
            :data:`MIN_SKIPPED_LIMIT` records) could not be decoded.
    """
    for item in notes:
        entry = records.get(item["index"])
        if entry is not None:
            entry["times"] += 1
            continue
        records[item["index"]] = {**item, "first_step": step, "times": 1}
        print(f"faceverify train: skipped record {item['record']} (label {item['label']:g}): {item['reason']}; "
              "training goes on (listed in summary.json)", file=sys.stderr, flush=True)
    limit = max(MIN_SKIPPED_LIMIT, MAX_SKIPPED_FRACTION * dataset_size)
    if len(records) > limit:
        raise RecordIOError(f"{len(records)} records of {source} could not be decoded, more than {limit:g}: the data "
                            f"is damaged; run faceverify rec check {source}")


def merge(per_rank: list[dict[int, dict]]) -> list[dict]:
    """One list of every rank's records, by image index (times added, the first step kept)."""
    merged: dict[int, dict] = {}
    for records in per_rank:
        for index, entry in records.items():
            if index in merged:
                merged[index] = {**merged[index], "times": merged[index]["times"] + entry["times"],
                                 "first_step": min(merged[index]["first_step"], entry["first_step"])}
            else:
                merged[index] = dict(entry)
    return [merged[i] for i in sorted(merged)]
