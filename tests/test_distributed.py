"""2-process torchrun (gloo, CPU) training matches 1-process training on the same global batches."""
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from asr.checkpoint import load_checkpoint
from asr.text import CharTokenizer


ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import sys
from dataclasses import replace
from pathlib import Path
sys.path.insert(0, {root!r})
from asr.text import CharTokenizer
from asr.cli import setup_logging
from asr.train import train
from tests.conftest import toy_cfg as _cfg, toy_data as _data
exp = Path(sys.argv[1])
cfg = _cfg(exp, epochs=7)
cfg = replace(cfg, train=replace(cfg.train, checkpoint_every=0, lr=3e-3))
setup_logging()
train(cfg, _data(64, 0), _data(16, 1), exp, CharTokenizer())
"""


def _loss(model, data) -> float:
    tok = CharTokenizer()
    from asr.batching import pad_batch
    x, lens = pad_batch([f.float() for f in data.feats])
    with torch.no_grad():
        lp, out_lens = model(x, lens)
    targets = torch.tensor([i for t in data.texts for i in tok.encode(t)])
    return F.ctc_loss(lp.transpose(0, 1), targets, out_lens, torch.tensor([len(t) for t in data.texts]),
                      reduction="sum").item() / len(data.texts)


def test_two_process_torchrun_matches_single_process(tmp_path, data):
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(root=str(ROOT)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, str(script), str(tmp_path / "one")], check=True, env=env, cwd=ROOT,
                   capture_output=True)
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(script), str(tmp_path / "two")], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "2 process(es)" in res.stderr
    one = torch.load(tmp_path / "one/last.pt", weights_only=True)
    two = torch.load(tmp_path / "two/last.pt", weights_only=True)
    steps = one["scheduler"]["last_epoch"]
    assert steps >= 20 and two["scheduler"]["last_epoch"] == steps
    data = data(64, 0)
    l1 = _loss(load_checkpoint(tmp_path / "one/last.pt").model, data)
    l2 = _loss(load_checkpoint(tmp_path / "two/last.pt").model, data)
    assert abs(l1 - l2) < 1e-4, (l1, l2)
    h1 = [json.loads(x)["loss"] for x in (tmp_path / "one/train_log.jsonl").read_text().splitlines()]
    h2 = [json.loads(x)["loss"] for x in (tmp_path / "two/train_log.jsonl").read_text().splitlines()]
    assert len(h1) == len(h2) == 7 and max(abs(a - b) for a, b in zip(h1, h2)) < 1e-3
    assert not (tmp_path / "two" / "train_log.jsonl.rank1").exists()
