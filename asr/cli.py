"""The ``asr`` command: thin wrappers over library functions, one per subcommand."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

from .audio import SAMPLE_RATE_HZ
from .config import ConfigError
from .cli_common import (_add_config, _add_decoding, _add_streaming, _config, _decode_config, _decoder, _formats,
                         _stream_config, log)
from .errors import AsrError


class _ShortNames(logging.Formatter):
    """``[train] message`` for logger ``asr.train``."""

    def format(self, record: logging.LogRecord) -> str:
        record.short = record.name.removeprefix("asr.").removeprefix("corpora.")
        return super().format(record)


def setup_logging(verbosity: int = 0) -> None:
    """Library logs to stderr: INFO by default, DEBUG with ``-v``, WARNING with ``-q``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_ShortNames("[%(short)s] %(message)s"))
    root = logging.getLogger("asr")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbosity > 0 else logging.WARNING if verbosity < 0 else logging.INFO)
    root.propagate = False


def _add_verbosity(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_const", const=1, dest="verbosity", default=0,
                   help="debug logging")
    p.add_argument("-q", "--quiet", action="store_const", const=-1, dest="verbosity", help="warnings only")


def cmd_prepare(args) -> int:
    if args.corpus == "digits":
        from .corpora.digits import prepare_digits

        if not args.config:
            raise ConfigError("asr prepare digits needs --config (the recipe YAML)")
        cfg = _config(args)
        for split, path in prepare_digits(cfg.synth, args.out or cfg.data_dir, cfg.train_split).items():
            print(f"{split}\t{path}")
        return 0
    if not (args.root and args.split and args.out):
        raise ConfigError(f"asr prepare {args.corpus} needs --root, --split and --out")
    if args.corpus == "kaldi":
        from .corpora.kaldi import import_to_manifest

        print(import_to_manifest(args.root, Path(args.out) / f"{args.split}.jsonl", args.allow_pipes))
        return 0
    from .corpora.real import prepare_split

    print(prepare_split(args.corpus, args.root, args.split, args.out))
    return 0


def cmd_train(args) -> int:
    from .corpora.stages import robust_stage
    from .recipe import RecipePaths, features_stage, run_stage, train_stage

    cfg = _config(args)
    run_stage(cfg, robust_stage)                  # the condition splits the features stage caches
    run_stage(cfg, features_stage)
    run_stage(cfg, train_stage)
    print(RecipePaths.of(cfg).best_model)
    return 0


def _recognizer(args):
    """What ``--model`` names, with the decoder the command line asks for: an ONNX export
    directory (``asr export``: the torch-free runtime, greedy decoding), a package
    (``asr package``: verified, its LM used by beam_lm) or a checkpoint."""
    from .lite import is_export, load_lite

    if is_export(args.model):
        if args.method != "greedy" or args.grammar or args.phrases or args.decoder or args.hotwords:
            asked = "--hotwords" if args.hotwords else f"--method {args.decoder or args.method}"
            raise ConfigError(f"{args.model}: an ONNX export decodes greedily ({asked} needs the checkpoint)")
        return load_lite(args.model, int8=args.int8)
    if str(args.model).endswith((".tar.gz", ".tgz")):
        return _package_recognizer(args)
    from .recognizer import load

    rec = load(args.model, int8=args.int8)
    return rec.with_decoder(_decoder(args, rec))


def _package_recognizer(args):
    """A verified package with the decoding asked for; ``--hotwords`` bias its own LM."""
    from .package import load_package, open_package, package_decode
    from .recognizer import load

    if not args.hotwords:
        return load_package(args.model, int8=args.int8, decode=_decode_config(args))
    folder = open_package(args.model)
    rec = load(folder / "model.pt", int8=args.int8)
    cfg = package_decode(folder, _decode_config(argparse.Namespace(**{**vars(args), "hotwords": None})))
    if cfg.method != "beam_lm" or not cfg.lm:
        raise ConfigError(f"--hotwords biases beam_lm decoding: give --method beam_lm (and a package with an LM; {args.model})")
    from .adapt import with_hotwords

    cache = folder.parent / f"{folder.name}.hotwords"        # beside the verified folder, never inside it
    return rec.with_decoder(rec.make_decoder(with_hotwords(cfg, args.hotwords, rec.tokenizer, cache)))


