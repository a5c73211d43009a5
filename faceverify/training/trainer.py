"""The training loop: packed data -> backbone -> Objective -> SGD, on one device or many.

What it guarantees:

* **Exact resume.** Batches depend only on ``(seed, epoch, batch)``, flips only on
  ``(seed, step)``; checkpoints hold every other state (model, objective, optimizer, scheduler,
  scaler, RNGs, sampler position, step). Training 2N steps equals training N, stopping and
  resuming N more (bitwise on the CPU with ``deterministic=true``).
* **Same run or none.** Re-running into an output folder resumes only if the resolved config
  equals the checkpoint's in every key that changes the result (keys in ``RESUME_NEUTRAL`` may
  differ; ``optim.max_iters`` may grow unless the schedule depends on it) and the packed data
  has the same fingerprint; otherwise it refuses, naming each key ``old -> new``.
  ``restart=True`` (``faceverify train --restart``) moves the old run aside and starts over.
* **No silent divergence, no per-step host sync.** Loss values stay on the device; they are
  read once per log step, checkpoint, evaluation and at the end. A non-finite value found
  there stops the run with :class:`NonFiniteLossError` naming the first bad step and term;
  since a checkpoint is only written after that check, nothing past the last good state is
  ever saved (the run rolls back to its last checkpoint).
* **Clean stops.** SIGINT / SIGTERM finish the current step, save a checkpoint and return.
* **DDP.** Gradients are averaged over ranks; per-sample terms (softmax, margin heads, center)
  therefore equal a one-process run on the global batch, and paper-style center updates are
  all-reduced. Pair and triplet terms see each rank's share of the batch (whole identities, by
  the PK sampler's sharding), not pairs across ranks.
* **Speed.** uint8 batches are copied to the device and normalised and flipped there; optional
  bf16/fp16 autocast, channels_last and ``torch.compile``; DDP through torchrun.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from faceverify.config import changed_keys, save_config, to_dict
from faceverify.data.lfw import read_pairs
from faceverify.data.packed import PackedFaces, collate_batch
from faceverify.data.recordio import RecordIOError
from faceverify.data.recordio_dataset import RecordFaces, decode_batch_skipping
from faceverify.data.samplers import PKSampler, ShuffledBatchSampler
from faceverify.data.sources import holdout_subset, open_training_data
from faceverify.data.transforms import check_fit, fit_to_input, parse_hw, to_network_input
from faceverify.evaluation.benchmarks import benchmarks_from, check_benchmarks, evaluate_benchmark
from faceverify.evaluation.lfw_eval import EvalConfig, evaluate_embedder
from faceverify.io import check_writable_dir, move_aside, write_json, write_text
from faceverify.locks import OutputInUseError, OutputLock, lock_output
from faceverify.losses.objective import Objective, ObjectiveOutput
from faceverify.models.backbones import build_backbone
from faceverify.provenance import git_commit
from faceverify.training import distributed
from faceverify.training.checkpoint import load_checkpoint, save_checkpoint
from faceverify.training.config import RESUME_NEUTRAL, TrainConfig, upgrade_saved_config
from faceverify.training.logging import MetricsLogger, progress_bar
from faceverify.training.seed import rng_state, seed_everything, set_rng_state

# a run stops when more than this share of its images (and more than MIN_SKIPPED_LIMIT) cannot be decoded
MAX_SKIPPED_FRACTION = 0.01
MIN_SKIPPED_LIMIT = 100


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message names the step and the term(s)."""


class ResumeMismatchError(ValueError):
    """An output folder holds a run made with other settings or other data."""


