"""Benchmark sections for shipping and watching models (behind scripts/benchmark.py):

- ``export``: the torch-free ONNX runtime (``asr.lite``) against the torch path, batch 1, one
  core, on ~2-second test files: end-to-end RTF of ``transcribe`` (features, model, greedy,
  word alignment), fp32 and int8 on both sides, measured in alternating rounds in one process;
  import + load time of each path in a fresh interpreter; WER of each on the same files.
- ``tensorboard``: training throughput with and without TensorBoard logging (see bench_tb).
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

LOAD_LITE = """
import time; t = time.perf_counter()
from asr.lite import load_lite
rec = load_lite({path!r}, int8={int8})
print(time.perf_counter() - t)
"""
LOAD_TORCH = """
import time; t = time.perf_counter()
import asr.recognizer
rec = asr.recognizer.load({path!r}, int8={int8})
print(time.perf_counter() - t)
"""


def load_seconds(template: str, path: Path, int8: bool, repeats: int = 3) -> float:
    """Best of ``repeats`` fresh interpreters: import the runtime and load the model (s)."""
    times = []
    for _ in range(repeats):
        res = subprocess.run([sys.executable, "-c", template.format(path=str(path), int8=int8)],
                             capture_output=True, text=True, check=True)
        times.append(float(res.stdout.strip().splitlines()[-1]))
    return round(min(times), 3)


def _random_checkpoint(path: Path, layers: int, hidden: int) -> Path:
    """An untrained layers x hidden model (speed does not depend on the weights)."""
    from asr.checkpoint import model_payload
    from asr.features import FeatureConfig
    from asr.model import BiLSTMCTC, ModelConfig
    from asr.text import CharTokenizer

    torch.manual_seed(0)
    model = BiLSTMCTC(ModelConfig(hidden=hidden, layers=layers, utterance_cmn=True, cmn_floor_db=30.0), 80,
                      len(CharTokenizer()))
    torch.save(model_payload(model, FeatureConfig(), CharTokenizer()), path)
    return path


def _rtf_rounds(variants: dict, files: list[str], rounds: int) -> tuple[dict, dict]:
    """Per variant: the best-of-``rounds`` RTF over ``files`` (variants interleaved per round)
    and the texts of the last round."""
    from asr.transcribe import transcribe

    best, texts = {k: float("inf") for k in variants}, {}
    audio_s = None
    for _ in range(rounds):
        for name, rec in variants.items():
            t0 = time.perf_counter()
            out = [transcribe(rec, f) for f in files]
            elapsed = time.perf_counter() - t0
            audio_s = sum(r.duration for r in out)
            best[name] = min(best[name], elapsed / audio_s)
            texts[name] = [r.text for r in out]
    return {k: round(v, 5) for k, v in best.items()}, texts


def bench_export_model(ckpt: Path, utts: list, rounds: int = 3) -> dict:
    """Torch fp32/int8 against the light runtime fp32/int8 for one checkpoint."""
    from asr.checkpoint import quantize_int8
    from asr.export import export_onnx
    from asr.lite import load_lite
    from asr.recognizer import load
    from asr.score import error_rates

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        export_onnx(ckpt, tmp)
        rec = load(ckpt)
        variants = {"torch_fp32": rec, "torch_int8": replace(rec, model=quantize_int8(rec.model)),
                    "lite_fp32": load_lite(tmp), "lite_int8": load_lite(tmp, int8=True)}
        files = [u.audio for u in utts]
        for rec_ in variants.values():          # warm up every path
            _rtf_rounds({"w": rec_}, files[:2], 1)
        rtf, texts = _rtf_rounds(variants, files, rounds)
        out = {"model": str(ckpt), "layers": rec.model.cfg.layers, "hidden": rec.model.cfg.hidden,
               "files": len(files), "mean_file_s": round(sum(u.duration for u in utts) / len(utts), 2),
               **{f"rtf_{k}_1core": v for k, v in rtf.items()},
               "ratio_lite_fp32_vs_torch_fp32": round(rtf["lite_fp32"] / rtf["torch_fp32"], 3),
               "ratio_lite_int8_vs_torch_fp32": round(rtf["lite_int8"] / rtf["torch_fp32"], 3),
               "same_text_lite_fp32_vs_torch_fp32": sum(a == b for a, b in zip(texts["lite_fp32"], texts["torch_fp32"])),
               "import_load_s_lite_fp32": load_seconds(LOAD_LITE, Path(tmp), False),
               "import_load_s_lite_int8": load_seconds(LOAD_LITE, Path(tmp), True),
               "import_load_s_torch_fp32": load_seconds(LOAD_TORCH, ckpt, False)}
        if any(u.text for u in utts) and "untrained" not in str(ckpt):
            refs = {u.id: u.text for u in utts}
            for k, t in texts.items():
                out[f"wer_{k}"] = round(error_rates(refs, dict(zip(refs, t))).wer, 2)
    return out


def bench_export(model_path: Path, test_utts: list, n_files: int) -> dict:
    """The trained model (when there is one) and an untrained 4x320 model, on test files of
    1.5-2.5 s."""
    utts = [u for u in test_utts if 1.5 <= u.duration <= 2.5][:n_files]
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        big = _random_checkpoint(Path(tmp) / "untrained-4x320.pt", 4, 320)
        out["4x320_untrained"] = bench_export_model(big, utts)
        if model_path.exists():
            out["trained"] = bench_export_model(model_path, utts)
    return out


def bench_tensorboard(cfg, feats, targets, seconds: float, threads: int, rounds: int = 6) -> dict:
    """Training throughput (real batches of the recipe's data, the real step) with TensorBoard
    logging on (every ``train.log_every`` steps), off, and off again (an A/A control that shows
    the noise of the comparison): every round runs the same batches (about ``seconds`` of
    work) from the same weights and optimizer state once per setting, in rotating order; ratios
    are medians of the rounds' paired ratios. ``monitor_share`` is the measured time inside the
    logging calls over the time of the logged runs (the direct cost)."""
    import copy
    import random
    import statistics

    from asr.batching import BatchIterator
    from asr.dataset import TrainingSet
    from asr.monitor import TrainMonitor
    from asr.runtime import Runtime
    from asr.text import CharTokenizer
    from asr.train import make_trainer, train_step

    torch.set_num_threads(threads)
    it = BatchIterator(feats, targets, cfg.train.max_batch_frames, cfg.augment, seed=0)
    plan = it.epoch(0)
    with tempfile.TemporaryDirectory() as tmp:
        head = TrainingSet([str(i) for i in range(8)], list(feats[:8]), list(targets[:8]), [""] * 8)
        tr = make_trainer(cfg, head, Path(tmp), CharTokenizer(), Runtime.create("cpu", "off", threads))
        monitors = {"on": TrainMonitor(tmp, True, cfg.train.log_every), "off": TrainMonitor(tmp, False),
                    "off_again": TrainMonitor(tmp, False)}
        batches = [it.collate(plan[k], random.Random(k), 0) for k in range(len(plan))]
        t0, n = time.perf_counter(), 0
        while time.perf_counter() - t0 < seconds and n < len(batches):    # how many batches fill `seconds`
            train_step(tr, *batches[n])
            n += 1
        start = copy.deepcopy((tr.model.state_dict(), tr.opt.state_dict()))
        names, took, step, in_monitor = list(monitors), {k: [] for k in monitors}, 0, 0.0
        for r in range(rounds):
            for name in names[r % 3:] + names[: r % 3]:
                tr.model.load_state_dict(start[0])
                tr.opt.load_state_dict(start[1])
                t0 = time.perf_counter()
                for x, lens, tgt, tgt_lens in batches[:n]:
                    loss = train_step(tr, x, lens, tgt, tgt_lens)
                    step += 1
                    t1 = time.perf_counter()
                    monitors[name].step(step, loss or 0.0, tr.opt.param_groups[0]["lr"], tr.grad_norm)
                    in_monitor += (time.perf_counter() - t1) if name == "on" else 0.0
                took[name].append(time.perf_counter() - t0)
        monitors["on"].close()
    frames = sum(int(b[1].sum()) for b in batches[:n])

    def ratio(a: str, b: str) -> float:
        return round(statistics.median(x / y for x, y in zip(took[b], took[a])), 4)
    return {"threads": threads, "log_every": cfg.train.log_every, "rounds": rounds, "batches_per_round": n,
            "frames_per_s_tensorboard_on": round(frames / min(took["on"])),
            "frames_per_s_tensorboard_off": round(frames / min(took["off"])),
            "ratio_on_vs_off_median": ratio("on", "off"), "ratio_off_again_vs_off_median": ratio("off_again", "off"),
            "monitor_share": round(in_monitor / sum(took["on"]), 6)}