def cmd_serve(args) -> int:
    from .recognizer import load
    from .serve import ServeConfig, serve

    rec = load(args.model, int8=args.int8)
    decode = _decode_config(args, rec.tokenizer)
    cfg = ServeConfig(workers=args.workers, queue=args.queue, max_streams=args.max_streams,
                      max_upload_mb=args.max_upload_mb, max_stream_s=args.max_stream_s,
                      idle_timeout_s=args.idle_timeout, method=decode.method, decode=decode,
                      stream=_stream_config(args, rec))
    serve(rec, cfg, args.host, args.port)
    return 0


def cmd_decode(args) -> int:
    from .data import read_manifest
    from .recognizer import decode_utterances, load
    from .score import error_rates, write_kaldi_text

    rec = load(args.model)
    utts = read_manifest(args.manifest)
    nbest: dict = {}
    hyps, timing, _ = decode_utterances(rec, utts, decoder=_decoder(args, rec), nbest=nbest)
    write_kaldi_text(hyps, args.out)
    rates = error_rates({u.id: u.text for u in utts}, hyps)
    extra = {}
    if args.nbest > 1:
        from .cli_tools import write_nbest

        extra = write_nbest(nbest, Path(f"{args.out}.nbest"), {u.id: u.text for u in utts})
    print(json.dumps({**rates.as_dict(), "rtf": round(timing["rtf"], 5), **extra}))
    return 0


def _normalizer(args):
    from .score import Normalizer

    return Normalizer(lowercase=args.lowercase, strip_punctuation=args.strip_punctuation)


def _print_report(report: dict, args) -> None:
    from .score import report_markdown

    if args.json:
        extra = {"confidence": report["confidence"]} if "confidence" in report else {}
        print(json.dumps({"summary": report["summary"], "statistics": report["statistics"], **extra}, indent=1))
    else:
        print(report_markdown(report))
        for name, m in report.get("confidence", {}).items():
            print(f"word confidence ({name}): {json.dumps(m)}")


def cmd_score(args) -> int:
    from .score import check_ids, read_transcripts, score_texts

    refs = read_transcripts(args.ref, args.format)
    hyps = read_transcripts(args.hyp, args.format)
    check_ids(refs, hyps, args.ref, args.hyp)
    hyps_b = read_transcripts(args.hyp2, args.format) if args.hyp2 else None
    if hyps_b is not None:
        check_ids(refs, hyps_b, args.ref, args.hyp2)
    report = score_texts(refs, hyps, _normalizer(args), hyps_b, args.bootstrap, args.out_dir)
    _print_report(report, args)
    return 0


def cmd_evaluate(args) -> int:
    from .data import read_manifest
    from .recognizer import decode_utterances, load
    from .score import score_texts, write_kaldi_text

    rec = load(args.model)
    utts = read_manifest(args.manifest)
    nbest: dict = {}
    hyps, timing, _ = decode_utterances(rec, utts, decoder=_decoder(args, rec), nbest=nbest)
    refs = {u.id: u.text for u in utts}
    report = score_texts(refs, hyps, _normalizer(args), None, args.bootstrap, args.out_dir)
    if args.nbest > 1:
        out = Path(args.out_dir or ".") / "hyp.nbest.txt"
        from .cli_tools import write_nbest

        report["statistics"].update({"nbest": args.nbest, **write_nbest(nbest, out, refs)})
    if args.confidence:
        from .cli_tools import confidence_report

        report["confidence"] = confidence_report(rec, utts, _decoder(args, rec), args.out_dir)
    if args.out_dir:
        write_kaldi_text(hyps, Path(args.out_dir) / "hyp.txt")
        write_kaldi_text(refs, Path(args.out_dir) / "ref.txt")
    report["statistics"]["rtf"] = round(timing["rtf"], 5)
    _print_report(report, args)
    return 0


