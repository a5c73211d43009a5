"""Regenerate the README's results section from the CSV-backed tables in results/.

    python experiments/update_readme.py

Replaces the text between ``<!-- results:start -->`` and ``<!-- results:end -->`` with the
summary tables, so no number in the README is typed by hand.
"""

from __future__ import annotations

import re
from pathlib import Path

from demo_curve import curve_points
from faceverify.io import write_text
from faceverify.results import read_rows

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- results:start -->", "<!-- results:end -->"


def _rows(path: Path) -> list[dict[str, str]]:
    return read_rows(path) if path.is_file() else []


def _pct(value: str) -> str:
    try:
        return f"{100 * float(value):.2f}"
    except ValueError:
        return value


def dlib_section() -> str:
    rows = _rows(ROOT / "results" / "baselines" / "dlib_lfw.csv")
    if not rows:
        return ""
    latest: dict[tuple[str, str, str], dict[str, str]] = {}
    for row in rows:
        latest[(row["folds"], row["metric"], row["flip"])] = row
    lines = [
        "### External baseline: dlib ResNet through our evaluator",
        "",
        "dlib publishes 99.38%. Rows from `results/baselines/dlib_lfw.csv` (latest run per setting).",
        "",
        "| folds | metric | flip | accuracy % | ± std | AUC | TAR@FAR=1e-3 % | commit | device |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in latest.values():
        lines.append(
            f"| {row['folds']} | {row['metric']} | {row['flip']} | {_pct(row['accuracy'])} | "
            f"{_pct(row['accuracy_std'])} | {float(row['auc']):.4f} | {_pct(row['tar_at_far_1e-3'])} | "
            f"{row['commit']} | {row['device']} |"
        )
    return "\n".join(lines) + "\n"


def _last(path: Path) -> dict[str, str] | None:
    rows = _rows(path)
    return rows[-1] if rows else None


def alignment_section() -> str:
    row = _last(ROOT / "results" / "alignment" / "lfw_alignment.csv")
    if row is None:
        return ""
    return (
        "### Alignment of LFW (MTCNN, 112x96)\n\n"
        f"Of the {row['pair_images']} images referenced by pairs.txt, {row['pair_detected']} "
        f"({_pct(row['pair_detected_fraction'])}%) had a face detected; {row['pair_fallback']} used the centre "
        f"fallback, {row['pair_unreadable']} were unreadable. Alignment residual (transformed landmarks to "
        f"template, crop pixels): mean {float(row['residual_mean_px']):.2f}, median "
        f"{float(row['residual_median_px']):.2f}, 95th percentile {float(row['residual_p95_px']):.2f}. "
        f"All {row['all_images']} LFW images: {row['all_ok']} detected, {row['all_fallback']} fallback. "
        f"(`results/alignment/lfw_alignment.csv`, commit {row['commit']}.)\n\n"
        "![aligned LFW faces](results/alignment/lfw_montage_112x96.png)\n"
    )


def backbone_section() -> str:
    rows = _rows(ROOT / "results" / "backbones.csv")
    if not rows:
        return ""
    lines = ["### Backbones", "", "| backbone | input | parameters (M) | GMACs | published |", "|---|---|---|---|---|"]
    for row in rows:
        published = (f"{float(row['published_parameters_M']):.3f} M, {float(row['published_GMACs']):.2f} GMACs"
                     if row["published_parameters_M"] else "")
        lines.append(f"| {row['backbone']} | {row['input']} | {float(row['parameters_M']):.2f} | "
                     f"{float(row['GMACs']):.2f} | {published} |")
    lines.append("\n(`results/backbones.csv`, from `python experiments/backbone_table.py`.)")
    return "\n".join(lines) + "\n"


def benchmark_section() -> str:
    parts = ["### Speed (benchmarks in `experiments/`, figures in `results/benchmarks/`)", ""]
    row = _last(ROOT / "results" / "benchmarks" / "protocol.csv")
    if row:
        parts.append(
            f"- **10-fold protocol** on {row['n_pairs']} pairs: {float(row['exact_protocol_ms']):.1f} ms "
            f"({float(row['exact_with_cosine_scores_ms']):.1f} ms with the cosine scores; target 50 ms), "
            f"{float(row['speedup_vs_grid']):.1f}x faster than a 400-threshold grid search.")
    row = _last(ROOT / "results" / "benchmarks" / "align.csv")
    if row:
        parts.append(align_line(row, _rows(ROOT / "results" / "benchmarks" / "align.csv")))
    rows = _rows(ROOT / "results" / "benchmarks" / "losses.csv")
    if rows:
        latest = {r["loss"]: r for r in rows}
        cells = ", ".join(f"{name} {float(r['ratio']):.2f}" for name, r in latest.items())
        parts.append(f"- **Losses**, forward + backward at B=512, D=512 (C=10,575 where classes matter), ours / "
                     f"pytorch-metric-learning (center loss: / the [B, C]-matrix port): {cells}.")
        center = latest.get("center_vs_matrix_port")
        if center and center.get("ours_peak_MB"):
            parts.append(f"  Center loss memory, resident growth over one forward + backward: "
                         f"{float(center['ours_peak_MB']):.1f} MB (its few small tensors fit in memory the process "
                         f"already holds) against {float(center['baseline_peak_MB']):.1f} MB for the [B, C] port.")
    rows = _rows(ROOT / "results" / "benchmarks" / "train.csv")
    if rows:
        cells = ", ".join(f"{r['backbone']} {float(r['images_per_s']):.1f}" for r in rows)
        parts.append(f"- **Training images/s** on {rows[-1]['device']} (batch {rows[-1]['batch_size']}, full-size "
                     f"networks, the whole Trainer step): {cells}.")
    rows = [r for r in _rows(ROOT / "results" / "benchmarks" / "trainer_vs_bare.csv") if r.get("baseline") == "independent"]
    if rows:
        latest = {r["setting"]: r for r in rows}
        cells = "; ".join(f"{name} ({r['backbone']}, {r['input']}, batch {r['batch_size']}): "
                          f"{float(r['trainer_images_per_s']):.1f} against {float(r['bare_images_per_s']):.1f} images/s, "
                          f"ratio {float(r['ratio']):.3f} (quartiles {float(r['ratio_q1']):.2f}-{float(r['ratio_q3']):.2f})"
                          for name, r in latest.items())
        last = rows[-1]
        line = (f"- **Trainer against an independent bare loop** (a loop sharing only the network: crops indexed from "
                f"memory, inline normalise and flip, nn.Linear + cross_entropy, the center term and Eq. 4 written out, "
                f"torch SGD; median of {last['repeats']} pairs run in ABBA order, {last['device']}, commit "
                f"{last['commit']}): {cells} (target 0.97; `experiments/bench_trainer.py`).")
        if last.get("trainer_minor_faults_per_step"):
            line += (f" Each run in a process of its own; minor page faults per step (cpu profile, medians): Trainer "
                     f"{float(latest['cpu profile']['trainer_minor_faults_per_step']):.0f}, bare loop "
                     f"{float(latest['cpu profile']['bare_minor_faults_per_step']):.0f} (the Trainer keeps the host "
                     f"memory a step frees, `keep_host_memory`; before, its heap was trimmed and faulted back in "
                     f"every step, ~5,000 faults and ~10 ms of system time in a 140 ms step).")
        profile = [r for r in _rows(ROOT / "results" / "benchmarks" / "trainer_profile.csv")
                   if r["operator"] == "(all operators)"]
        if profile:
            r = profile[-1]
            line += (f" Per operator (torch.profiler, least of {r['rounds']} rounds, commit {r['commit']}, both loops in "
                     f"one process) the two spend {float(r['trainer_ms_per_step']):.1f} and "
                     f"{float(r['bare_ms_per_step']):.1f} ms per step: the gap was not in the operators "
                     f"(`experiments/profile_trainer.py`, `results/benchmarks/trainer_profile.md`).")
        parts.append(line)
    row = _last(ROOT / "results" / "benchmarks" / "loader.csv")
    if row:
        parts.append(f"- **Data loading**: packed memmap {float(row['packed_images_per_s']):.0f} images/s against "
                     f"{float(row['files_images_per_s']):.0f} decoding the same aligned files, "
                     f"{float(row['speedup']):.0f}x (target 10x).")
    row = _last(ROOT / "results" / "benchmarks" / "recordio.csv")
    if row:
        parts.append(f"- **RecordIO decoding** ({row['images']} 112x112 JPEG q95 crops of LFW photos, {row['device']}): "
                     f"{float(row['recordio_best_images_per_s']):.0f} images/s at best against "
                     f"{float(row['packed_best_images_per_s']):.0f} from the packed memmap "
                     f"({float(row['packed_over_recordio']):.1f}x); pack with `--from-rec` when the loader, not the "
                     "GPU, is the bottleneck (`experiments/bench_recordio.py`).")
    rows = _rows(ROOT / "results" / "benchmarks" / "embed.csv")
    if rows:
        cells = "; ".join(f"{r['network']}: {float(r['photos_images_per_s']):.1f} photos/s with detection and "
                          f"alignment, {float(r['aligned_crops_images_per_s']):.0f} aligned crops/s" for r in rows[-2:])
        parts.append(f"- **Using a model** (`faceverify embed`/`verify`, flip included, {rows[-1]['device']}): {cells} "
                     "(`experiments/bench_embed.py`).")
    rows = _rows(ROOT / "results" / "benchmarks" / "ijb.csv")
    if rows:
        full = [r for r in rows if float(r["scale"]) == 1.0]
        latest = {r["implementation"]: r for r in full}
        ours, loop = latest.get("faceverify"), latest.get("loop")
        loops = {r["time_utc"]: r for r in full if r["implementation"] == "loop"}
        history = ", ".join(f"{float(r['speedup_vs_loop']):.1f}x ({float(r['total_seconds']):.1f} s against "
                            f"{float(loops[r['time_utc']]['total_seconds']):.1f} s, {r['commit']})"
                            for r in full if r["implementation"] == "faceverify" and r["time_utc"] in loops)
        if ours and loop:
            parts.append(
                f"- **IJB-C 1:1 from embeddings** ({int(ours['images']):,} images, {int(ours['templates']):,} templates, "
                f"{int(ours['pairs']):,} pairs, 512-d; pooling + scores + both TAR rules, {ours['device']}, commit "
                f"{ours['commit']}): {float(ours['total_seconds']):.1f} s and {float(ours['peak_rss_mb']) / 1024:.1f} GB "
                f"peak (of which {float(ours['input_mb']) / 1024:.1f} GB the embeddings) against "
                f"{float(loop['total_seconds']):.1f} s and {float(loop['peak_rss_mb']) / 1024:.1f} GB for a per-template "
                f"loop as the published scripts do it, {float(ours['speedup_vs_loop']):.1f}x; the same TARs "
                f"(largest difference {float(ours['max_tar_difference']):.1g}; target 60 s, 4 GB, 10x; "
                "`experiments/bench_ijb.py`). The two TAR rules on that run at FAR 1e-4: strict "
                f"{100 * float(ours['tar_at_far_1e-4_strict']):.3f}%, insightface's nearest-FPR rule "
                f"{100 * float(ours['tar_at_far_1e-4_insightface']):.3f}%. Every full-size run recorded, oldest "
                f"first: {history} (the 2-core machine's speed varies between runs, the loop's most: its page "
                "faults dominate).")
    rows = _rows(ROOT / "results" / "benchmarks" / "partial_fc.csv")
    if rows:
        parts.append(partial_fc_line(rows))
    rows = _rows(ROOT / "results" / "benchmarks" / "training_memory.csv")
    if rows:
        parts.append(training_memory_line(rows))
    row = _last(ROOT / "results" / "benchmarks" / "test_suite.csv")
    if row:
        parts.append(f"- **Test suite** (`make test` on a fresh clone, {row['device']}, commit {row['commit']}): "
                     f"{row['tests_passed']} tests in {float(row['test_seconds']) / 60:.1f} min, "
                     f"{float(row['total_seconds']) / 60:.1f} min with the first install "
                     "(`experiments/time_tests.sh`).")
    parts += gpu_lines(ROOT / "results" / "gpu")
    return "\n".join(parts) + "\n" if len(parts) > 2 else ""


def _latest(path: Path) -> list[dict[str, str]]:
    """The rows of the last GPU proof run in a CSV (its ``run`` id), or none."""
    if not path.is_file():
        return []
    rows = _rows(path)
    return [r for r in rows if r.get("run") == rows[-1].get("run")] if rows else []


def gpu_lines(gpu: Path) -> list[str]:
    """The README's GPU figures, from the last ``experiments/gpu_proof.sh`` run taken in by
    ``experiments/gpu_results.py``; until one exists, what the prepared script will measure."""
    train = _latest(gpu / "train.csv")
    if not train:
        return ["- **GPU**: no GPU run recorded yet; `experiments/gpu_proof.sh` is the one prepared script "
                "(targets on an H200: face_resnet27 and sphere20 >= 10,000, iresnet50 >= 5,000 training images/s, "
                "the Trainer >= 0.95 of an independent bare loop; Development says how a lent GPU runs it)."]
    head = f"{train[-1]['device']}, commit {train[-1]['commit']}, torch {train[-1]['torch']}"
    done = [r for r in train if r.get("status") == "done"]
    cells = [f"{r['model']} batch {r['batch_size']}{' compiled' if r['compile'] == 'True' else ''}: "
             f"{float(r['trainer_images_per_s']):,.0f} images/s (bare {float(r['bare_images_per_s']):,.0f}, "
             f"{float(r['ratio']):.2f}x; target {int(float(r['target_images_per_s'])):,}, "
             f"{'met' if r['meets_target'] == 'True' else 'not met'}; peak {float(r['trainer_peak_memory_mb']) / 1024:.1f} GB)"
             for r in done]
    skipped = [f"{r.get('model', r['section'])} batch {r.get('batch_size', '')}" for r in train if r.get("status") == "skipped"]
    lines = [f"- **GPU training** ({head}; bf16, channels_last; the whole Trainer step against an independent bare "
             f"loop, target >= 0.95x): " + "; ".join(cells)
             + (f"; not run for lack of time: {', '.join(skipped)}" if skipped else "") + "."]
    amp = [r for r in _latest(gpu / "amp.csv") if r.get("amp")]
    if amp:
        lines.append("- **GPU AMP** (200 steps on LFW crops): " + "; ".join(
            f"{r['amp']}: loss {float(r['first_loss']):.2f} -> {float(r['last_loss']):.2f}, "
            f"{'passed' if r['passed'] == 'True' else 'FAILED'}" for r in amp) + ".")
    data = [r for r in _latest(gpu / "data.csv") if r.get("source")]
    if data:
        best: dict[str, dict[str, str]] = {}
        for r in data:
            if r["source"] not in best or float(r["images_per_s"]) > float(best[r["source"]]["images_per_s"]):
                best[r["source"]] = r
        lines.append(f"- **GPU machine data path** ({data[0]['cpu_cores']} cores): " + "; ".join(
            f"{source} {float(r['images_per_s']):,.0f} images/s ({r['workers']} workers; "
            + {"True": "feeds the best training rate", "False": "does not feed the best training rate"}.get(
                r["feeds_best_training_rate"], "no training rate measured in that run") + ")"
            for source, r in best.items()) + ".")
    align = [r for r in _latest(gpu / "align.csv") if r.get("pipeline_images_per_s")]
    if align:
        r = align[-1]
        lines.append(f"- **Alignment on the GPU** ({r['images']} LFW photos, batch {r['batch_size']}): "
                     f"{float(r['pipeline_images_per_s']):,.0f} images/s against bare MTCNN "
                     f"{float(r['bare_mtcnn_images_per_s']):,.0f} ({float(r['ratio']):.2f}x).")
    lfw = [r for r in _latest(gpu / "lfw_gpu_losses.csv") if r.get("arm")]
    if lfw:
        lines.append("- **Full-resolution LFW-only training** (face_resnet27 at 112x96, fold 1 held out, "
                     f"{lfw[0].get('iterations', lfw[0].get('max_iters', '?'))} iterations per arm): " + "; ".join(
                         f"{r['arm']} {100 * float(r['accuracy']):.2f}% (AUC {float(r['auc']):.4f}, "
                         f"{float(r['train_seconds']):.0f} s training)" for r in lfw)
                     + "; Wen et al. 2016, Table 2 (CASIA-WebFace, 0.49M images): 97.37 / 99.10 / 99.28%.")
    ddp = _latest(gpu / "ddp.csv")
    for r in ddp:
        if r.get("backend"):
            lines.append(f"- **DDP over {r['backend'].upper()}** (one-GPU torchrun): {r['steps']} steps, "
                         f"{float(r['images_per_s']):,.0f} images/s, {'passed' if r['passed'] == 'True' else 'FAILED'}.")
        elif r.get("memory_ratio"):
            lines.append(f"- **Partial FC on the GPU** ({int(r['classes']):,} identities, r = {r['sample_rate']}): "
                         f"step {float(r['step_ratio']):.2f}x, memory {float(r['memory_ratio']):.2f}x of the full head.")
    return lines


def partial_fc_line(rows: list[dict[str, str]]) -> str:
    """The Partial FC benchmark's last recording: r = 0.1 against the full head, per class count."""
    latest: dict[tuple, dict[str, str]] = {}  # a configuration measured again: its last row
    for r in rows:
        latest[(r["classes"], r["head"], r["sample_rate"], r["world_size"])] = r
    rows = list(latest.values())
    commit = ", ".join(dict.fromkeys(r["commit"] for r in rows))
    cells = []
    for classes in dict.fromkeys(r["classes"] for r in rows):
        mine = [r for r in rows if r["classes"] == classes]
        full = {r["world_size"]: r for r in mine if r["head"] == "full"}
        tenth = [r for r in mine if r["head"] == "partial_fc" and r["sample_rate"] in ("0.1", "0.10")
                 and r.get("step_seconds")]
        parts = []
        for r in tenth:
            memory = f"memory {float(r['memory_ratio']):.2f}x" if r.get("memory_ratio") else ""
            step = f"step {float(r['step_ratio']):.2f}x" if r.get("step_ratio") else ""
            parts.append(f"{r['world_size']} process{'es' if r['world_size'] != '1' else ''}: "
                         + ", ".join(x for x in (step, memory) if x)
                         + f" ({float(r['head_peak_memory_mb']) / 1024:.2f} GB, {float(r['step_seconds']):.2f} s)")
        unfit = [w for w, r in full.items() if r.get("note", "").startswith("full head does not fit")]
        note = f"; the full head does not fit on {', '.join(unfit)} processes" if unfit else ""
        cells.append(f"{int(classes):,} classes, " + "; ".join(parts) + note)
    return (f"- **Partial FC** at r = 0.1 against an independent full CosFace head (512-d, batch 128, per process, "
            f"{rows[-1]['device']}, commits {commit}; memory ratios against the full head at the same world size, or "
            "the one-process one where a replicated head does not fit, or the full head's estimated memory where none "
            "fits): " + " | ".join(cells)
            + " (target at 1M and 2M: memory <= 0.3x, step <= 0.3x; `experiments/bench_partial_fc.py`, "
              "every row in `results/benchmarks/partial_fc.md`).")


def align_line(row: dict[str, str], rows: list[dict[str, str]]) -> str:
    """The alignment benchmark's last row: the pipeline against bare MTCNN, and one process against two."""
    line = (f"- **Alignment pipeline** (read, detect, align, write, manifest): "
            f"{float(row['pipeline_images_per_s']):.1f} images/s against {float(row['bare_mtcnn_images_per_s']):.1f} "
            f"for bare batched MTCNN on the same images, ratio {float(row['ratio']):.2f} (target 0.85)")
    if row.get("bare_mtcnn_2_processes_images_per_s"):
        line += (f" (bare: facenet-pytorch's MTCNN). Two processes (`--workers 2`, one shard each, merged; both "
                 f"timed as `faceverify align` commands from start to exit) {float(row['pipeline_2_processes_images_per_s']):.1f} "
                 f"images/s against {float(row['pipeline_1_process_cold_images_per_s']):.1f} for one: "
                 f"{float(row['two_processes_vs_one']):.2f}x (target 1.3). The most two processes can gain on this "
                 f"machine: bare MTCNN in two one-thread processes side by side detects "
                 f"{float(row['bare_mtcnn_2_processes_images_per_s']):.1f} images/s, "
                 f"{float(row['bare_two_processes_vs_one']):.2f}x bare in one ({row['images']} LFW photos, "
                 f"{row['device']}, commit {row['commit']}"
                 + (f"; ratios are medians over {row['repeats']} repeats, each repeat's own ratio: pipeline/bare "
                    f"{row['ratio_runs']}, two/one {row['two_processes_vs_one_runs']}" if row.get("ratio_runs") else "")
                 + f"; {_range_of(rows, 'two_processes_vs_one')} for two processes against one)")
    elif row.get("pipeline_2_processes_images_per_s"):
        line += (f"; two processes (`--workers 2`, one shard each, merged) {float(row['pipeline_2_processes_images_per_s']):.1f} "
                 f"images/s, {float(row['two_processes_vs_one']):.2f}x one process (target 1.3; {row['images']} LFW photos, "
                 f"{row['device']}, commit {row['commit']}, start-up of the processes included; "
                 f"{_range_of(rows, 'two_processes_vs_one')})")
    return line + "."


def _range_of(rows: list[dict[str, str]], column: str) -> str:
    """``over the K runs recorded: a to b`` of a ratio column (rows that have it)."""
    values = [float(r[column]) for r in rows if r.get(column)]
    return f"over the {len(values)} runs recorded {min(values):.2f}x to {max(values):.2f}x"


def training_memory_line(rows: list[dict[str, str]]) -> str:
    """The last recording of the memory and communication settings, each against the plain Trainer."""
    commit = rows[-1]["commit"]
    rows = [r for r in rows if r["commit"] == commit]
    plain = {r["world_size"]: r for r in rows if r["feature"] == "none"}
    cells = []
    for r in rows:
        if r["feature"] == "none":
            continue
        base = plain[r["world_size"]]
        if r["feature"] == "ddp.compress":
            cells.append(f"`ddp.compress={r['setting']}` (2 processes): {float(r['wire_mb_per_step']):.1f} MB "
                         f"on the wire per step against {float(base['wire_mb_per_step']):.1f} "
                         f"({float(r['wire_ratio']):.2f}x), step {float(r['step_ratio']):.2f}x")
        else:
            cells.append(f"`{'model.gradient_checkpointing' if r['feature'] == 'gradient_checkpointing' else 'optim.accumulate'}"
                         f"={r['setting']}`: {float(r['memory_per_image_mb']):.1f} MB per image against "
                         f"{float(base['memory_per_image_mb']):.1f} ({float(r['memory_ratio']):.2f}x), "
                         f"step {float(r['step_ratio']):.2f}x")
    return (f"- **Memory and communication settings** ({rows[0]['backbone']} x{rows[0]['width']} at {rows[0]['input']}, "
            f"ArcFace, batch {rows[0]['batch']}, the Trainer against itself without the setting, {rows[-1]['device']}, "
            f"commit {commit}; memory = a step's peak above what the process held before it): " + "; ".join(cells)
            + " (`experiments/bench_partial_fc.py --part training`, `results/benchmarks/training_memory.md`).")


# the newest loss comparison first
ABLATION_ORDER = ["lfw_cpu_losses_v2", "lfw_cpu_losses", "lfw_cpu_lambda"]


def ablation_section() -> str:
    out = []
    found = sorted((ROOT / "results" / "ablation").glob("*.md"))
    rank = {name: i for i, name in enumerate(ABLATION_ORDER)}
    for md in sorted(found, key=lambda p: (rank.get(p.stem, len(rank)), p.stem)):
        text = md.read_text(encoding="utf-8")
        body = text.split("\n", 1)[1] if text.startswith("# ") else text
        body = re.sub(r"^## ", "#### ", body, flags=re.MULTILINE)  # stay below the README's headings
        body = re.sub(r"\]\((?!http)([^)]+\.png)\)", r"](results/ablation/\1)", body)
        out.append(f"### Ablation: `{md.stem}`\n{body}")
    return "\n".join(out)


def recipes_section() -> str:
    """The recipes, their published targets and the H200 time of their schedules."""
    from faceverify.config import read_yaml
    from faceverify.reproduce import h200_estimate_hours, load_recipe, recipe_config

    registry = read_yaml(ROOT / "faceverify" / "recipes" / "recipes.yaml")
    lines = ["### Reproduction recipes", "",
             "From `faceverify/recipes/recipes.yaml`; run with `faceverify reproduce NAME --train DATA ...`. The "
             "H200 hours are the schedule's images over a training throughput: measured where `results/gpu/` "
             "holds one, otherwise the issue-13 target (iresnet100: the iresnet50 target scaled by multiply-adds; "
             "an estimate, said so).", "",
             "| recipe | reproduces | network, input | schedule | published | H200 hours |", "|---|---|---|---|---|---|"]
    for name in registry:
        recipe = load_recipe(name)
        config, _ = recipe_config(recipe, [], cuda=True)
        hours, basis = h200_estimate_hours(config, ROOT / "results" / "gpu" / "train.csv")
        published = ", ".join([f"{k} {100 * v:.2f}" for k, v in recipe.published.items()]
                              + [f"{bench} TAR@FAR {far.replace('e-0', 'e-')} {100 * tar:.2f}"
                                 for bench, tars in recipe.published_ijb.items() for far, tar in tars.items()])
        schedule = f"{config.optim.max_iters // 1000}K x {config.data.batch_size}"
        kind = "estimate" if "not measured" in basis else ("measured" if basis.startswith("measured") else
                                                            "scaled from a measured base")
        estimate = f"{hours:.1f} ({kind})" if hours else "n/a"
        lines.append(f"| `{name}` | {recipe.reference.split(';')[0].split(':')[0]} | {config.model.backbone}, "
                     f"{config.model.input or recipe.template} | {schedule} | {published} | {estimate} |")
    return "\n".join(lines) + "\n"


def reproduce_section() -> str:
    rows = _rows(ROOT / "results" / "reproduce" / "reproduce.csv")
    lines = ["### Reproductions", ""]
    complete = [r for r in rows if r["complete"] == "True"]
    smoke = [r for r in rows if r["complete"] != "True"]
    if complete:
        lines += ["| recipe | data | iterations | LFW % | other benchmarks % | published LFW % | commit | device |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in complete:
            others = ", ".join(f"{k[:-9]} {_pct(v)}" for k, v in r.items()
                               if k.endswith("_accuracy") and not k.startswith("lfw") and v)
            lines.append(f"| {r['recipe']} | {r['data_kind']}, {r['train_images']} images | {r['iterations']} | "
                         f"{_pct(r.get('lfw_accuracy', ''))} | {others} | {_pct(r.get('published_lfw', ''))} | "
                         f"{r['commit']} | {r['device']} |")
    else:
        lines.append("No complete reproduction recorded yet: the training sets (CASIA-WebFace, MS1M) are not on the "
                     "development machines, and a complete run needs a GPU (see the recipes' H200 hours).")
    if smoke:
        lines += ["", f"Smoke runs (shortened or altered with overrides: **not results of the recipe**): "
                  f"{len(smoke)} in `results/reproduce/reproduce.csv`."]
    return "\n".join(lines) + "\n"


def demo_section() -> str:
    row = _last(ROOT / "results" / "demo" / "quickstart.csv")
    if row is None:
        return ""
    split = ""
    if row.get("eval_seconds"):
        split = (f" — alignment {float(row['align_seconds']) / 60:.1f} min, training {float(row['train_seconds']) / 60:.1f} "
                 f"min ({row['iterations']} iterations), evaluation {float(row['eval_seconds']) / 60:.1f} min")
    setup = float(row["setup_seconds"]) / 60
    demo = float(row.get("demo_seconds") or float(row["total_seconds"]) - float(row["setup_seconds"])) / 60
    curve_text = ""
    rows = _rows(ROOT / "results" / "demo" / "training_curve.csv")
    curve = curve_points(rows, int(row["held_out_fold"])) if rows else []
    if curve:
        points = []
        for point in curve:
            spread = f" (seeds: {', '.join(f'{a:.2f}' for a in point.accuracies)})" if len(point.accuracies) > 1 else ""
            points.append(f"{point.label}, {point.iterations} iterations: {point.accuracy:.2f}%{spread} "
                          f"in {point.minutes:.1f} min")
        curve_text = (f" The training length against accuracy on the same fold ({rows[-1]['device']}, "
                      f"`results/demo/training_curve.md`; a mean where several seeds ran): {'; '.join(points)}.")
    return (
        "### The quick-start demo\n\n"
        f"`make demo` on a fresh clone ({row['device']}, commit {row['commit']}): the demo itself {demo:.1f} min{split}; "
        f"{setup:.1f} min before it creating the virtual environment. Held-out accuracy {_pct(row['accuracy'])}% "
        f"(AUC {float(row['auc']):.4f}) on fold {row['held_out_fold']} (`results/demo/quickstart.csv`, "
        "`experiments/time_demo.sh`; its choices: `results/demo/alignment_min_face.md`, `results/demo/training_curve.md`)."
        f"{curve_text}\n"
    )


SECTIONS = [dlib_section, alignment_section, demo_section, recipes_section, reproduce_section, ablation_section,
            backbone_section, benchmark_section]


def main() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise SystemExit(f"README.md lacks the markers {START} / {END}")
    body = "\n".join(s for s in (section() for section in SECTIONS) if s)
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    demo = _last(ROOT / "results" / "demo" / "quickstart.csv")
    if demo is not None and demo.get("demo_seconds"):  # the quick start's comment: the recorded demo time
        minutes = f"({float(demo['demo_seconds']) / 60:.1f} min on 2 CPU cores, see Results)"
        before = re.sub(r"\(\d+(\.\d+)? min on 2 CPU cores, see Results\)", minutes, before)
    write_text(readme, f"{before}{START}\n{body or '(no results recorded yet)'}\n{END}{after}")
    print(f"updated {readme}")


if __name__ == "__main__":
    main()
