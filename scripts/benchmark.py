#!/usr/bin/env python3
"""Benchmark the pipeline against the hardware, side by side in one run (JSON + markdown table).

    python scripts/benchmark.py [--config recipes/digits/config.yaml] [--sections ...] [--out bench.json]

Sections (all by default):
  gemm         fp32 GEMM peak, 1 and 2 threads (and bf16 when training runs bf16 autocast)
  model        model-only bound: forward+backward of the configured model on ideal full batches
  training     the real training step on the recipe's cached features (bucketing, augmentation,
               padding, CTC, clipping, Adam), 1 and 2 threads; GFLOP/s and % of the GEMM peak
  naive        baseline: random batches padded to the longest, features recomputed from audio
               every batch, no frame stacking
  transcribe   batch-1 end-to-end RTF (file -> text with word times) per decoder of the recipe
               (greedy; beam and beam+LM when its decode.methods and LM files exist), on short
               files and on one long recording; feature extraction speed
  memory       peak RSS of a training run and of transcribing a file (separate processes)
  scoring      scoring 100k utterances on one core
  stream       streaming WER vs latency (chunk, look-ahead), final/partial latency, streaming
               RTF (scripts/bench_live.py)
  serve        `asr serve` under N concurrent real-time streams and a burst of uploads
Training data: the recipe's feature cache when it exists (run the recipe's stages 0-1 first).
With train.amp=bf16 on a CPU without native bf16 (which asr refuses to train on), the bf16 GEMM
and the training sections are skipped, each with {"skipped": "no native bf16"} in the JSON.
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asr.audio import load_audio  # noqa: E402
from asr.config import parse_override  # noqa: E402
from asr.batching import BatchIterator, pad_batch  # noqa: E402
from asr.data import read_manifest  # noqa: E402
from asr.dataset import TrainingSet  # noqa: E402
from asr.errors import AsrError  # noqa: E402
from asr.features import FeatureExtractor, load_feature_cache  # noqa: E402
from asr.model import BiLSTMCTC, count_parameters  # noqa: E402
from asr.recipe import RecipePaths, load_config  # noqa: E402
from asr.results import code_version  # noqa: E402
from asr.runtime import Runtime, precision_name, resolve_amp  # noqa: E402
from asr.text import CharTokenizer  # noqa: E402
from asr.train import make_trainer, train_step  # noqa: E402
from bench_live import GRID, stream_grid  # noqa: E402

NO_BF16 = "no native bf16"     # train.amp=bf16 on a CPU without AMX / AVX512-BF16: refused by asr


def model_flops_per_frame(cfg, n_mels: int, vocab: int) -> float:
    """Forward FLOPs per *input* (10 ms) frame: LSTM gates (input + recurrent GEMMs) and output.
    Training (forward + backward) costs about 3x this."""
    h, d, total = cfg.hidden, n_mels * cfg.stack, 0.0
    for _ in range(cfg.layers):
        total += 2 * 2 * 4 * h * (d + h)          # 2 directions, multiply-add, 4 gates
        d = 2 * h
    total += 2 * d * vocab
    return total / cfg.stack


def timed(fn, seconds: float, warmup: int = 2):
    """Run ``fn`` (returning work units) until ``seconds`` pass; returns units per second."""
    for _ in range(warmup):
        fn()
    units, t0 = 0.0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        units += fn()
    return units / (time.perf_counter() - t0)


def training_amp(cfg) -> str | None:
    """``train.amp`` resolved for the CPU, or None when it asks for bf16 on a CPU without native
    bf16 (asr refuses to train so: oneDNN has no emulated bf16 LSTM)."""
    try:
        return resolve_amp(cfg.train.amp, torch.device("cpu"))
    except AsrError:
        return None


def bench_gemm(seconds: float, bf16: bool) -> dict:
    """fp32 GEMM peak (and bf16, the precision of bf16 autocast training), 1 and 2 threads."""
    out = {}
    for name, dtype in (("", torch.float32), ("bf16_", torch.bfloat16))[: 2 if bf16 else 1]:
        a, b = torch.randn(1024, 1024, dtype=dtype), torch.randn(1024, 1024, dtype=dtype)
        for threads in (1, 2):
            torch.set_num_threads(threads)
            out[f"{name}gflops_{threads}t"] = round(timed(lambda: (a @ b, 2 * 1024 ** 3)[1], seconds) / 1e9, 1)
    return out


def load_train_data(cfg, limit: int | None = None):
    paths = RecipePaths.of(cfg)
    cache = load_feature_cache(paths.feature_cache(cfg.train_split))
    texts = {u.id: u for u in read_manifest(paths.manifest(cfg.train_split))}
    tok = CharTokenizer()
    ids = cache["ids"][:limit]
    return cache["feats"][: len(ids)], [tok.encode(texts[i].text) for i in ids], [texts[i] for i in ids]


def train_runtime(cfg, threads: int) -> Runtime:
    """The runtime training would use (``train.device``, ``train.amp``) with ``threads`` CPU
    threads; raises AsrError for train.amp=bf16 on a CPU without native bf16."""
    return Runtime.create(cfg.train.device, cfg.train.amp, threads)


def bench_trainer(cfg, train_set: TrainingSet, threads: int):
    return make_trainer(cfg, train_set, Path(tempfile.mkdtemp()), CharTokenizer(), train_runtime(cfg, threads))


def bench_model_bound(cfg, seconds: float, threads: int) -> dict:
    """Ideal batches: every utterance the same length (3 s), as many as the frame cap allows."""
    torch.set_num_threads(threads)
    t_len = 300
    b = max(1, cfg.train.max_batch_frames // t_len)
    tr = bench_trainer(cfg, _fake_set(b, t_len, cfg.features.n_mels), threads)
    x = torch.randn(b, t_len, cfg.features.n_mels)
    lens = torch.full((b,), t_len)
    tgt_lens = torch.full((b,), 20)
    targets = torch.randint(1, 29, (int(tgt_lens.sum()),))
    fps = timed(lambda: (train_step(tr, x, lens, targets, tgt_lens), b * t_len)[1], seconds)
    return _throughput(cfg, fps, threads)


def _fake_set(n, t_len, n_mels):
    return TrainingSet([str(i) for i in range(n)], [torch.randn(t_len, n_mels)] * n, [[1, 2]] * n, ["ab"] * n)


def _throughput(cfg, frames_per_s: float, threads: int) -> dict:
    flops = 3 * model_flops_per_frame(cfg.model, cfg.features.n_mels, 29) * frames_per_s
    return {"threads": threads, "audio_s_per_s": round(frames_per_s * cfg.features.hop_ms / 1000, 1),
            "frames_per_s": round(frames_per_s), "gflops": round(flops / 1e9, 1)}


BENCH_EPOCH = 99       # the epoch whose draws the training sections use: past any augmentation ramp


class _Collated(torch.utils.data.Dataset):
    """Batches of a plan, collated where the DataLoader puts them (a loader worker)."""

    def __init__(self, it, plan):
        self.it, self.plan = it, plan

    def __len__(self):
        return len(self.plan)

    def __getitem__(self, k):
        return self.it.collate(self.plan[k], self.it.batch_rng(0, k), BENCH_EPOCH)


def _batches(it, plan, workers: int):
    """Collated batches of ``plan`` forever: in the loop, or built ahead in loader workers (as
    ``train.workers`` does in the recipe)."""
    if not workers:
        rng, k = random.Random(0), 0
        while True:
            yield it.collate(plan[k % len(plan)], rng, BENCH_EPOCH)
            k += 1
    while True:
        yield from torch.utils.data.DataLoader(_Collated(it, plan), batch_size=None, num_workers=workers,
                                               prefetch_factor=2, persistent_workers=False)


def bench_training(cfg, feats, targets, seconds: float, threads: int, workers: int = 0) -> dict:
    """The real training step over bucketed, augmented batches of the recipe's data."""
    torch.set_num_threads(threads)
    tr = bench_trainer(cfg, _fake_set(8, 300, cfg.features.n_mels), threads)
    it = BatchIterator(feats, targets, cfg.train.max_batch_frames, cfg.augment, seed=0)
    source = _batches(it, it.epoch(BENCH_EPOCH), workers)

    def step():
        x, lens, tgt, tgt_lens = next(source)
        train_step(tr, x, lens, tgt, tgt_lens)
        return int(lens.sum())
    return _throughput(cfg, timed(step, seconds), threads)


