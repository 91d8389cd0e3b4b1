"""Small mutation pass: inject one realistic one-line bug at a time into the core modules, run
the fast tests, print caught/missed. The tree is restored after each mutant.

    python scripts/mutation_pass.py            # all mutants (~10 min on 2 cores)
    ONLY="score: CER denominator" python scripts/mutation_pass.py
"""
import subprocess, sys, pathlib, time
ROOT = pathlib.Path(__file__).resolve().parents[1]
FAST = ["tests/test_score.py", "tests/test_text.py", "tests/test_data.py", "tests/test_decode.py", "tests/test_transcribe.py",
        "tests/test_features.py", "tests/test_model.py", "tests/test_mutants.py", "tests/test_audio.py", "tests/test_recognizer.py",
        "tests/test_properties.py", "tests/test_dataset.py", "tests/test_augment.py", "tests/test_checkpoint.py"]
MUTANTS = [
 ("score: bootstrap percentiles", "asr/score.py", "np.percentile(wer_a, 2.5)), float(np.percentile(wer_a, 97.5))", "np.percentile(wer_a, 5)), float(np.percentile(wer_a, 95))"),
 ("score: insertions counted as deletions", "asr/score.py", "    dele = sum(h == EPS for _, h in ali)", "    dele = sum(h == EPS or r == EPS for r, h in ali)"),
 ("score: CER denominator", "asr/score.py", "char_err, len(ref))", "char_err, len(ref.replace(' ', '')))"),
 ("text: digit word misspelled", "asr/text.py", '"seven", "eight"', '"seven", "eigth"'),
 ("text: no space before a digit", "asr/text.py", 'lambda m: f" {DIGIT_WORDS[int(m.group())]} "', 'lambda m: f"{DIGIT_WORDS[int(m.group())]} "'),
 ("text: apostrophes stripped", "asr/text.py", "words = [w.strip(\"'\") for w in _SPACES.split(text)]", "words = [w.replace(\"'\", \"\") for w in _SPACES.split(text)]"),
 ("data: bucket running max not reset", "asr/data.py", "            cur, new_max = [], lengths[i]", "            cur = []"),
 ("data: pad_batch lengths off by one", "asr/data.py", "lens = torch.tensor([f.shape[0] for f in feats], dtype=torch.long)", "lens = torch.tensor([f.shape[0] - 1 for f in feats], dtype=torch.long)"),
 ("decode: greedy keeps repeats", "asr/decode.py", "keep[:, 1:] = best[:, 1:] != best[:, :-1]", "keep[:, 1:] = True"),
 ("recognizer: frame time ignores stacking", "asr/recognizer.py", "return self.features.hop / SAMPLE_RATE_HZ * self.model.cfg.stack", "return self.features.hop / SAMPLE_RATE_HZ"),
 ("audio: downmix keeps the left channel", "asr/audio.py", "return samples[:, live].mean(axis=1) if live.any() and rms.max() > 0 else samples.mean(axis=1)", "return samples[:, 0]"),
 ("transcribe: segments overlap by a hop", "asr/transcribe.py", "            pending, offset = pending[prev:], offset + prev", "            pending, offset = pending[max(0, prev - 160):], offset + max(0, prev - 160)"),
 ("features: hop from the window", "asr/features.py", "return int(round(self.cfg.hop_ms * SAMPLE_RATE_HZ / 1000))", "return int(round(self.cfg.win_ms * SAMPLE_RATE_HZ / 1000))"),
 ("features: CMVN std without the mean", "asr/features.py", "std = (sq / total - mean * mean).clamp_min(1e-8).sqrt()", "std = (sq / total).clamp_min(1e-8).sqrt()"),
 ("model: backward direction not reversed back", "asr/model.py", "return torch.cat([out_f, reverse_padded(out_b, lens)], dim=-1)", "return torch.cat([out_f, out_b], dim=-1)"),
 ("model: out_lens not divided by the stack", "asr/model.py", 'out_lens = torch.div(lens, s, rounding_mode="floor").clamp_min(1)', "out_lens = lens.clamp_max(t_out)"),
 ("augment: SNR sign", "asr/augment.py", "rms * 10 ** (-snr_db / 20)", "rms * 10 ** (snr_db / 20)"),
 ("checkpoint: averaging keeps the first file", "asr/checkpoint.py", "state[name] = (total / len(payloads)).to(value.dtype)", "state[name] = payloads[0][\"state_dict\"][name].clone()"),
 ("data: time masks never applied", "asr/data.py", "        feats[t0: t0 + w] = fill", "        pass"),
 ("text: BPE decode shifts ids", "asr/text.py", "text = self._sp.decode([i - 1 for i in ids if i > 0])", "text = self._sp.decode([i for i in ids if i > 0])"),
]
import os
only = os.environ.get('ONLY')
rows = []
for name, path, old, new in [m for m in MUTANTS if not only or m[0] in only.split('|')]:
    f = ROOT / path
    src = f.read_text()
    if src.count(old) != 1:
        rows.append((name, "NOT APPLIED")); continue
    f.write_text(src.replace(old, new))
    try:
        t = time.time()
        r = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *FAST],
                           cwd=ROOT, capture_output=True, text=True, timeout=600)
        rows.append((name, "caught" if r.returncode != 0 else "MISSED", round(time.time() - t)))
    finally:
        f.write_text(src)
    print(rows[-1], flush=True)
caught = sum(r[1] == "caught" for r in rows)
print(f"{caught}/{len(rows)} caught")