class TrainStep(nn.Module):
    """Backbone + objective in one module, so DDP synchronises the loss parameters too."""

    def __init__(self, backbone: nn.Module, objective: Objective, amp_dtype: torch.dtype | None):
        super().__init__()
        self.backbone = backbone
        self.objective = objective
        self.amp_dtype = amp_dtype

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> ObjectiveOutput:
        with torch.autocast(images.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            embeddings = self.backbone(images)
        with torch.autocast(images.device.type, enabled=False):
            return self.objective(embeddings.float(), labels)


@dataclass
class TrainState:
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_accuracy: float = -1.0
    best_step: int = -1
    seconds: float = 0.0  # training wall time over all runs of this output folder (resumes add up)


@dataclass
class TrainResult:
    out_dir: Path
    step: int
    stopped_by_signal: bool
    seconds: float  # this invocation
    images_per_second: float
    total_seconds: float  # over every invocation on this output folder (resumes add up)
    last_values: dict[str, float] = field(default_factory=dict)
    train_accuracy: float = float("nan")
    best_accuracy: float = float("nan")


def _backbone_parameter_groups(model: nn.Module, config: TrainConfig) -> list[dict]:
    """Weight decay on conv/linear weights and biases; none on PReLU slopes or norm layers
    unless the config asks for it."""
    decay, no_decay = [], []
    for module in model.modules():
        is_prelu = isinstance(module, nn.PReLU)
        is_norm = isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm))
        for param in module.parameters(recurse=False):
            if not param.requires_grad:
                continue
            skip = (is_prelu and not config.optim.decay_prelu) or (is_norm and not config.optim.decay_norm)
            (no_decay if skip else decay).append(param)
    groups = [{"params": decay, "weight_decay": config.optim.weight_decay, "name": "backbone"}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "name": "backbone_no_decay"})
    return groups


def lr_factor(step: int, config: TrainConfig) -> float:
    """Multiplier of the base learning rate at iteration ``step`` (warm-up x schedule)."""
    optim = config.optim
    if optim.schedule == "multistep":
        factor = optim.gamma ** sum(step >= m for m in optim.milestones)
    elif optim.schedule == "cosine":
        factor = 0.5 * (1.0 + math.cos(math.pi * min(step, optim.max_iters) / max(optim.max_iters, 1)))
    else:
        factor = 1.0
    if optim.warmup_iters and step < optim.warmup_iters:
        alpha = step / optim.warmup_iters
        factor *= optim.warmup_factor * (1.0 - alpha) + alpha
    return factor