def bench_wave(cfg, feats, targets, utts, seconds: float, threads: int, rounds: int = 3) -> dict:
    """Training throughput without and with the recipe's waveform augmentation (``augment.wave``),
    the augmented share loaded, augmented and featurized in the loop or in one loader worker
    (``train.workers: 1``); the three interleaved over ``rounds`` rounds (machine drift hits
    each alike), the median round of each."""
    from asr.augment import WaveAugmenter, babble_bank, rir_bank
    from asr.data import load_utterance_audio
    from asr.dataset import WaveAugmentedFeatures

    w = cfg.augment.wave
    if not w.enabled:
        return {"skipped": "augment.wave is off in this config"}
    small = replace(w, rir_bank=min(w.rir_bank, 8), babble_bank=min(w.babble_bank, 8))
    rirs = rir_bank(small, seed=0)[0] if w.reverb_prob > 0 else []
    babble = babble_bank(lambda i: load_utterance_audio(utts[i]), len(utts), small, 0)[0]
    wave = WaveAugmentedFeatures(feats, utts, WaveAugmenter(w, rirs, babble), cfg.features, cfg.data.max_duration_s)
    variants = {"training_2t": (feats, 0), "training_wave_2t": (wave, 0), "training_wave_2t_worker": (wave, 1)}
    runs: dict[str, list[dict]] = {k: [] for k in variants}
    for _ in range(rounds):
        for name, (data, workers) in variants.items():
            runs[name].append(bench_training(cfg, data, targets, seconds / rounds, threads, workers))
    return {name: {**sorted(rs, key=lambda d: d["frames_per_s"])[len(rs) // 2], "rounds_frames_per_s":
                   [d["frames_per_s"] for d in rs]} for name, rs in runs.items()}


def bench_naive(cfg, utts, targets, seconds: float, threads: int) -> dict:
    """Random batches padded to the longest, features recomputed from audio, no stacking."""
    torch.set_num_threads(threads)
    naive = replace(cfg, model=replace(cfg.model, stack=1))
    tr = bench_trainer(naive, _fake_set(8, 300, cfg.features.n_mels), threads)
    extractor = FeatureExtractor(cfg.features)
    rng = random.Random(0)
    n = max(1, cfg.train.max_batch_frames // 400)      # batch size for typical (4 s worst-case) lengths

    def step():
        idx = rng.sample(range(len(utts)), n)
        feats = [extractor(load_audio(utts[i].audio)) for i in idx]
        x, lens = pad_batch(feats)
        tgt = torch.tensor([t for i in idx for t in targets[i]])
        train_step(tr, x, lens, tgt, torch.tensor([len(targets[i]) for i in idx]))
        return int(lens.sum())
    return _throughput(cfg, timed(step, seconds, warmup=1), threads)


def bench_decoders(cfg, rec) -> dict:
    """Decoders of the recipe's ``decode.methods`` (beam_lm only when its LM files exist);
    None stands for the recognizer's own (greedy) decoder."""
    from asr.recipe import Recipe, resolved_decode

    d = resolved_decode(Recipe(cfg, RecipePaths.of(cfg), Runtime.create("cpu", "off", torch.get_num_threads())))
    out = {}
    for method in d.compared:
        if method == "beam_lm" and not (Path(d.lexicon).is_file() and Path(d.lm).is_file()):
            print(f"[bench] beam_lm skipped: no {d.lexicon} / {d.lm} (run the recipe's LM stage)", file=sys.stderr)
            continue
        out[method] = None if method == "greedy" else rec.make_decoder(d, method)
    return out


def joined_recording(utts, seed: int = 0):
    """One recording: the utterances at one level, 0.3-1.0 s pauses of faint noise between."""
    import numpy as np

    rng = np.random.default_rng(seed)
    parts = []
    for u in utts:
        x = load_audio(u.audio)
        parts += [0.5 * x / max(float(np.abs(x).max()), 1e-6),
                  (0.0005 * rng.standard_normal(int(rng.uniform(0.3, 1.0) * 16000))).astype(np.float32)]
    return np.concatenate(parts)


def bench_transcribe(cfg, model_path: Path | None, utts, n_files: int) -> dict:
    """Batch-1 end-to-end RTF per decoder, fp32 and int8, on each file and on one recording of
    them joined (cut at pauses, segments decoded one at a time); WER when the model is trained."""
    import asr
    from asr.checkpoint import quantize_int8
    from asr.recognizer import Recognizer
    from asr.score import error_rates
    from asr.transcribe import SegmentOptions, transcribe

    torch.set_num_threads(1)
    if model_path and model_path.exists():
        rec, which = asr.load(model_path), str(model_path)
    else:
        rec = Recognizer.from_model(BiLSTMCTC(cfg.model, cfg.features.n_mels, 29).eval(), cfg.features,
                                    CharTokenizer())
        which = "untrained"
    out = {"model": which, "layers": cfg.model.layers, "hidden": cfg.model.hidden, "files": min(n_files, len(utts))}
    decoders = bench_decoders(cfg, rec) if which != "untrained" else {"greedy": None}
    recording = joined_recording(utts[:n_files])
    out["recording_s"] = round(recording.size / 16000, 1)
    for name, m in (("fp32", rec), ("int8", replace(rec, model=quantize_int8(rec.model)))):
        t0 = time.perf_counter()
        r = transcribe(m, recording, opts=SegmentOptions(batch_segments=1))
        out[f"rtf_greedy_recording_batch1_1core_{name}"] = round((time.perf_counter() - t0) / r.duration, 5)
        for method, decoder in decoders.items():
            md = m.with_decoder(decoder)          # None: the recognizer's greedy decoder
            for u in utts[:3]:
                transcribe(md, u.audio)
            t0 = time.perf_counter()
            results = {u.id: transcribe(md, u.audio) for u in utts[:n_files]}
            audio = sum(r.duration for r in results.values())
            out[f"rtf_{method}_batch1_1core_{name}"] = round((time.perf_counter() - t0) / audio, 5)
            if which != "untrained":
                out[f"wer_{method}_{name}"] = round(error_rates({u.id: u.text for u in utts[:n_files]},
                                                               {k: r.text for k, r in results.items()}).wer, 2)
    samples = [load_audio(u.audio) for u in utts[:n_files]]
    extractor = FeatureExtractor(cfg.features)
    t0 = time.perf_counter()
    for x in samples:
        extractor(x)
    out["features_x_realtime_1core"] = round(sum(x.size for x in samples) / 16000 / (time.perf_counter() - t0))
    return out


PEAK_RSS = """
def peak_mb():
    # VmHWM: peak resident set of this process image (ru_maxrss would carry the parent's over exec)
    return int(next(x for x in open("/proc/self/status") if x.startswith("VmHWM")).split()[1]) / 1024
"""
MEMORY_CHILD = PEAK_RSS + """
import sys, torch
sys.path.insert(0, {root!r})
sys.argv = ["benchmark.py"]
import benchmark as B
from asr.recipe import load_config
cfg = load_config({config!r})
feats, targets, utts = B.load_train_data(cfg)
B.bench_training(cfg, feats, targets, 20.0, cfg.train.threads)
print(peak_mb())
"""


def bench_memory(config: str, model_path: Path, audio: str) -> dict:
    if training_amp(load_config(config)) is None:      # the child trains with the file's config
        out = {"training_peak_rss_mb": {"skipped": NO_BF16}}
    else:
        code = MEMORY_CHILD.format(root=str(ROOT / "scripts"), config=config)
        train_mb = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                        cwd=ROOT).stdout.split()[-1])
        out = {"training_peak_rss_mb": round(train_mb)}
    if model_path.exists():
        code = PEAK_RSS + "import sys, asr\nasr.load(sys.argv[1]).transcribe(sys.argv[2])\nprint(peak_mb())"
        mb = subprocess.run([sys.executable, "-c", code, str(model_path), audio], capture_output=True,
                            text=True, check=True, cwd=ROOT).stdout.split()[-1]
        out["transcribe_peak_rss_mb"] = round(float(mb))
    return out


