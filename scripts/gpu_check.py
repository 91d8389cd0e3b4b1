#!/usr/bin/env python3
"""A short CUDA check of the training and decoding paths, as one JSON line (rank 0).

Run under torchrun (scripts/gpu_check.sh does): the runtime joins the process group with the
backend of its device (NCCL on CUDA), trains a few bf16 autocast steps of the 4x320 model on
synthetic batches through DistributedDataParallel, checks that a collective ran on the GPU,
decodes on the device, and times training and decoding throughput against the CPU (fp32, 2
threads) in the same run. ``--device cpu`` runs the same path on the CPU (gloo) as a dry run.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asr.dataset import TrainingSet  # noqa: E402
from asr.features import FeatureConfig  # noqa: E402
from asr.model import BiLSTMCTC, ModelConfig  # noqa: E402
from asr.recipe import RecipeConfig  # noqa: E402
from asr.recognizer import Recognizer  # noqa: E402
from asr.runtime import Runtime, backend_for  # noqa: E402
from asr.text import CharTokenizer  # noqa: E402
from asr.train import TrainConfig, make_trainer, train_step  # noqa: E402

FRAMES, BATCH = 600, 16          # 6-second utterances


def synthetic_set(n: int, n_mels: int) -> TrainingSet:
    g = torch.Generator().manual_seed(0)
    tok = CharTokenizer()
    texts = ["one two three four five"] * n
    return TrainingSet([str(i) for i in range(n)], [torch.randn(FRAMES, n_mels, generator=g) for _ in range(n)],
                       [tok.encode(t) for t in texts], texts)


def train_throughput(cfg: RecipeConfig, rt: Runtime, steps: int) -> dict:
    """Audio seconds per wall second of DDP training steps (after 2 warm-up steps)."""
    data = synthetic_set(BATCH, cfg.features.n_mels)
    tr = make_trainer(cfg, data, Path(tempfile.mkdtemp()), CharTokenizer(), rt)
    x = torch.stack([f.float() for f in data.feats])
    lens = torch.full((BATCH,), FRAMES)
    targets = torch.tensor([i for t in data.targets for i in t])
    tgt_lens = torch.tensor([len(t) for t in data.targets])
    losses = []
    for step in range(steps + 2):
        if step == 2:
            if rt.device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        losses.append(train_step(tr, x, lens, targets, tgt_lens))
    if rt.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return {"audio_s_per_s": round(steps * BATCH * FRAMES / 100 / seconds, 1), "steps": steps,
            "first_loss": round(losses[0], 3), "last_loss": round(losses[-1], 3),
            "finite": all(loss is not None for loss in losses), "precision": rt.precision}


@torch.inference_mode()
def decode_throughput(model_cfg: ModelConfig, device: torch.device, n: int = 64) -> dict:
    """Audio seconds per second of batched greedy decoding on ``device`` (fp32)."""
    model = BiLSTMCTC(model_cfg, 80, len(CharTokenizer())).to(device).eval()
    rec = Recognizer.from_model(model, FeatureConfig(), CharTokenizer())
    feats = synthetic_set(n, 80).feats
    rec.decode_features(feats[:4])
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    hyps = rec.decode_features(feats, batch_frames=n * FRAMES)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return {"audio_s_per_s": round(n * FRAMES / 100 / (time.perf_counter() - t0), 1),
            "hypotheses": len(hyps), "device": str(rec.device)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--steps", type=int, default=10)
    args = p.parse_args()
    model_cfg = ModelConfig(stack=3, hidden=320, layers=4, dropout=0.1)
    amp = "bf16" if args.device == "cuda" else "off"
    cfg = RecipeConfig(model=model_cfg, train=TrainConfig(device=args.device, amp=amp, threads=2, max_batch_frames=BATCH * FRAMES,
                                                          progress=False, warmup_steps=2))
    rt = Runtime.create(cfg.train.device, cfg.train.amp, cfg.train.threads)
    out = {"device": str(rt.device), "world": rt.dist.world, "backend": None,
           "gpu": torch.cuda.get_device_name(rt.device) if rt.device.type == "cuda" else None,
           "torch": torch.__version__}
    if not torch.distributed.is_initialized() and "RANK" in os.environ:
        # one rank under torchrun: Runtime skips the process group, so join one here to check
        # that the device's backend (NCCL on CUDA) really runs a collective on this device
        torch.distributed.init_process_group(backend=backend_for(rt.device))
    if torch.distributed.is_initialized():
        t = torch.ones(1, device=rt.dist.device)
        torch.distributed.all_reduce(t)
        out.update(backend=torch.distributed.get_backend(), all_reduce_on=str(t.device),
                   all_reduce_sum=t.item())                   # == world size when the collective ran
    out["train"] = train_throughput(cfg, rt, args.steps)
    out["decode"] = decode_throughput(model_cfg, rt.device)
    if rt.device.type == "cuda" and rt.dist.main:
        cpu = Runtime(torch.device("cpu"), replace(rt.dist, world=1, rank=0), "off", 2)
        cpu_cfg = replace(cfg, train=replace(cfg.train, device="cpu", amp="off"))
        out["cpu_train"] = train_throughput(cpu_cfg, cpu, 2)
        out["cpu_decode"] = decode_throughput(model_cfg, torch.device("cpu"), n=16)
        out["train_speedup_vs_cpu"] = round(out["train"]["audio_s_per_s"] / out["cpu_train"]["audio_s_per_s"], 1)
        out["decode_speedup_vs_cpu"] = round(out["decode"]["audio_s_per_s"] / out["cpu_decode"]["audio_s_per_s"], 1)
    if rt.dist.main:
        print(json.dumps(out))
    rt.dist.barrier()
    return 0 if out["train"]["finite"] else 1


if __name__ == "__main__":
    sys.exit(main())
