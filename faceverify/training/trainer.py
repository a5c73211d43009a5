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
  bf16/fp16 autocast, channels_last and ``torch.compile``; DDP through torchrun. On glibc the
  freed host buffers stay with the process (``keep_host_memory``, :mod:`~faceverify.training.host_memory`)
  instead of being trimmed and page-faulted back in every step.
"""

from __future__ import annotations

import signal
import sys
import time
from collections import deque
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from faceverify.config import save_config, to_dict
from faceverify.data.ijb import read_ijb
from faceverify.data.packed import collate_batch
from faceverify.data.recordio_dataset import decode_batch_skipping
from faceverify.data.sources import holdout_subset, open_training_data
from faceverify.config import parse_hw
from faceverify.data.transforms import check_fit, fit_to_input, step_flip, to_network_input
from faceverify.errors import InvalidInputError
from faceverify.evaluation.benchmarks import benchmarks_from, check_benchmarks
from faceverify.io import write_json, write_text
from faceverify.losses.objective import Objective, ObjectiveOutput
from faceverify.models.backbones import build_backbone, set_gradient_checkpointing
from faceverify.provenance import git_commit
from faceverify.training import distributed
from faceverify.training.checkpoint import load_checkpoint, save_checkpoint
from faceverify.training.host_memory import keep_freed_host_memory
from faceverify.training.config import TrainConfig
from faceverify.training.logging import MetricsLogger, progress_bar
from faceverify.training.seed import rng_state, seed_everything, set_rng_state
from faceverify.training.build import (
    TrainStep,
    build_optimizer,
    build_sampler,
)
from faceverify.training.resume import check_resumable
from faceverify.training.nan_guard import LossWindow
from faceverify.training.output import lock_run_output
from faceverify.training.state import TrainResult, TrainState
from faceverify.training import skipped
from faceverify.training.periodic_eval import evaluate_during_training
from faceverify.training import sharded_checkpoint
from faceverify.losses.partial_fc import RowSGD



# ddp.compress -> torch's DDP communication hook: gradients cast for the all-reduce, averaged, cast back
COMPRESS_HOOKS = {"bf16": default_hooks.bf16_compress_hook, "fp16": default_hooks.fp16_compress_hook}


class Trainer:
    """``Trainer(config).fit()``; ``callbacks`` are called as ``cb(trainer)`` after every step."""

    def __init__(self, config: TrainConfig, callbacks: list[Callable[["Trainer"], None]] | None = None,
                 restart: bool = False):
        self.config = config
        self.callbacks = callbacks or []
        self.info = distributed.setup(config.device)
        self.out_dir = Path(config.out)
        self.checkpoint_dir = self.out_dir / "checkpoints"
        self._lock, self.moved_aside = lock_run_output(self.out_dir, restart, self.info)
        try:
            self._setup(config)
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Let go of the output folder's lock (``fit`` does when it ends; so does the process's end)."""
        if self._lock is not None:
            self._lock.release()

    def _setup(self, config: TrainConfig) -> None:
        self.state = TrainState()
        self._stop_requested = False
        if config.keep_host_memory:  # before the first batch: every step's buffers then stay with the process
            keep_freed_host_memory()
        seed_everything(config.seed, config.deterministic)
        device = self.info.device
        if config.data.decode == "gpu" and device.type != "cuda":
            raise InvalidInputError(f"data.decode=gpu needs a CUDA device, the run uses {device}")
        # RecordIO labels and indexes are cached in the user's cache (never beside out, which may lie in the data)
        self.dataset = open_training_data(config.data.source, encoded=config.data.decode == "gpu",
                                          progress=self.info.is_main)
        if config.data.holdout_fraction:
            self.dataset = holdout_subset(self.dataset, config.data.holdout_fraction, config.data.holdout_seed)
        # the network's input: model.input, or the data's crop size; 112x112 data feeding a 112x96
        # network gets the template crop on the device (see transforms.check_fit)
        self.ijb = None
        if config.eval.every:  # a misnamed set fails now, not at the first check
            benchmarks = benchmarks_from(config.eval.lfw or None, config.eval.pairs or None, config.eval.bins)
            check_benchmarks(benchmarks)  # a damaged set fails now, not at the first check hours in
            names = [b.name for b in benchmarks]
            if config.eval.ijb:  # read and checked once, kept for every check
                self.ijb = read_ijb(config.eval.ijb)
                names.append(self.ijb.prefix)
            if config.eval.best != "mean" and config.eval.best not in names:
                raise InvalidInputError(f"eval.best = {config.eval.best!r} is none of the evaluated sets {names} (or 'mean')")
        self.data_size = self.dataset.image_size
        self.input_size = parse_hw(config.model.input) if config.model.input else self.data_size
        check_fit(self.data_size, self.input_size)
        self.backbone = build_backbone(config.model.backbone, config.model.embedding_dim, config.model.width,
                                       self.input_size, config.model.batch_norm).to(device)
        if config.model.gradient_checkpointing:
            set_gradient_checkpointing(self.backbone)
        if config.channels_last:
            self.backbone = self.backbone.to(memory_format=torch.channels_last)
        self.objective = Objective(config.loss, config.model.embedding_dim, self.dataset.num_classes,
                                   seed=config.seed, rank=self.info.rank, world_size=self.info.world_size).to(device)
        self.row_sgd = RowSGD(config.optim.momentum, config.optim.weight_decay, config.optim.nesterov)
        amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[config.amp]
        if config.amp == "fp16" and device.type == "cpu" and self.info.is_main:
            print("faceverify train: warning: amp=fp16 on the CPU runs float16 arithmetic the CPU emulates, many "
                  "times slower than amp=none; use amp=bf16 or amp=none on the CPU, fp16 on a GPU",
                  file=sys.stderr, flush=True)
        self.step_module: nn.Module = TrainStep(self.backbone, self.objective, amp_dtype)
        if config.compile:
            self.step_module.backbone = torch.compile(self.backbone)
        if self.info.distributed:
            # the Partial FC shards differ per rank and move outside the optimiser: not DDP's to sync
            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
                self.step_module, [f"objective.{name}" for name in self.objective.ddp_ignored()])
            self.step_module = DistributedDataParallel(
                self.step_module, device_ids=[device.index] if device.type == "cuda" else None)
            if config.ddp.compress != "none":
                self.step_module.register_comm_hook(None, COMPRESS_HOOKS[config.ddp.compress])
        elif config.ddp.compress != "none" and self.info.is_main:
            print(f"faceverify train: ddp.compress={config.ddp.compress} has no effect in one process "
                  "(it compresses DDP's gradient all-reduce under torchrun)", file=sys.stderr, flush=True)
        share = config.data.batch_size // self.info.world_size
        if share % config.optim.accumulate:
            raise InvalidInputError(f"optim.accumulate = {config.optim.accumulate} must divide each process's "
                                    f"batch ({config.data.batch_size} / {self.info.world_size} = {share})")
        self.optimizer, self.scheduler = build_optimizer(self.backbone, self.objective, config)
        self.scaler = torch.amp.GradScaler(device.type, enabled=config.amp == "fp16")
        self.sampler = build_sampler(self.dataset, config, self.objective.needs_pk_sampling, self.info.world_size,
                                     self.info.rank)
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
        self.loss_window = LossWindow()  # per-step loss values since the last check, on the device
        self._correct = torch.zeros((), dtype=torch.long, device=device)  # training accuracy since the last log
        self._counted = 0
        self._recent: deque[tuple[torch.Tensor, int]] = deque(maxlen=50)  # (correct, images) of the last steps
        self._maybe_resume()
        self.logger = MetricsLogger(self.out_dir, enabled=self.info.is_main, tensorboard=config.tensorboard,
                                    resume_step=self.state.step)

    # ------------------------------------------------------------------ setup helpers
    def _maybe_resume(self) -> None:
        last = self.checkpoint_dir / "last.pt"
        if not last.is_file():
            return
        state = load_checkpoint(last, map_location=self.info.device)
        check_resumable(state, self.config, self.dataset, last)
        self.backbone.load_state_dict(state["model"])
        sharded_checkpoint.load_objective(self.objective, state, last)
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
        """Count records the data could not serve (see :mod:`faceverify.training.skipped`)."""
        skipped.note(self.skipped_records, notes, self.state.step + 1, len(self.dataset), self.config.data.source)

    def all_skipped_records(self) -> list[dict]:
        """Every rank's skipped records, merged by index (a collective: every rank calls it)."""
        return skipped.merge(distributed.all_gather_objects(self.skipped_records, self.info))

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
        if name == "last.pt" or not self.info.distributed:
            # under DDP a collective: every rank saves last.pt at the same steps, but best.pt only the
            # rank whose check improved (the main one), so best.pt carries the list of the last last.pt
            self._skipped_for_save = self.all_skipped_records()
        if self.objective.sharded and name == "last.pt":  # every rank writes its class shard (a collective)
            state = self.checkpoint_state() if self.info.is_main else {"objective": self.objective.state_dict()}
            state["class_shards"] = sharded_checkpoint.save_shards(self.objective, state, self.checkpoint_dir,
                                                                   self.state.step, self.info)
            if not self.info.is_main:
                return None
            path = save_checkpoint(state, self.checkpoint_dir / name)
            sharded_checkpoint.remove_older_shards(self.checkpoint_dir, state["class_shards"])
            return path
        if not self.info.is_main:
            return None
        state = self.checkpoint_state()
        if self.objective.sharded:  # best.pt: for evaluation and export, which never need the head
            sharded_checkpoint.strip_shards(self.objective, state)
        return save_checkpoint(state, self.checkpoint_dir / name)

    # ------------------------------------------------------------------ the loop
    def _request_stop(self, signum: int, frame: object) -> None:
        self._stop_requested = True

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
            images = step_flip(images, self.config.seed, self.state.step, self.info.world_size, self.info.rank)
        labels = labels.to(device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        output = self._forward_backward(images, labels)
        if self.config.optim.clip_grad_norm > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.step_module.parameters(), self.config.optim.clip_grad_norm)
        lr = self.optimizer.param_groups[0]["lr"]  # this step's base rate (the Partial FC rows use it)
        grad_multiplier = 1.0
        if self.scaler.is_enabled():
            scale_before = self.scaler.get_scale()
            grad_multiplier = 1.0 / scale_before
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.scaler.get_scale() < scale_before:
                self.objective.discard_pending()  # fp16 overflow: the optimiser skipped this step
        else:
            self.optimizer.step()
        self.objective.after_step(lr, self.row_sgd, grad_multiplier)
        self.scheduler.step()
        self.loss_window.append(self.state.step + 1, output.stacked())
        if output.predictions is not None:
            correct = (output.predictions == labels).sum()
            self._correct += correct
            self._counted += labels.numel()
            self._recent.append((correct, labels.numel()))
        return output

    def _forward_backward(self, images: torch.Tensor, labels: torch.Tensor) -> ObjectiveOutput:
        """Forward and backward of one step's batch, as ``optim.accumulate`` micro-batches: each
        micro-batch's loss is weighted by its share of the batch, so the gradients add up to the
        whole batch's mean; DDP all-reduces once, after the last (``no_sync`` before it)."""
        count = min(self.config.optim.accumulate, len(labels))
        if count <= 1:
            output: ObjectiveOutput = self.step_module(images, labels)
            self.scaler.scale(output.total).backward()
            return output
        self.objective.begin_step(labels)
        parts: list[ObjectiveOutput] = []
        shares: list[float] = []
        for index, (chunk, chunk_labels) in enumerate(zip(images.tensor_split(count), labels.tensor_split(count))):
            share = len(chunk_labels) / len(labels)
            syncing = index == count - 1 or not self.info.distributed
            with nullcontext() if syncing else self.step_module.no_sync():
                part: ObjectiveOutput = self.step_module(chunk, chunk_labels, index, count)
                self.scaler.scale(part.total * share).backward()
            parts.append(part)
            shares.append(share)
        return combine_micro_batches(parts, shares)

    def check_finite(self) -> None:
        """Read the loss values of the steps since the last check (one host sync); raise
        :class:`NonFiniteLossError` naming the first non-finite step and term (every rank together)."""
        self.loss_window.check(self.info, list(self.last_output.values) if self.last_output is not None else [],
                               self.checkpoint_dir / "last.pt", self._last_saved_step, self.objective.discard_pending)

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
        return evaluate_during_training(self)


def combine_micro_batches(parts: list[ObjectiveOutput], shares: list[float]) -> ObjectiveOutput:
    """One step's output from its micro-batches': each value the share-weighted mean (the whole
    batch's mean for per-sample terms), the predictions concatenated in batch order."""
    values = {name: sum(part.values[name] * share for part, share in zip(parts, shares))
              for name in parts[0].values}
    predictions = None
    if parts[0].predictions is not None:
        predictions = torch.cat([part.predictions for part in parts])
    return ObjectiveOutput(values["total"], values, predictions)


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