def bench_scoring(n_utts: int) -> dict:
    """Full ``score_texts`` (sclite alignment, CER, reports, 1000 bootstrap resamples, files)."""
    from asr.score import score_texts

    torch.set_num_threads(1)
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(2000)]
    refs, hyps = {}, {}
    for i in range(n_utts):
        ref = [rng.choice(vocab) for _ in range(rng.randint(0, 20))]
        hyp = [w if rng.random() > 0.15 else rng.choice(vocab) for w in ref if rng.random() > 0.05]
        refs[f"spk{i % 300}-{i}"], hyps[f"spk{i % 300}-{i}"] = " ".join(ref), " ".join(hyp)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        report = score_texts(refs, hyps, out_dir=tmp)
        elapsed = time.perf_counter() - t0
    return {"utterances": n_utts, "ref_words": report["summary"]["ref_words"], "seconds": round(elapsed, 2)}


def measured(r: dict, key: str) -> bool:
    """Whether throughput section ``key`` ran (not absent, not skipped)."""
    return "frames_per_s" in r.get(key, {})


def markdown(r: dict) -> str:
    rows = []
    if "model_bound" in r:
        rows.append(("model-only bound, 2 threads", f"{r['model_bound']['audio_s_per_s']} audio s/s, "
                     f"{r['model_bound']['gflops']} GFLOP/s" if measured(r, "model_bound")
                     else f"skipped: {r['model_bound'].get('skipped')}"))
    for k in ("training_1t", "training_2t", "training_wave_2t", "training_wave_2t_worker", "naive_2t"):
        if k in r:
            rows.append((k.replace("_", ", "), f"{r[k]['audio_s_per_s']} audio s/s, {r[k]['gflops']} GFLOP/s"
                         if measured(r, k) else f"skipped: {r[k].get('skipped')}"))
    for k, v in r.get("ratios", {}).items():
        rows.append((k, str(v)))
    for sec in ("transcribe", "memory", "scoring_1core", "gemm"):
        for k, v in r.get(sec, {}).items():
            rows.append((f"{sec}: {k}", str(v)))
    return "| measure | value |\n|---|---|\n" + "\n".join(f"| {a} | {b} |" for a, b in rows)


