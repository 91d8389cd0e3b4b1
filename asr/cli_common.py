"""Argument helpers shared by the ``asr`` subcommand modules (``cli``, ``cli_tools``): recipe
configs with ``--set`` overrides, decoding and streaming options, output format lists."""
from __future__ import annotations

import argparse
import json
import logging
from dataclasses import replace
from pathlib import Path

from .config import ConfigError, parse_override

log = logging.getLogger("asr.cli")


def _config(args):
    from .recipe import load_config

    return load_config(args.config, dict(parse_override(o) for o in args.set or []))


def _add_config(p: argparse.ArgumentParser, required: bool = True, default: str | None = None) -> None:
    p.add_argument("--config", required=required, default=default, help="recipe YAML")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=3 (repeatable)")


def _add_decoding(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("decoding")
    from .decode_config import DECODE_METHODS

    g.add_argument("--method", choices=DECODE_METHODS, default="greedy",
                   help="greedy, CTC beam search, lexicon + word LM beam search, or a grammar")
    g.add_argument("--decoder", help="a decoder pack made by asr adapt (lexicon, LM, tuned weights), "
                   "or a method name as --method")
    g.add_argument("--hotwords", help="beam_lm: words/phrases to boost, one per line (optional weight after a tab)")
    g.add_argument("--beam-size", type=int, default=50)
    g.add_argument("--lexicon", default="", help="beam_lm: spelling lexicon (asr lm build --lexicon)")
    g.add_argument("--lm", default="", help="beam_lm: KenLM .arpa or binary (asr lm build)")
    g.add_argument("--lm-weight", type=float, default=1.0)
    g.add_argument("--word-score", type=float, default=0.0, help="score added per word")
    g.add_argument("--unk-score", type=float, default=float("-inf"), help="score of an out-of-lexicon word")
    g.add_argument("--tuned", help="a recipe's decode/tuned.json: take lm_weight, word_score and unit_bonus from it")
    g.add_argument("--unit-bonus", type=float, default=0.0,
                   help="--grammar/--phrases: log-score bonus per output unit of a phrase (longer phrases; a recipe tunes it)")
    g.add_argument("--nbest", type=int, default=1, help="beam/grammar decoders: keep K alternatives with scores")
    g.add_argument("--grammar", help="restrict the output to a JSGF grammar (.jsgf); implies --method grammar")
    g.add_argument("--phrases", help="restrict the output to a list of phrases (one per line); implies --method grammar")


def _decode_config(args, tokenizer=None):
    """The decoding configuration the command line asks for (``tokenizer``: needed for
    ``--hotwords``, which add words to the lexicon)."""
    from .decode_config import DECODE_METHODS, DecodeConfig

    if args.decoder and args.decoder not in DECODE_METHODS:
        from .adapt import is_pack, pack_decode, with_hotwords

        if not is_pack(args.decoder):
            raise ConfigError(f"--decoder {args.decoder}: neither a method ({', '.join(DECODE_METHODS)}) "
                              "nor a decoder pack (make one with asr adapt)")
        cfg = replace(pack_decode(args.decoder), nbest=args.nbest)
        if args.hotwords:
            if tokenizer is None:
                raise ConfigError("--hotwords cannot be used here")
            cfg = with_hotwords(cfg, args.hotwords, tokenizer)
        cfg.check("decoder pack")
        return cfg
    if args.decoder:
        args.method = args.decoder
    lm_weight, word_score, unit_bonus = args.lm_weight, args.word_score, args.unit_bonus
    if args.tuned:                               # what the recipe's tune stage chose (LM weights and/or grammar bonus)
        tuned = json.loads(Path(args.tuned).read_text())
        lm_weight, word_score = tuned.get("lm_weight", lm_weight), tuned.get("word_score", word_score)
        unit_bonus = tuned.get("unit_bonus", unit_bonus)
    if args.grammar and args.phrases:
        raise ConfigError("give --grammar or --phrases, not both")
    grammar = args.grammar or args.phrases or ""
    method = "grammar" if grammar else args.method
    cfg = DecodeConfig(method=method, beam_size=args.beam_size, lexicon=args.lexicon, lm=args.lm,
                       lm_weight=lm_weight, word_score=word_score, unk_score=args.unk_score, nbest=args.nbest,
                       grammar=grammar, unit_bonus=unit_bonus)
    if args.hotwords:
        if method != "beam_lm" or tokenizer is None:
            raise ConfigError("--hotwords biases beam_lm decoding: give --decoder PACK (asr adapt) or "
                              "--method beam_lm --lexicon L --lm LM")
        from .adapt import with_hotwords

        cfg = with_hotwords(cfg, args.hotwords, tokenizer)
    cfg.check("decode options")
    return cfg


def _decoder(args, rec):
    """The decoder the command line asks for."""
    return rec.make_decoder(_decode_config(args, rec.tokenizer))


def _stream_config(args, rec):
    """Streaming options; chunk and look-ahead not given: those the model was trained
    chunk-aware with (its checkpoint says), else the StreamConfig defaults."""
    from .stream import StreamConfig, trained_chunking

    chunk, right = trained_chunking(rec) or (StreamConfig.chunk_frames, StreamConfig.right_frames)
    cfg = StreamConfig(chunk_frames=chunk if args.chunk is None else args.chunk,
                       right_frames=right if args.right is None else args.right, endpoint_s=args.endpoint,
                       final_pass=args.final_pass, gate_db=args.gate_db, final_context_s=args.final_context)
    cfg.check("streaming options")
    return cfg


def _add_streaming(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("streaming")
    g.add_argument("--chunk", type=int, default=None,
                   help="output frames per chunk (default: the model's chunk-aware training setting, else 8)")
    g.add_argument("--right", type=int, default=None,
                   help="look-ahead output frames (default: the model's chunk-aware training setting, else 4)")
    g.add_argument("--endpoint", type=float, default=0.5,
                   help="seconds of quiet after sound that end an utterance (with --gate-db 0: of the model's blanks)")
    g.add_argument("--gate-db", type=float, default=40.0,
                   help="frames with no sound near them (this far under the loudest recent audio, or near the noise "
                   "floor) are decoded as blanks; 0: off")
    g.add_argument("--final-pass", choices=("stream", "full"), default="full",
                   help="full (default): each final result re-decodes its utterance with the whole bidirectional "
                   "model (two-pass: about offline accuracy, a few ms at the endpoint); stream: finals are the chunks'")
    g.add_argument("--final-context", type=float, default=3.0, metavar="SECONDS",
                   help="two-pass finals also run over this much audio before the utterance (the one a short "
                   "pause ended), as left context; 0: each utterance alone")


def _formats(allowed: tuple[str, ...]):
    """argparse type: a comma-separated subset of ``allowed``."""
    def parse(text: str) -> list[str]:
        chosen = [f for f in text.split(",") if f]
        bad = [f for f in chosen if f not in allowed]
        if bad or not chosen:
            raise argparse.ArgumentTypeError(f"{text!r}: choose from {','.join(allowed)}")
        return chosen
    return parse