class Trainer:
    """``Trainer(config).fit()``; ``callbacks`` are called as ``cb(trainer)`` after every step."""

    def __init__(self, config: TrainConfig, callbacks: list[Callable[["Trainer"], None]] | None = None,
                 restart: bool = False):
        self.config = config
        self.callbacks = callbacks or []
        self.info = distributed.setup(config.device)
        self.out_dir = Path(config.out)
        self.checkpoint_dir = self.out_dir / "checkpoints"
        self.moved_aside: Path | None = None
        self._lock = self._lock_output(restart)
        try:
            self._setup(config)
        except BaseException:
            self.release()
            raise

    def _lock_output(self, restart: bool) -> OutputLock | None:
        """The main process takes ``out``'s lock (one run per output folder; ``restart`` moves an
        existing run aside first and locks the fresh folder); every rank stops if it could not."""
        lock, error = None, None
        if self.info.is_main:
            try:
                check_writable_dir(self.out_dir, "output folder (out)")
                existed = self.out_dir.exists()
                lock = lock_output(self.out_dir, "training run")
                if restart and existed:
                    self.moved_aside = move_aside(self.out_dir)  # its lock moves with it, still held
                    fresh = lock_output(self.out_dir, "training run")
                    lock.release()
                    lock = fresh
            except OSError as err:
                error = err
                if lock is not None:
                    lock.release()
        if distributed.broadcast_flag(error is not None, self.info):
            raise error if error is not None else OutputInUseError(
                f"{self.out_dir}: the main process could not take the output folder (see its error)")
        return lock

    def release(self) -> None:
        """Let go of the output folder's lock (``fit`` does when it ends; so does the process's end)."""
        if self._lock is not None:
            self._lock.release()

    def _setup(self, config: TrainConfig) -> None:
        self.state = TrainState()
        self._stop_requested = False
        seed_everything(config.seed, config.deterministic)
        device = self.info.device
        if config.data.decode == "gpu" and device.type != "cuda":
            raise ValueError(f"data.decode=gpu needs a CUDA device, the run uses {device}")
        # RecordIO labels and indexes are cached in the user's cache (never beside out, which may lie in the data)
        self.dataset = open_training_data(config.data.source, encoded=config.data.decode == "gpu",
                                          progress=self.info.is_main)
        if config.data.holdout_fraction:
            self.dataset = holdout_subset(self.dataset, config.data.holdout_fraction, config.data.holdout_seed)
        # the network's input: model.input, or the data's crop size; 112x112 data feeding a 112x96
        # network gets the template crop on the device (see transforms.check_fit)
        if config.eval.every:  # a misnamed set fails now, not at the first check
            benchmarks = benchmarks_from(config.eval.lfw or None, config.eval.pairs or None, config.eval.bins)
            check_benchmarks(benchmarks)  # a damaged set fails now, not at the first check hours in
            names = [b.name for b in benchmarks]
            if config.eval.best != "mean" and config.eval.best not in names:
                raise ValueError(f"eval.best = {config.eval.best!r} is none of the evaluated sets {names} (or 'mean')")
        self.data_size = self.dataset.image_size
        self.input_size = parse_hw(config.model.input) if config.model.input else self.data_size
        check_fit(self.data_size, self.input_size)
        self.backbone = build_backbone(config.model.backbone, config.model.embedding_dim, config.model.width,
                                       self.input_size, config.model.batch_norm).to(device)
        if config.channels_last:
            self.backbone = self.backbone.to(memory_format=torch.channels_last)
        self.objective = Objective(config.loss, config.model.embedding_dim, self.dataset.num_classes,
                                   seed=config.seed).to(device)
        amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[config.amp]
        if config.amp == "fp16" and device.type == "cpu" and self.info.is_main:
            print("faceverify train: warning: amp=fp16 on the CPU runs float16 arithmetic the CPU emulates, many "
                  "times slower than amp=none; use amp=bf16 or amp=none on the CPU, fp16 on a GPU",
                  file=sys.stderr, flush=True)
        self.step_module: nn.Module = TrainStep(self.backbone, self.objective, amp_dtype)
        if config.compile:
            self.step_module.backbone = torch.compile(self.backbone)
        if self.info.distributed:
            self.step_module = DistributedDataParallel(
                self.step_module, device_ids=[device.index] if device.type == "cuda" else None)
        groups = _backbone_parameter_groups(self.backbone, config) + self.objective.parameter_groups(
            config.optim.weight_decay)
        for group in groups:
            group.setdefault("lr", config.optim.lr * group.pop("lr_multiplier", 1.0))
        # foreach: one fused update per parameter group instead of a Python loop over tensors
        self.optimizer = torch.optim.SGD(groups, lr=config.optim.lr, momentum=config.optim.momentum,
                                         nesterov=config.optim.nesterov, foreach=True)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, config))
        self.scaler = torch.amp.GradScaler(device.type, enabled=config.amp == "fp16")
        self.sampler = self._make_sampler()
        self.loader = DataLoader(
            self.dataset, batch_sampler=self.sampler, collate_fn=collate_batch,
            num_workers=config.data.workers, pin_memory=config.data.pin_memory and device.type == "cuda",
            persistent_workers=config.data.workers > 0,
        )
        self.last_output: ObjectiveOutput | None = None
        self.skipped_records: dict[int, dict] = {}  # dataset index -> what note_skipped recorded
        self._skipped_for_save: list[dict] = []
        self._fit_started: float | None = None
        self._last_saved_step: int | None = None
        self._window: list[torch.Tensor] = []  # per-step loss values since the last check, on the device
        self._window_first_step = 0
        self._correct = torch.zeros((), dtype=torch.long, device=device)  # training accuracy since the last log
        self._counted = 0
        self._recent: deque[tuple[torch.Tensor, int]] = deque(maxlen=50)  # (correct, images) of the last steps
        self._maybe_resume()
        self.logger = MetricsLogger(self.out_dir, enabled=self.info.is_main, tensorboard=config.tensorboard,
                                    resume_step=self.state.step)

    # ------------------------------------------------------------------ setup helpers
    def _make_sampler(self):
        data = self.config.data
        use_pk = data.sampler == "pk" or (data.sampler == "auto" and self.objective.needs_pk_sampling)
        world, rank = self.info.world_size, self.info.rank
        if use_pk:
            if data.batch_size % data.k:
                raise ValueError(f"batch_size {data.batch_size} must be a multiple of k = {data.k}")
            return PKSampler(self.dataset.labels, data.batch_size // data.k, data.k, self.config.seed, world, rank)
        return ShuffledBatchSampler(len(self.dataset), data.batch_size, self.config.seed, world, rank)

    def _maybe_resume(self) -> None:
        last = self.checkpoint_dir / "last.pt"
        if not last.is_file():
            return
        state = load_checkpoint(last, map_location=self.info.device)
        check_resumable(state, self.config, self.dataset, last)
        self.backbone.load_state_dict(state["model"])
        self.objective.load_state_dict(state["objective"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.objective.generator.set_state(state["objective_generator"])
        self.state = TrainState(**state["train_state"])
        self._last_saved_step = self.state.step
        if self.info.is_main:  # merged over ranks when saved; kept once, by the main process
            self.skipped_records = {int(e["index"]): dict(e) for e in state.get("skipped_records", [])}

    def note_skipped(self, notes: list[dict]) -> None:
        """Count records the data could not serve (undecodable RecordIO payloads, :class:`RecordFaces`):
        each distinct record once in ``skipped_records`` (checkpoint and ``summary.json``), said once
        on stderr; more than :data:`MAX_SKIPPED_FRACTION` of the data stops the run."""
        for note in notes:
            entry = self.skipped_records.get(note["index"])
            if entry is not None:
                entry["times"] += 1
                continue
            self.skipped_records[note["index"]] = {**note, "first_step": self.state.step + 1, "times": 1}
            print(f"faceverify train: skipped record {note['record']} (label {note['label']:g}): {note['reason']}; "
                  "training goes on (listed in summary.json)", file=sys.stderr, flush=True)
        limit = max(MIN_SKIPPED_LIMIT, MAX_SKIPPED_FRACTION * len(self.dataset))
        if len(self.skipped_records) > limit:
            raise RecordIOError(f"{len(self.skipped_records)} records of {self.config.data.source} could not be "
                                f"decoded, more than {limit:g}: the data is damaged; run faceverify rec check "
                                f"{self.config.data.source}")

    def all_skipped_records(self) -> list[dict]:
        """Every rank's skipped records, merged by index (a collective: every rank calls it)."""
        merged: dict[int, dict] = {}
        for records in distributed.all_gather_objects(self.skipped_records, self.info):
            for index, entry in records.items():
                if index in merged:
                    merged[index] = {**merged[index], "times": merged[index]["times"] + entry["times"],
                                     "first_step": min(merged[index]["first_step"], entry["first_step"])}
                else:
                    merged[index] = dict(entry)
        return [merged[i] for i in sorted(merged)]

    def checkpoint_state(self) -> dict:
        if self._fit_started is not None:
            now = time.perf_counter()
            self.state.seconds += now - self._fit_started
            self._fit_started = now
        return {
            "config": to_dict(self.config),
            "model": self.backbone.state_dict(),
            "objective": self.objective.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "rng": rng_state(),
            "objective_generator": self.objective.generator.get_state(),
            "train_state": vars(self.state).copy(),
            "input_size": list(self.input_size),
            "num_classes": self.dataset.num_classes,
            "data_fingerprint": self.dataset.fingerprint,
            "data_description": self.dataset.describe(),
            "commit": git_commit(),
            "skipped_records": self._skipped_for_save,
        }

    def save(self, name: str = "last.pt") -> Path | None:
        """Write a checkpoint of the current state, after checking that every step since the
        last check was finite (so a saved state is always a good one)."""
        self.check_finite()
        if name == "last.pt":
            self._last_saved_step = self.state.step
        self._skipped_for_save = self.all_skipped_records()
        if not self.info.is_main:
            return None
        return save_checkpoint(self.checkpoint_state(), self.checkpoint_dir / name)

    # ------------------------------------------------------------------ the loop
    def _request_stop(self, signum: int, frame: object) -> None:
        self._stop_requested = True

    def _flip(self, images: torch.Tensor) -> torch.Tensor:
        # one mask for the global batch from (seed, step) alone, sliced by rank: resumable without
        # saving a generator, and identical to what one process would draw for the whole batch
        local = images.shape[0]
        rng = np.random.default_rng([self.config.seed, self.state.step])
        flips = rng.random(local * self.info.world_size)[self.info.rank * local : (self.info.rank + 1) * local] < 0.5
        mask = torch.from_numpy(flips).to(images.device)
        return torch.where(mask[:, None, None, None], torch.flip(images, dims=(3,)), images)

    def train_step(self, images_u8: torch.Tensor, labels: torch.Tensor) -> ObjectiveOutput:
        """One optimiser step. Nothing here reads a value back from the device (except the fp16
        grad scaler, which must); the values are checked later by :meth:`check_finite`."""
        device = self.info.device
        if isinstance(images_u8, list):  # JPEG bytes from a RecordIO source with data.decode=gpu
            payloads = images_u8
            images_u8, labels, failed = decode_batch_skipping(payloads, labels, device, self.data_size)
            self.note_skipped([self.dataset.skip_note(payloads.indices[p], reason) for p, reason in failed])
        else:
            images_u8 = images_u8.to(device, non_blocking=True)
        if self.input_size != self.data_size:
            images_u8 = fit_to_input(images_u8, self.input_size)
        images = to_network_input(images_u8, device, channels_last=self.config.channels_last)
        if self.config.data.flip:
            images = self._flip(images)
        labels = labels.to(device, non_blocking=True)
        output: ObjectiveOutput = self.step_module(images, labels)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(output.total).backward()
        if self.config.optim.clip_grad_norm > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.step_module.parameters(), self.config.optim.clip_grad_norm)
        if self.scaler.is_enabled():
            scale_before = self.scaler.get_scale()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.scaler.get_scale() < scale_before:
                self.objective.discard_pending()  # fp16 overflow: the optimiser skipped this step
        else:
            self.optimizer.step()
        self.objective.after_step()
        self.scheduler.step()
        if not self._window:
            self._window_first_step = self.state.step + 1
        self._window.append(output.stacked())
        if output.predictions is not None:
            correct = (output.predictions == labels).sum()
            self._correct += correct
            self._counted += labels.numel()
            self._recent.append((correct, labels.numel()))
        return output

    def check_finite(self) -> None:
        """Read the loss values of the steps since the last check (one host sync); raise
        :class:`NonFiniteLossError` naming the first non-finite step and term. Every rank stops
        together if any rank saw one."""
        if not self._window:
            return
        values = torch.stack(self._window)
        local_bad = not bool(torch.isfinite(values).all())
        if distributed.broadcast_flag(local_bad, self.info):
            names = list(self.last_output.values) if self.last_output is not None else []
            rows = values.cpu()
            finite = torch.isfinite(rows)
            message = "another rank"
            if local_bad:
                first = int((~finite.all(dim=1)).nonzero()[0, 0])
                step = self._window_first_step + first
                bad = [f"{name} = {float(rows[first, i])}" for i, name in enumerate(names)
                       if name != "total" and not bool(finite[first, i])]
                message = f"step {step}: {', '.join(bad) or 'total = ' + str(float(rows[first, -1]))}"
            self.objective.discard_pending()
            last = self.checkpoint_dir / "last.pt"
            kept = (f"the run rolled back to its last checkpoint ({last}, step {self._last_saved_step}), which is "
                    "intact; nothing after it was saved" if self._last_saved_step is not None
                    else "no checkpoint had been written yet; nothing was saved")
            self._window = []
            raise NonFiniteLossError(
                f"non-finite loss at {message}; {kept}; lower optim.lr or set optim.clip_grad_norm"
            )
        self._window = []

    def _training_record(self, window_images: int, window_seconds: float) -> dict[str, float]:
        assert self.last_output is not None
        record: dict[str, float] = {f"loss/{k}": v for k, v in self.last_output.floats().items()}
        record.update(lr=self.optimizer.param_groups[0]["lr"],
                      images_per_second=window_images / max(window_seconds, 1e-9), epoch=self.state.epoch)
        if self._counted:
            record["train_accuracy"] = int(self._correct) / self._counted
            self._correct.zero_()
            self._counted = 0
        return record

    def fit(self) -> TrainResult:
        """Train to ``optim.max_iters`` (or a stop signal); the output folder's lock is let go at the end."""
        try:
            return self._fit()
        finally:
            self.release()

    def _fit(self) -> TrainResult:
        config = self.config
        if self.info.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            save_config(config, self.out_dir / "config.yaml")
            write_text(self.out_dir / "commit.txt", git_commit() + "\n")
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for sig in previous:
            signal.signal(sig, self._request_stop)
        bar = progress_bar(config.optim.max_iters, self.state.step, config.progress and self.info.is_main)
        started = time.perf_counter()
        self._fit_started = started
        images_seen = 0
        stopped = False
        # in DDP the stop request is agreed on at log steps only (an all-reduce every step would be
        # a host sync every step); a single process checks its own flag after every step
        agree_every = config.log_every if self.info.distributed else 1
        self.step_module.train()
        try:
            while self.state.step < config.optim.max_iters and not stopped:
                self.sampler.set_epoch(self.state.epoch, self.state.batch_in_epoch)
                window_start, window_images = time.perf_counter(), 0
                for images, labels, *notes in self.loader:
                    if notes and notes[0]:
                        self.note_skipped(notes[0])
                    self.last_output = self.train_step(images, labels)
                    self.state.step += 1
                    self.state.batch_in_epoch += 1
                    step = self.state.step
                    batch_images = len(images) * self.info.world_size
                    images_seen += batch_images
                    window_images += batch_images
                    for callback in self.callbacks:
                        callback(self)
                    at_end = step >= config.optim.max_iters
                    record: dict[str, float] = {}
                    if config.eval.every and step % config.eval.every == 0:
                        self.check_finite()
                        record.update(self._evaluate())
                    if step % config.log_every == 0 or at_end:
                        self.check_finite()
                        now = time.perf_counter()
                        train_record = self._training_record(window_images, now - window_start)
                        window_start, window_images = now, 0
                        record.update(train_record)
                        bar.set_postfix({k.split("/")[-1]: f"{v:.3g}" for k, v in train_record.items()
                                         if k.startswith("loss/")} | {"lr": f"{train_record['lr']:.2g}",
                                                                     "img/s": f"{train_record['images_per_second']:.0f}"})
                    bar.update(1)  # after the postfix: a log step's line shows that step's losses
                    if record:
                        self.logger.log(step, record)
                    if step % config.checkpoint_every == 0:
                        self.save()
                    stop = self._stop_requested
                    if step % agree_every == 0 or at_end:
                        stop = distributed.broadcast_flag(stop, self.info)
                    elif self.info.distributed:
                        stop = False
                    if stop or at_end:
                        stopped = stop
                        break
                else:
                    self.state.epoch += 1
                    self.state.batch_in_epoch = 0
            self.save()
        finally:
            bar.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.logger.close()
        seconds = time.perf_counter() - started
        recent_images = sum(n for _, n in self._recent)
        train_accuracy = (float(torch.stack([c for c, _ in self._recent]).sum()) / recent_images
                          if recent_images else float("nan"))
        result = TrainResult(
            out_dir=self.out_dir, step=self.state.step, stopped_by_signal=stopped, seconds=seconds,
            images_per_second=images_seen / seconds if seconds > 0 else 0.0, total_seconds=self.state.seconds,
            last_values=self.last_output.floats() if self.last_output else {},
            train_accuracy=train_accuracy,
            best_accuracy=self.state.best_accuracy if self.state.best_accuracy >= 0 else float("nan"),
        )
        skipped = self._skipped_for_save  # merged over ranks by the last save
        if self.info.is_main:
            summary = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(result).items()}
            summary.update(world_size=self.info.world_size, backend=self.info.backend,
                           device=str(self.info.device), skipped_count=len(skipped), skipped_records=skipped)
            write_json(self.out_dir / "summary.json", summary)
        return result

    # ------------------------------------------------------------------ periodic LFW check
    def embed(self, batch: torch.Tensor) -> torch.Tensor:
        return self.backbone(batch.contiguous(memory_format=torch.channels_last)
                             if self.config.channels_last else batch)

    def _evaluate(self) -> dict[str, float]:
        """Check every configured benchmark; returns the log record and keeps ``best.pt`` on the
        set ``eval.best`` names (or the mean of all)."""
        ev = self.config.eval
        if not (ev.lfw and ev.pairs) and not ev.bins:
            raise ValueError("eval.every is set but no benchmark is: give eval.lfw + eval.pairs and/or eval.bins")
        if bool(ev.lfw) != bool(ev.pairs):
            raise ValueError("eval.lfw and eval.pairs go together (an aligned LFW tree and its pairs file)")
        record: dict[str, float] = {}
        accuracies: dict[str, float] = {}
        if self.info.is_main:
            self.backbone.eval()
            config = EvalConfig(flip=ev.flip)
            with torch.no_grad():
                for benchmark in benchmarks_from(ev.lfw or None, ev.pairs or None, ev.bins):
                    if benchmark.kind == "tree":
                        pairs = read_pairs(benchmark.pairs)
                        if ev.folds:  # cross-validated within these folds, for speed
                            pairs = pairs.subset([f - 1 for f in ev.folds])
                        metrics = evaluate_embedder(self.embed, benchmark.path, benchmark.pairs, None, config,
                                                    image_size=self.input_size, device=self.info.device,
                                                    progress=False, pairs=pairs)
                    else:
                        metrics = evaluate_benchmark(self.embed, benchmark, config, self.input_size,
                                                     self.info.device, progress=False)
                    accuracies[benchmark.name] = float(metrics["accuracy"])
                    record[f"eval/{benchmark.name}/auc"] = float(metrics["auc"])
            self.backbone.train()
            record.update({f"eval/{name}/accuracy": value for name, value in accuracies.items()})
            if ev.best != "mean" and ev.best not in accuracies:
                raise ValueError(f"eval.best = {ev.best!r} is none of the evaluated sets {sorted(accuracies)} "
                                 "(or 'mean')")
            followed = float(np.mean(list(accuracies.values()))) if ev.best == "mean" else accuracies[ev.best]
        else:
            followed = 0.0
        record["eval/accuracy"] = followed
        if followed > self.state.best_accuracy:
            self.state.best_accuracy, self.state.best_step = followed, self.state.step
            if self.config.keep_best:
                self.save("best.pt")
        return record


def check_resumable(state: dict, config: TrainConfig, dataset: PackedFaces | RecordFaces, path: Path) -> None:
    """Refuse to resume ``state`` (a checkpoint at ``path``) under ``config`` and ``dataset`` if that
    would train something else than the run that wrote it; the message names every difference."""
    saved = upgrade_saved_config(state["config"])
    new = to_dict(config)
    problems = changed_keys(saved, new, ignore=RESUME_NEUTRAL)
    step = int(state["train_state"]["step"])
    old_iters, new_iters = saved["optim"]["max_iters"], config.optim.max_iters
    if old_iters != new_iters:
        if config.optim.schedule == "cosine":
            problems.append(f"optim.max_iters: {old_iters} -> {new_iters} (the cosine schedule depends on it)")
        elif new_iters < step:
            problems.append(f"optim.max_iters: {old_iters} -> {new_iters} (the run is already at step {step})")
    fingerprint = state.get("data_fingerprint")
    if state.get("num_classes") != dataset.num_classes or (fingerprint and fingerprint != dataset.fingerprint):
        old = state.get("data_description") or f"{state.get('num_classes')} identities"
        problems.append(f"data: {old} ({saved['data']['source']}) -> {dataset.describe()} ({config.data.source})")
    if problems:
        out = Path(config.out)
        raise ResumeMismatchError(
            f"{out} holds a run (step {step}, {path}) made with other settings or data, so it cannot be "
            "resumed:\n  " + "\n  ".join(problems) + "\nRe-run with the old values to resume it, or start over "
            "with --restart (Python: train(config, restart=True)), which moves the old run aside to "
            f"{out}.old-<time> (nothing is deleted)."
        )


def train(config: TrainConfig, callbacks: list[Callable[[Trainer], None]] | None = None,
          restart: bool = False) -> TrainResult:
    """Build a Trainer and run it; leaves the process group when done. ``restart`` moves an
    existing run in ``config.out`` aside (never deletes it) and starts over."""
    trainer = Trainer(config, callbacks, restart=restart)
    try:
        return trainer.fit()
    finally:
        trainer.release()
        distributed.cleanup()