def live_sections(r: dict, cfg, model_path: Path, sections: set, args) -> None:
    """The streaming and server sections (they need a trained model: the recipe's best.pt)."""
    import asr
    import bench_live

    if not model_path.exists():
        r["stream"] = r["serve"] = {"skipped": f"no trained model at {model_path}"}
        return
    test = read_manifest(RecipePaths.of(cfg).manifest(cfg.test_splits[0] if cfg.test_splits else cfg.dev_split))
    if "stream" in sections:
        rec = asr.load(model_path)
        lm = {k: v for k, v in bench_decoders(cfg, rec).items() if k == "beam_lm"}
        from asr.recipe import Recipe, resolved_decode

        d = resolved_decode(Recipe(cfg, RecipePaths.of(cfg), Runtime.create("cpu", "off", 1)), tuned=True) if lm else None
        r["stream"] = bench_live.bench_stream(rec, test, args.stream_utts,
                                              (lambda: rec.make_decoder(d, "beam_lm")) if lm else None,
                                              args.stream_parts.split(","), args.stream_block, args.stream_lead,
                                              args.stream_grid or GRID)
    if "serve" in sections:
        r["serve"] = bench_live.bench_serve(model_path, test, args.serve_streams, args.serve_seconds,
                                            args.serve_uploads, args.serve_args.split())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="recipes/digits/config.yaml")
    p.add_argument("--seconds", type=float, default=20.0, help="timed seconds per throughput measure")
    p.add_argument("--files", type=int, default=100, help="files transcribed for the RTF")
    p.add_argument("--scoring-utts", type=int, default=100000)
    p.add_argument("--sections", default="gemm,model,training,wave,naive,transcribe,memory,scoring,stream,serve,"
                   "export,tensorboard")
    p.add_argument("--export-files", type=int, default=60, help="~2 s test files per export variant")
    p.add_argument("--stream-utts", type=int, default=200, help="test utterances streamed per setting")
    p.add_argument("--stream-parts", default="curve,latency,two_pass,endpoints",
                   help="of the stream section: curve (WER vs latency; latency and two_pass run after it) "
                        "and/or endpoints")
    p.add_argument("--stream-block", type=float, default=0.1,
                   help="seconds of audio per block a streaming client sends (latencies, endpoint sweep)")
    p.add_argument("--stream-lead", type=float, default=0.0,
                   help="seconds of each test utterance's background streamed before it (a microphone already open)")
    p.add_argument("--stream-grid", type=stream_grid, default=None, metavar="C+R,...",
                   help="(chunk, look-ahead) settings of the WER-vs-latency curve, e.g. 4+9,2+11 (default: all)")
    p.add_argument("--serve-streams", type=int, default=16)
    p.add_argument("--serve-seconds", type=float, default=60.0)
    p.add_argument("--serve-uploads", type=int, default=100)
    p.add_argument("--serve-args", default="--int8 --workers 2", help="extra `asr serve` arguments")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. --set model.layers=4 --set model.hidden=320")
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args()
    if args.stream_block < 0.001 or args.stream_lead < 0:
        p.error(f"--stream-block must be >= 0.001 s and --stream-lead >= 0 (got {args.stream_block}, {args.stream_lead})")
    sections = set(args.sections.split(","))
    cfg = load_config(args.config, dict(parse_override(o) for o in args.set))
    model_path = Path(cfg.exp_dir) / "best.pt"
    if args.set and any(o.startswith("model.") for o in args.set):
        model_path = Path("/nonexistent")           # a different architecture: time an untrained one
    r = {"code_version": code_version(), "config": args.config, "overrides": args.set, "torch": torch.__version__,
         "machine": platform.machine(), "model": {**vars(cfg.model), "parameters": count_parameters(
             BiLSTMCTC(cfg.model, cfg.features.n_mels, 29))}}
    amp = training_amp(cfg)
    can_train = amp is not None          # False: train.amp=bf16 without native bf16; training sections skipped
    precision = amp if can_train else "bf16"
    r["training_precision"] = precision_name(precision)
    if not can_train:
        print(f"[bench] train.amp=bf16 but this CPU has {NO_BF16}: bf16 GEMM and training sections skipped",
              file=sys.stderr)
    skipped = {"skipped": NO_BF16}
    if "gemm" in sections:
        r["gemm"] = bench_gemm(args.seconds / 4, precision == "bf16" and can_train)
        if not can_train:
            r["gemm"]["bf16"] = skipped
    if "model" in sections:
        r["model_bound"] = bench_model_bound(cfg, args.seconds, 2) if can_train else skipped
    if sections & {"training", "wave", "naive", "transcribe", "memory", "tensorboard"}:
        feats, targets, utts = load_train_data(cfg)
    if "training" in sections:
        r["training_1t"] = bench_training(cfg, feats, targets, args.seconds, 1) if can_train else skipped
        r["training_2t"] = bench_training(cfg, feats, targets, args.seconds, 2) if can_train else skipped
    if "wave" in sections:           # its own interleaved training_2t replaces the one above
        r.update(bench_wave(cfg, feats, targets, utts, 3 * args.seconds, 2) if can_train else
                 {"training_wave_2t": skipped})
    if "naive" in sections:
        r["naive_2t"] = bench_naive(cfg, utts, targets, args.seconds, 2) if can_train else skipped
    ratios = {}
    if measured(r, "training_2t") and measured(r, "model_bound"):
        ratios["training / model bound"] = round(r["training_2t"]["frames_per_s"] / r["model_bound"]["frames_per_s"], 3)
    if measured(r, "training_2t") and measured(r, "naive_2t"):
        ratios["training / naive"] = round(r["training_2t"]["frames_per_s"] / r["naive_2t"]["frames_per_s"], 2)
    if measured(r, "training_2t") and measured(r, "training_wave_2t"):
        ratios["training with waveform augmentation / without"] = round(
            r["training_wave_2t"]["frames_per_s"] / r["training_2t"]["frames_per_s"], 3)
    if measured(r, "training_2t") and measured(r, "training_wave_2t_worker"):
        ratios["training with waveform augmentation in a loader worker / without"] = round(
            r["training_wave_2t_worker"]["frames_per_s"] / r["training_2t"]["frames_per_s"], 3)
    if measured(r, "training_2t") and measured(r, "training_1t"):
        ratios["2 threads / 1 thread"] = round(r["training_2t"]["frames_per_s"] / r["training_1t"]["frames_per_s"], 2)
    if measured(r, "training_2t") and "gemm" in r:
        peak = r["gemm"]["bf16_gflops_2t" if precision == "bf16" else "gflops_2t"]
        ratios[f"training GFLOP/s / 2-thread {'bf16' if precision == 'bf16' else 'fp32'} GEMM peak"] = round(
            r["training_2t"]["gflops"] / peak, 3)
    if ratios:
        r["ratios"] = ratios
    if "transcribe" in sections:
        test = read_manifest(RecipePaths.of(cfg).manifest(cfg.test_splits[0] if cfg.test_splits else cfg.dev_split))
        r["transcribe"] = bench_transcribe(cfg, model_path, test, args.files)
    if "memory" in sections:
        r["memory"] = bench_memory(args.config, model_path, utts[0].audio)
    if "scoring" in sections:
        r["scoring_1core"] = bench_scoring(args.scoring_utts)
    if sections & {"stream", "serve"}:
        live_sections(r, cfg, model_path, sections, args)
    if "tensorboard" in sections and can_train:
        import bench_ship

        r["tensorboard"] = bench_ship.bench_tensorboard(cfg, feats, targets, args.seconds, 2)
    if "export" in sections:
        import bench_ship

        test = read_manifest(RecipePaths.of(cfg).manifest(cfg.test_splits[0] if cfg.test_splits else cfg.dev_split))
        r["export"] = bench_ship.bench_export(model_path, test, args.export_files)
    text = json.dumps(r, indent=1)
    print(text)
    print(markdown(r), file=sys.stderr)
    if args.out:
        Path(args.out).write_text(text + "\n")
        Path(args.out).with_suffix(".md").write_text(markdown(r) + "\n")


if __name__ == "__main__":
    main()
