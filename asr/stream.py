"""Streaming recognition with a latency-controlled BiLSTM (LC-BLSTM, Zhang et al. 2016).

A bidirectional layer needs the future. Here each layer's forward direction carries its state
from chunk to chunk, and its backward direction runs, from a zero state, over the chunk plus
``right_frames`` of look-ahead; outputs of the look-ahead frames feed the next layer's
look-ahead but are never committed. The algorithmic latency is therefore ``(chunk_frames +
right_frames) * frame_s`` (plus half an analysis window), whatever the depth. When the
look-ahead covers the rest of the utterance, every step is the offline computation: the test
suite holds streaming to the offline log-probs then.

Committed frames go to the decoder's incremental interface (greedy, flashlight's online beam
search with lexicon and LM, or a grammar): partial results after every chunk. A level gate
decodes frames with no sound near them as blanks (utterance CMN would make words of the quiet
after speech). An utterance ends when the audio has been under the gate for ``endpoint_s``
after sound (without the gate: after ``endpoint_s`` of the model's blanks), when it reaches
``max_utterance_s``, or at the end of the input; its final result carries word times and
confidence from forced alignment of the decoded units. After a final everything restarts from
the committed frame, as the offline transcriber decodes each segment on its own; with
``start_at_sound`` the chunks then wait for the next sound and start a short pad before it
(quiet that long before a word is what the models saw in training).

With ``final_pass: full`` (the default) the final result is a second pass (as two-pass systems
do, e.g. WeNet's rescoring): the utterance's features run once through the whole bidirectional
model and are decoded afresh, so partials come at the chunk latency and finals are about as
accurate as offline decoding (the same computation when ``cmn_history_s`` is 0), for a few tens
of milliseconds of compute at the endpoint.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Iterator, Literal

import numpy as np
import torch
from scipy.signal import butter, lfilter, sosfilt

from .audio import SAMPLE_RATE_HZ, AudioError
from .config import require
from .decode import Decoder, GreedyDecoder
from .features import StreamingFeatures
from .recognizer import Recognizer
from .stream_io import PCM16_SCALE, file_blocks, paced, pcm_blocks  # noqa: F401 (the readers, as before)
from .transcribe import Word, align_words

GATE_HIGHPASS_HZ = 100.0        # the gate's level meter ignores rumble (fans, traffic, handling) under speech
GATE_HIGHPASS = butter(4, GATE_HIGHPASS_HZ, "highpass", fs=16000, output="sos")
DC_POLE = 0.995                 # DC blocker y[n] = x[n] - x[n-1] + DC_POLE * y[n-1] (~13 Hz)
SILENT_RESET_S = 5.0            # a stretch this long without speech is dropped (bounded memory)
GATE_FLOOR_DBFS = -70.0         # feature-hop blocks quieter than this are never speech
GATE_BEHIND_S, GATE_AHEAD_S = 0.1, 0.5   # speech this near a frame opens the gate for it
GATE_MIN_AHEAD_S = 0.1          # a frame is not judged quiet on less audio after it than this
GATE_MIN_RUN_S = 0.03           # sound is a run of blocks over the gate this long (a noise blip is not)
GATE_MIN_SOUND_S = 0.05         # an utterance had sound once this much of its audio was over the gate
                                # (a click is not a talker: no endpoint, and no final, after one)
GATE_RECENT_S = 10.0            # the gate's view: the loudest and the noise floor of this much audio
GATE_NOISE_MIN_S = 1.0          # the noise floor is estimated once this much audio was heard
GATE_NOISE_PCT = 5              # noise floor: this percentile of the recent levels
GATE_NOISE_MARGIN_DB = 6.0      # sound is this far above the noise floor (10 dB gated speech at 5 dB SNR)
PASS_PAD_S = 0.3                # a second pass starts this long before the first sound it decodes
PASS_MAX_GAP_S = 1.0            # ... and takes in earlier sound no pause this long separates from it
ONSET_PAD_S = 0.09              # the chunks start this long before an utterance's first sound (the
                                # shortest pads of training are 0.05 s; 0.06-0.09 s gave the fewest
                                # first-word errors, 0 and 0.3 s 2-3x more: recipes/digits/RESULTS.md)
LOOKBACK_MARGIN_FRAMES = 2      # a continuation's second pass keeps frames from the word boundary it
                                # decodes near the previous final's last unit (from LOOKBACK_MARGIN_FRAMES
                                # after that unit if it decodes none: a pass with more context moves it)


@dataclass(frozen=True)
class StreamConfig:
    """Chunking, endpointing and input conditioning of a stream (frames are model output
    frames: feature hop x stacking, 30 ms for the default recipes)."""

    chunk_frames: int = 8          # frames committed per step
    right_frames: int = 4          # look-ahead frames seen by the backward direction
    endpoint_s: float = 0.5        # quiet (with the gate; else blanks) after speech that ends an
                                   # utterance (0: only at the end of the input)
    max_utterance_s: float = 30.0  # an utterance is cut here (bounded memory and alignment)
    dc_block: bool = True          # remove DC offset with a one-pole high-pass
    cmn_history_s: float = 0.0     # utterance CMN also counts this much of the stream's past
                                   # (0: each utterance by itself, as in training and offline)
    final_pass: Literal["stream", "full"] = "full"     # full: finals from the whole bidirectional
                                   # model over the utterance (two-pass), partials from the chunks
    final_context_s: float = 3.0   # two-pass finals also run over this much of the stream's audio
                                   # before the utterance (left context: a talker's pause that
                                   # ended an utterance does not leave its rest on its own)
    gate_db: float = 40.0          # output frames with no sound near them (this far under the loudest
                                   # recent audio, within a margin of the noise floor or under
                                   # GATE_FLOOR_DBFS) are decoded as blank: no words from silence (0: off)
    start_at_sound: bool = True    # with the gate, once it knows the noise floor: the chunks start
                                   # ONSET_PAD_S before an utterance's first sound, not at the end of
                                   # the previous one (these models fire a word's first units at the
                                   # first frame of their input, as their training pads were short)

    def check(self, where: str = "stream") -> None:
        require(self.chunk_frames >= 1, f"{where}.chunk_frames", "must be >= 1")
        require(self.right_frames >= 0, f"{where}.right_frames", "must be >= 0")
        require(self.endpoint_s >= 0, f"{where}.endpoint_s", "must be >= 0")
        require(self.max_utterance_s >= 1, f"{where}.max_utterance_s", "must be >= 1")
        require(self.cmn_history_s >= 0, f"{where}.cmn_history_s", "must be >= 0")
        require(self.final_context_s >= 0, f"{where}.final_context_s", "must be >= 0")
        require(self.gate_db >= 0, f"{where}.gate_db", "must be >= 0 (0: off)")

    def latency_s(self, frame_s: float) -> float:
        """Algorithmic latency: chunk + look-ahead (the analysis half-window not counted)."""
        return (self.chunk_frames + self.right_frames) * frame_s


def trained_chunking(rec: Recognizer) -> tuple[int, int] | None:
    """(chunk, look-ahead) output frames the model was trained or fine-tuned for chunk-aware
    (``train.stream_chunk`` in its checkpoint's config), or None: the setting a stream of this
    model should use unless told otherwise."""
    chunk = getattr(rec, "info", None)
    for key in ("config", "train", "stream_chunk"):       # a checkpoint's info is data: check each level
        chunk = chunk.get(key) if isinstance(chunk, dict) else None
    if isinstance(chunk, (list, tuple)) and len(chunk) == 2 and all(isinstance(v, int) for v in chunk):
        return int(chunk[0]), int(chunk[1])
    return None


@dataclass
class StreamEvent:
    """A partial (may still change) or final (stable) result; times in seconds from the start
    of the stream. Finals carry words with times and confidence."""

    kind: Literal["partial", "final"]
    text: str
    start: float
    end: float
    words: list[Word] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


class Streamer:
    """One audio stream through a :class:`Recognizer`: ``accept(samples)`` and ``finish()``
    return the new :class:`StreamEvent` s. ``decoder`` must not be shared with another stream
    (it keeps the search state); greedy streams get their own by default."""

    def __init__(self, rec: Recognizer, cfg: StreamConfig = StreamConfig(), decoder: Decoder | None = None):
        cfg.check()
        if decoder is None:
            decoder = GreedyDecoder(rec.tokenizer) if isinstance(rec.decoder, GreedyDecoder) else rec.decoder
        if not hasattr(decoder, "begin"):
            raise TypeError(f"{type(decoder).__name__} has no incremental interface (begin/step/partial/end)")
        self.rec, self.cfg, self.decoder = rec, cfg, decoder
        self.stack = rec.model.cfg.stack
        self.frames = StreamingFeatures(rec.features)
        self.zi = np.zeros(1)                     # DC blocker state
        self.meter_zi = np.zeros((GATE_HIGHPASS.shape[0], 2))   # the level meter's high-pass state
        self.utt_start = 0                        # first feature frame of the utterance (stream index)
        self.samples_in = 0
        self.history = torch.zeros(0, rec.feature_config.n_mels)   # features of earlier utterances
        self.levels = np.zeros(0)                 # dBFS of each 10-ms block since block ``level_base``
        self.level_base, self.ended, self.flushing = 0, False, False
        self.free_from: int | None = None         # stream output frame after the last final's last word
        self.recent = np.zeros(0)                 # levels of the last GATE_RECENT_S (the gate's floor)
        self.floor = GATE_FLOOR_DBFS
        self.level_rest = np.zeros(0, np.float32)  # samples of the block not yet complete
        self._new_utterance(torch.zeros(0, rec.feature_config.n_mels))

    def _new_utterance(self, feats: torch.Tensor) -> None:
        self.feats = feats                        # (T, F) features of the utterance so far
        self.done = 0                             # output frames committed
        self.state: list = [None] * len(self.rec.model.layers)
        self.logp: list[torch.Tensor] = []        # committed (c, V) log-probs
        self.seen: list[torch.Tensor] = []        # the same through the gate: what the decoder got
        self.speech, self.trailing = False, 0
        self.sounded = False                      # this utterance had sound (start_at_sound)
        self.last_partial = ""
        self.decoder.begin()

    # ------------------------------------------------------------------ input
    def accept(self, samples: np.ndarray) -> list[StreamEvent]:
        """(N,) float32 samples at 16 kHz -> events (possibly none)."""
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        self.samples_in += x.size
        if self.cfg.dc_block and x.size:
            x, self.zi = lfilter([1.0, -1.0], [1.0, -DC_POLE], x, zi=self.zi)
            x = x.astype(np.float32)
        self._levels(x)
        return self._push(self.frames.accept(x), final=False)

    def _levels(self, x: np.ndarray) -> None:
        """Append the levels (dBFS, over GATE_HIGHPASS_HZ) of the feature-hop blocks ``x``
        completes: the gate's view."""
        if x.size:
            x, self.meter_zi = sosfilt(GATE_HIGHPASS, x, zi=self.meter_zi)
        buf = np.concatenate([self.level_rest, x.astype(np.float32)])
        hop = self.rec.features.hop                  # one level per feature frame
        n = buf.size // hop
        if n:
            db = 10 * np.log10(np.mean(buf[: n * hop].reshape(n, hop).astype(np.float64) ** 2, 1) + 1e-12)
            self.levels = np.concatenate([self.levels, db])
            self.recent = np.concatenate([self.recent, db])[-int(GATE_RECENT_S * SAMPLE_RATE_HZ / hop):]
            self.floor = self._floor(hop)
        self.level_rest = buf[n * hop:]

    def _floor(self, hop: int) -> float:
        """The gate's level (dBFS): gate_db under the loudest recent block, GATE_NOISE_MARGIN_DB
        over the recent noise floor (steady noise stays under the gate), never under
        GATE_FLOOR_DBFS."""
        floor = max(float(self.recent.max()) - self.cfg.gate_db, GATE_FLOOR_DBFS)
        if self.recent.size * hop >= GATE_NOISE_MIN_S * SAMPLE_RATE_HZ:
            floor = max(floor, float(np.percentile(self.recent, GATE_NOISE_PCT)) + GATE_NOISE_MARGIN_DB)
        return floor

    def _sound(self) -> np.ndarray:
        """(len(levels),) whether each level block is sound: in a run of GATE_MIN_RUN_S or more
        over the gate's level (a run still growing at the end of what was heard counts once
        it is that long)."""
        over = np.concatenate([[0], (self.levels >= self.floor).astype(np.int8), [0]])
        edges = np.diff(over)
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        out = np.zeros(self.levels.size, bool)
        run = max(1, round(GATE_MIN_RUN_S * SAMPLE_RATE_HZ / self.rec.features.hop))
        for a, b in zip(starts, ends):
            out[a:b] = b - a >= run
        return out

    def _quiet(self, first: int, n: int) -> np.ndarray:
        """(n,) whether output frames [first, first + n) of the utterance are under the gate: no
        block above it from GATE_BEHIND_S before the frame to GATE_AHEAD_S after it (CTC models
        fire before the sound: a word's first units come while it is still quiet). A window
        reaching past the audio heard so far is judged on what was heard, if that is at least
        GATE_MIN_AHEAD_S past the frame (else it is not quiet); finals judge again on all of it."""
        s = self.stack
        per_s = SAMPLE_RATE_HZ / self.rec.features.hop
        behind, ahead, least = (int(t * per_s) for t in (GATE_BEHIND_S, GATE_AHEAD_S, GATE_MIN_AHEAD_S))
        start = self.utt_start - self.level_base + first * s            # level index of the first frame
        heard = self.levels.size
        loud = np.concatenate([[0], np.cumsum(self._sound())])         # loud blocks before each index
        out = np.zeros(n, bool)
        for j in range(n):
            a, end = max(start + j * s - behind, 0), start + (j + 1) * s
            b = min(end + ahead, heard)
            if b < end + ahead and not (self.ended or self.flushing) and b < end + least:
                continue                                                # too little heard yet
            out[j] = loud[b] - loud[min(a, heard)] == 0
        return out

    def _gate(self, logp: torch.Tensor, first: int) -> torch.Tensor:
        """(n, V) log-probs with the frames under the gate made certain blanks."""
        if self.cfg.gate_db <= 0:
            return logp
        quiet = torch.from_numpy(self._quiet(first, logp.shape[0]))
        if not bool(quiet.any()):
            return logp
        blank = torch.full_like(logp[0], -1e4)
        blank[0] = 0.0
        return torch.where(quiet[:, None], blank, logp)

    def accept_pcm16(self, data: bytes) -> list[StreamEvent]:
        """Little-endian 16-bit mono PCM at 16 kHz (an odd trailing byte is an error)."""
        if len(data) % 2:
            raise AudioError(f"PCM16 data of {len(data)} bytes is not a whole number of samples")
        return self.accept(np.frombuffer(data, "<i2").astype(np.float32) / PCM16_SCALE)

    def finish(self) -> list[StreamEvent]:
        """End of input: decode what is left and return the last final result."""
        self.ended = True
        events = self._push(self.frames.finish(), final=True)
        return events + self._final()

    # ------------------------------------------------------------------ decoding
    @property
    def frame_s(self) -> float:
        return self.rec.frame_s

    def _push(self, new: torch.Tensor, final: bool) -> list[StreamEvent]:
        self.feats = torch.cat([self.feats, new]) if new.shape[0] else self.feats
        events: list[StreamEvent] = []
        c_max, r_max = self.cfg.chunk_frames, self.cfg.right_frames
        if not final and self._before_sound():
            return events
        flush = final or self._heard_end()              # no more look-ahead will come for these frames
        while True:
            remaining = self.feats.shape[0] // self.stack - self.done
            if remaining <= 0 or (not flush and remaining < c_max + r_max):
                break
            c = min(c_max, remaining)
            logp = self._forward(c, min(r_max, remaining - c))
            self._commit(logp[:c])
            if self._endpoint():
                events += self._final()
        if flush and not final:                         # the talker stopped: the utterance ends here
            self.flushing = True                        # (its last frames are judged on the quiet heard)
            events += self._final()
            self.flushing = False
        hyp = self.decoder.partial() if self.done else None
        if hyp is not None and hyp.text != self.last_partial and not final:
            self.last_partial = hyp.text
            events.append(StreamEvent("partial", hyp.text, self._t(0), self._t(self.done)))
        return events

    def _before_sound(self) -> bool:
        """start_at_sound: True while the utterance has had no sound (its chunks wait); its
        audio before ONSET_PAD_S ahead of the first sound (or of now) is dropped into the
        history (context for CMN and two-pass finals), as a final would. Before the gate knows
        the noise floor (the stream's first GATE_NOISE_MIN_S) nothing is dropped or held."""
        hop = self.rec.features.hop
        if (self.sounded or not self.cfg.start_at_sound or self.cfg.gate_db <= 0
                or (self.level_base + self.levels.size) * hop < GATE_NOISE_MIN_S * SAMPLE_RATE_HZ):
            return False
        u0 = max(self.utt_start - self.level_base, 0)
        sound = np.flatnonzero(self._sound()[u0:])
        start = int(sound[0]) if sound.size else self.levels.size - u0       # utterance level index
        cut = min((start - int(ONSET_PAD_S * SAMPLE_RATE_HZ / hop)) // self.stack, self.feats.shape[0] // self.stack)
        if cut > 0:
            self.done = cut                     # dropped as if decoded: nothing of it was said
            self._restart()
        self.sounded = bool(sound.size)
        return not self.sounded

    @torch.inference_mode()
    def _forward(self, c: int, r: int) -> torch.Tensor:
        """Log-probs (c + r, V) of output frames [done, done + c + r); advances the forward states
        by the c committed frames only."""
        model, s = self.rec.model, self.stack
        # up to the window's end only: results do not depend on how the audio was cut into blocks,
        # and chunk-aware training (model.latency_controlled) normalises the same way
        feats = self.feats[: (self.done + c + r) * s].float().unsqueeze(0)           # (1, T, F)
        x = (feats - model.cmvn_mean) / model.cmvn_std
        if model.cfg.utterance_cmn:
            # statistics over everything heard: this utterance so far and the stream's recent past
            # (same talker and channel), so an utterance's first chunk is not normalised by itself
            past = self._past(self.cfg.cmn_history_s).float().unsqueeze(0)
            both = torch.cat([past, feats], 1)
            x = model._utterance_cmn(both, torch.cat([(past - model.cmvn_mean) / model.cmvn_std, x], 1),
                                     torch.tensor([both.shape[1]]))[:, past.shape[1]:]
        x = x[:, self.done * s:].reshape(1, c + r, -1)
        for i, layer in enumerate(model.layers):
            out_c, self.state[i] = layer.fwd(x[:, :c], self.state[i])
            out_f = torch.cat([out_c, layer.fwd(x[:, c:], self.state[i])[0]], 1) if r else out_c
            out_b = layer.bwd(x.flip(1))[0].flip(1)
            x = torch.cat([out_f, out_b], -1)
        return model.output(x)[0].log_softmax(-1).float()

    def _commit(self, logp: torch.Tensor) -> None:
        self.logp.append(logp)
        logp = self._gate(logp, self.done)
        self.seen.append(logp)
        self.decoder.step(logp)
        for i in logp.argmax(-1).tolist():
            self.speech, self.trailing = (True, 0) if i != 0 else (self.speech, self.trailing + 1)
        self.done += logp.shape[0]

    def _endpoint(self) -> bool:
        """Cut after the committed frames: at max_utterance_s, or (without the level gate, which
        ends utterances by :meth:`_heard_end`) after endpoint_s of blanks following speech."""
        length_s = self.done * self.frame_s
        if not self.speech and length_s >= SILENT_RESET_S:       # nothing said: drop, keep memory bounded
            self._restart()
            return False
        return (length_s >= self.cfg.max_utterance_s
                or (self.cfg.gate_db <= 0 and self.speech and self.cfg.endpoint_s > 0
                    and self.trailing * self.frame_s >= self.cfg.endpoint_s))

    def _heard_end(self) -> bool:
        """The level gate's endpoint: this utterance had sound (GATE_MIN_SOUND_S over the
        gate), and the last endpoint_s of the audio heard is under the gate. It does not wait for
        the model's blanks, which come early and mid-word in a BiLSTM that fires before the sound
        (a final then would cut a word)."""
        if self.cfg.gate_db <= 0 or self.cfg.endpoint_s <= 0:
            return False
        levels = self._sound()[max(self.utt_start - self.level_base, 0):]
        loud = np.flatnonzero(levels)
        hop_s = self.rec.features.hop / SAMPLE_RATE_HZ
        return (loud.size * hop_s >= GATE_MIN_SOUND_S
                and (levels.size - 1 - loud[-1]) * hop_s >= self.cfg.endpoint_s)

    def _final(self) -> list[StreamEvent]:
        if not self.done:
            return []
        hyp = self.decoder.end()
        seen = torch.cat(self.seen)
        full = self.cfg.final_pass == "full" and self.speech
        first, back = self._pass_span() if full else (0, 0)
        # the gate now knows more of what followed each frame than when its chunk was committed
        raw = self._full_pass(first, back) if full else torch.cat(self.logp)
        logp = self._gate(self._after_previous(raw, back) if back and self.free_from is not None else raw, -back)
        if not torch.equal(logp, seen):
            self.decoder.begin()
            self.decoder.step(logp)
            hyp = self.decoder.end()
        words = align_words(logp, hyp.ids, self.rec.tokenizer.vocab, self.frame_s, self._t(-back))
        if self.rec.calibration is not None:          # features of the model's own posteriors, as fitted
            self.rec.calibration.apply(words, raw, hyp.word_posteriors)
        if words:
            self.free_from = round(words[-1].end / self.frame_s)
        start = min(words[0].start, self._t(0)) if words else self._t(0)
        event = StreamEvent("final", hyp.text, start, self._t(self.done), words)
        self._restart()
        return [event] if hyp.text else []

    def _after_previous(self, raw: torch.Tensor, back: int) -> torch.Tensor:
        """(back + done, V) ``raw`` with its frames up to the previous final's last word made
        blanks: up to the word boundary (a space unit) this pass decodes near that word's last
        unit, else up to LOOKBACK_MARGIN_FRAMES after it."""
        prev = back - (self.utt_start // self.stack - self.free_from)      # raw index after that unit
        keep = min(max(prev, 0) + LOOKBACK_MARGIN_FRAMES, back)
        vocab = self.rec.tokenizer.vocab
        if " " in vocab:
            spaces = torch.nonzero(raw[max(prev - LOOKBACK_MARGIN_FRAMES, 0): back].argmax(-1) == vocab.index(" "))
            keep = max(prev - LOOKBACK_MARGIN_FRAMES, 0) + int(spaces[0]) if spaces.numel() else keep
        out = raw.clone()
        out[:keep] = -1e4
        out[:keep, 0] = 0.0
        return out

    def _pass_span(self) -> tuple[int, int]:
        """(first, back): the second pass runs over output frames [first, done) of the utterance
        (first < 0: audio before it) and its result keeps [-back, done). The input starts
        PASS_PAD_S before the utterance's first sound, or before earlier sound within
        final_context_s that no pause of PASS_MAX_GAP_S or more separates from it: the model
        heard at most a short pad before speech in training, and fires a word's first units at
        the start of a long quiet lead (the gate then blanks them). ``back``: frames after the
        previous final's last unit, where a BiLSTM may fire the next word's first units before
        the pause that ended that final."""
        if self.cfg.gate_db <= 0:                      # no levels: the whole context
            first = -(self._past(self.cfg.final_context_s).shape[0] // self.stack)
            return first, self._back(first)
        per_s, s = SAMPLE_RATE_HZ / self.rec.features.hop, self.stack
        u0 = self.utt_start - self.level_base                       # level index of frame 0
        lo = max(u0 - self._past(self.cfg.final_context_s).shape[0], 0)
        sound = np.flatnonzero(self._sound()[lo:]) + lo
        if not sound.size or sound[-1] < u0:
            return 0, 0
        cur = int(sound[np.searchsorted(sound, u0)])                # the utterance's first sound
        if cur >= u0 + self.done * self.stack:                      # (after its committed frames)
            return 0, 0
        for b in sound[sound < cur][::-1]:
            if cur - b > PASS_MAX_GAP_S * per_s:
                break
            cur = int(b)
        start = max(cur - int(PASS_PAD_S * per_s), lo)
        first = max((start - u0) // s, -((u0 - lo) // s))
        return first, self._back(first)

    def _back(self, first: int) -> int:
        """Frames before the utterance its final keeps: all the pass saw (-first) when no final
        had words yet, else those after the previous final's last word (and a margin to search
        for the word boundary)."""
        if self.free_from is None:
            return max(0, -first)
        return max(0, min(self.utt_start // self.stack - self.free_from + LOOKBACK_MARGIN_FRAMES, -first))

    def _past(self, seconds: float) -> torch.Tensor:
        """(T, F) features of the last ``seconds`` before this utterance (whole output frames)."""
        keep = int(seconds * SAMPLE_RATE_HZ / self.rec.features.hop) // self.stack * self.stack
        return self.history[self.history.shape[0] - min(keep, self.history.shape[0] // self.stack * self.stack):]

    @torch.inference_mode()
    def _full_pass(self, first: int = 0, back: int = 0) -> torch.Tensor:
        """(back + done, V) log-probs of the utterance's committed frames (and the ``back``
        frames before them) from the whole bidirectional model over output frames [first, done)
        (first < 0: the stream's audio before the utterance; frames before a first > 0 are
        blanks): the offline computation on the same features."""
        s = self.stack
        ctx = self.history[self.history.shape[0] + first * s:] if first < 0 else self.history[:0]
        feats = self.feats[max(first, 0) * s: self.done * s]
        log_probs, out_lens = self.rec.forward([torch.cat([ctx, feats])])
        out = log_probs[0, max(-first - back, 0): int(out_lens[0])].float().cpu()
        if first > 0:
            blank = torch.full((first, out.shape[1]), -1e4)
            blank[:, 0] = 0.0
            out = torch.cat([blank, out])
        return out

    def _restart(self) -> None:
        cut = self.done * self.stack
        self.utt_start += cut
        keep = int(max(self.cfg.cmn_history_s, self.cfg.final_context_s) * SAMPLE_RATE_HZ / self.rec.features.hop)
        self.history = torch.cat([self.history, self.feats[:cut]])[-keep:] if keep else self.history
        keep_s = GATE_BEHIND_S + (self.cfg.final_context_s if self.cfg.final_pass == "full" else 0.0)
        drop = max(0, self.utt_start - self.level_base - int(keep_s * SAMPLE_RATE_HZ / self.rec.features.hop))
        self.levels, self.level_base = self.levels[drop:], self.level_base + drop
        self._new_utterance(self.feats[cut:])

    def _t(self, frames: int) -> float:
        """Stream time (s) of output frame ``frames`` of the current utterance."""
        return round(self.utt_start * self.rec.features.hop / SAMPLE_RATE_HZ + frames * self.frame_s, 3)


def stream_file(rec: Recognizer, samples: np.ndarray, cfg: StreamConfig = StreamConfig(),
                block_s: float = 0.1, decoder: Decoder | None = None) -> list[StreamEvent]:
    """All events of streaming (N,) 16 kHz ``samples`` in blocks of ``block_s``."""
    st = Streamer(rec, cfg, decoder)
    step = max(1, int(block_s * SAMPLE_RATE_HZ))
    events = [e for i in range(0, samples.size, step) for e in st.accept(samples[i: i + step])]
    return events + st.finish()


def run_stream(streamer: Streamer, blocks: Iterator[np.ndarray]) -> Iterator[StreamEvent]:
    """Events of a whole stream of blocks, as they happen; the last is the final of the end."""
    for x in blocks:
        yield from streamer.accept(x)
    yield from streamer.finish()