def _add_scoring(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out-dir", help="write report.txt (with alignments), report.md, report.json")
    p.add_argument("--lowercase", action="store_true", help="lowercase ref and hyp before scoring")
    p.add_argument("--strip-punctuation", action="store_true",
                   help="remove punctuation (keeps word-internal ' and -) from ref and hyp")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (0: off)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def cmd_transcribe(args) -> int:
    from tqdm import tqdm

    from .audio import AudioError
    from .transcribe import SegmentOptions, list_audio_files, transcribe, write_outputs

    if args.stream:
        from .cli_tools import transcribe_stream

        return transcribe_stream(args)
    opts = SegmentOptions(max_segment_s=args.max_segment)
    jobs, problems = list_audio_files(args.paths)
    for p in problems:
        (log.warning if p.kind == "mapped" else log.error)("%s: %s", p.id, p.reason)
    rec = _recognizer(args)
    formats = args.formats
    t0, audio_s, kaldi = time.perf_counter(), 0.0, {}
    failures = [p for p in problems if p.kind == "skipped"]
    for path, uid in tqdm(jobs, desc="transcribe", unit="file", disable=not sys.stderr.isatty()):
        try:
            tr = transcribe(rec, path, opts=opts)
        except AudioError as e:
            failures.append(e)
            log.error("failed: %s", e)
            continue
        audio_s += tr.duration
        kaldi[uid] = tr.text
        if args.output_dir:
            write_outputs(tr, Path(args.output_dir) / uid, formats)
        else:
            print(f"{path}\t{tr.text}")
    if args.output_dir:
        from .score import write_kaldi_text

        write_kaldi_text(kaldi, Path(args.output_dir) / "text")
    elapsed = time.perf_counter() - t0
    log.info("%d files, %.1fs audio in %.1fs, RTF %.4f; %d failed", len(kaldi), audio_s, elapsed,
             elapsed / max(audio_s, 1e-9), len(failures))
    return 1 if failures else 0


def _corpus_parsers(sub) -> None:
    from .corpora.real import PREPARERS

    p = sub.add_parser("prepare", help="prepare a corpus (synthesize, or read a local copy) into manifests")
    p.add_argument("corpus", choices=["digits", *PREPARERS, "kaldi"])
    p.add_argument("--out", help="output directory (digits: default data_dir from the config)")
    p.add_argument("--root", help="corpus folder (a Kaldi data dir for 'kaldi')")
    p.add_argument("--split", help="corpus subset, e.g. dev-clean, train, test; the manifest's name")
    p.add_argument("--allow-pipes", action="store_true", help="kaldi: run piped wav.scp commands")
    _add_config(p, required=False)
    p.set_defaults(func=cmd_prepare)
    p = sub.add_parser("train", help="compute features and train a model from a recipe config")
    _add_config(p)
    p.set_defaults(func=cmd_train)


def _scoring_parsers(sub) -> None:
    from .score import TRANSCRIPT_FORMATS

    p = sub.add_parser("decode", help="decode a manifest, write Kaldi-text hypotheses and score")
    p.add_argument("--model", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True, help="hypothesis file (Kaldi text)")
    _add_decoding(p)
    p.set_defaults(func=cmd_decode)
    p = sub.add_parser("score", help="sclite-grade scoring of hypotheses against references")
    p.add_argument("--ref", required=True, help="reference transcripts (trn or Kaldi text)")
    p.add_argument("--hyp", required=True, help="hypothesis transcripts, same format")
    p.add_argument("--hyp2", help="a second system's hypotheses: paired bootstrap test")
    p.add_argument("--format", choices=TRANSCRIPT_FORMATS, default="auto")
    _add_scoring(p)
    p.set_defaults(func=cmd_score)
    p = sub.add_parser("evaluate", help="decode a manifest with a model, then score it")
    p.add_argument("--model", required=True)
    p.add_argument("--manifest", required=True)
    _add_scoring(p)
    _add_decoding(p)
    p.add_argument("--confidence", action="store_true",
                   help="report ECE, NCE and AUROC of word confidence (raw and calibrated) and words to check")
    p.set_defaults(func=cmd_evaluate)


def _transcribe_parser(sub) -> None:
    from .transcribe import WRITERS

    p = sub.add_parser("transcribe", help="transcribe audio files or directories (recursive)")
    p.add_argument("--model", required=True)
    p.add_argument("paths", nargs="+")
    p.add_argument("--output-dir", help="write <id>.<format> per file and a Kaldi `text` for all")
    p.add_argument("--formats", default=",".join(WRITERS), type=_formats(tuple(WRITERS)),
                   help=f"comma-separated, any of: {','.join(WRITERS)}")
    _add_decoding(p)
    p.add_argument("--max-segment", type=float, default=20.0, help="longest decoded segment (s)")
    p.add_argument("--int8", action="store_true", help="dynamic int8 quantization (about 2x faster on CPU; "
                   "an ONNX export: its int8 graph)")
    g = p.add_argument_group("live input (--stream: one source, a file or '-' for stdin)")
    g.add_argument("--stream", action="store_true", help="print partial and final results as audio arrives")
    g.add_argument("--rate", type=int, help="stdin is raw 16-bit little-endian mono PCM at this rate "
                   "(default: a WAV stream)")
    g.add_argument("--realtime", action="store_true", help="feed a file no faster than real time")
    g.add_argument("--jsonl", action="store_true", help="one JSON object per event")
    _add_streaming(p)
    p.set_defaults(func=cmd_transcribe)
    p = sub.add_parser("serve", help="HTTP + WebSocket recognition server with a web page")
    p.add_argument("--model", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="0: any free port (printed)")
    p.add_argument("--workers", type=int, default=0, help="inference threads (0: one per core)")
    p.add_argument("--queue", type=int, default=4, help="uploads waiting for a worker before 503")
    p.add_argument("--max-streams", type=int, default=32)
    p.add_argument("--max-upload-mb", type=float, default=50.0)
    p.add_argument("--max-stream-s", type=float, default=3600.0)
    p.add_argument("--idle-timeout", type=float, default=30.0, help="seconds a stream may stay silent on the wire")
    p.add_argument("--int8", action="store_true", help="dynamic int8 quantization")
    _add_decoding(p)
    _add_streaming(p)
    p.set_defaults(func=cmd_serve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="asr", description="BiLSTM-CTC speech recognition toolkit")
    _add_verbosity(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    from .cli_tools import model_tool_parsers       # the model tools: align, adapt, calibrate, export, ...

    for add in (_corpus_parsers, _scoring_parsers, _transcribe_parser, model_tool_parsers):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbosity)
    return _run(lambda: args.func(args), f"asr {args.command}")


def _run(fn, what: str) -> int:
    """Run ``fn``: an :class:`AsrError` (bad input, config or environment) or an ``OSError`` (a
    missing or unreadable file, named in its message) becomes one line and
    exit 2; anything else is a bug and keeps its traceback."""
    try:
        return fn()
    except (AsrError, OSError, UnicodeDecodeError) as e:   # bad input, config, environment; a missing file
        print(f"{what}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{what}: interrupted", file=sys.stderr)
        return 130


def recipe_main(stages, default_config: Path, argv: Sequence[str] | None = None) -> int:
    """Stage runner shared by recipe ``run.py`` scripts."""
    from .recipe import RecipePaths, run_stages
    from .results import code_version, results_table

    p = argparse.ArgumentParser(description="run a recipe's stages: " + ", ".join(
        f"{i} {st.name}" for i, st in enumerate(stages)))
    _add_config(p, required=False, default=str(default_config))
    _add_verbosity(p)
    p.add_argument("--stage", type=int, default=0, help="first stage to run")
    p.add_argument("--stop-stage", type=int, default=len(stages) - 1, help="last stage to run")
    p.add_argument("--force", action="store_true", help="rerun stages even if finished")
    args = p.parse_args(argv)
    setup_logging(args.verbosity)

    def go() -> int:
        cfg = _config(args)
        log.info("%s: config %s (%s), code %s, %d Hz", cfg.name, args.config, cfg.digest(), code_version(),
                 SAMPLE_RATE_HZ)
        run_stages(cfg, stages, args.stage, args.stop_stage, args.force)
        results = RecipePaths.of(cfg).exp_dir / "results.json"
        if args.stop_stage >= len(stages) - 1 and results.exists():
            print(results_table(json.loads(results.read_text())))     # the table the recipe ends with
        return 0
    return _run(go, "recipe")


if __name__ == "__main__":
    sys.exit(main())
