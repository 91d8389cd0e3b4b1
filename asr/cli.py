"""The ``asr`` command: thin wrappers over library functions, one per subcommand."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from .audio import SAMPLE_RATE_HZ
from .config import ConfigError, parse_override
from .errors import AsrError

log = logging.getLogger("asr.cli")



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


def _config(args):
    from .recipe import load_config

    return load_config(args.config, dict(parse_override(o) for o in args.set or []))


def _add_config(p: argparse.ArgumentParser, required: bool = True, default: str | None = None) -> None:
    p.add_argument("--config", required=required, default=default, help="recipe YAML")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=3 (repeatable)")


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
    g.add_argument("--tuned", help="a recipe's decode/tuned.json: take lm_weight and word_score from it")
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
    if args.hotwords:
        raise ConfigError("--hotwords boosts a decoder pack's LM: give --decoder PACK (asr adapt)")
    lm_weight, word_score = args.lm_weight, args.word_score
    if args.tuned:
        tuned = json.loads(Path(args.tuned).read_text())
        lm_weight, word_score = tuned["lm_weight"], tuned["word_score"]
    if args.grammar and args.phrases:
        raise ConfigError("give --grammar or --phrases, not both")
    grammar = args.grammar or args.phrases or ""
    method = "grammar" if grammar else args.method
    cfg = DecodeConfig(method=method, beam_size=args.beam_size, lexicon=args.lexicon, lm=args.lm,
                       lm_weight=lm_weight, word_score=word_score, unk_score=args.unk_score, nbest=args.nbest,
                       grammar=grammar)
    cfg.check("decode options")
    return cfg


def _decoder(args, rec):
    """The decoder the command line asks for."""
    return rec.make_decoder(_decode_config(args, rec.tokenizer))


def _recognizer(args):
    """What ``--model`` names, with the decoder the command line asks for: an ONNX export
    directory (``asr export``: the torch-free runtime, greedy decoding), a package
    (``asr package``: verified, its LM used by beam_lm) or a checkpoint."""
    from .lite import is_export, load_lite

    if is_export(args.model):
        if args.method != "greedy" or args.grammar or args.phrases or args.decoder:
            raise ConfigError(f"{args.model}: an ONNX export decodes greedily (--method {_decode_config(args).method} "
                              "needs the checkpoint)")
        return load_lite(args.model, int8=args.int8)
    if str(args.model).endswith((".tar.gz", ".tgz")):
        from .package import load_package

        return load_package(args.model, int8=args.int8, decode=_decode_config(args))
    from .recognizer import load

    rec = load(args.model, int8=args.int8)
    return rec.with_decoder(_decoder(args, rec))


def _stream_config(args):
    from .stream import StreamConfig

    return StreamConfig(chunk_frames=args.chunk, right_frames=args.right, endpoint_s=args.endpoint)


def _add_streaming(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("streaming")
    g.add_argument("--chunk", type=int, default=8, help="output frames per chunk")
    g.add_argument("--right", type=int, default=4, help="look-ahead output frames")
    g.add_argument("--endpoint", type=float, default=0.5, help="seconds of blank after speech that end an utterance")


def cmd_serve(args) -> int:
    from .recognizer import load
    from .serve import ServeConfig, serve

    rec = load(args.model, int8=args.int8)
    decode = _decode_config(args, rec.tokenizer)
    cfg = ServeConfig(workers=args.workers, queue=args.queue, max_streams=args.max_streams,
                      max_upload_mb=args.max_upload_mb, max_stream_s=args.max_stream_s,
                      idle_timeout_s=args.idle_timeout, method=decode.method, decode=decode,
                      stream=_stream_config(args))
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
        extra = _write_nbest(nbest, Path(f"{args.out}.nbest"), {u.id: u.text for u in utts})
    print(json.dumps({**rates.as_dict(), "rtf": round(timing["rtf"], 5), **extra}))
    return 0


def _write_nbest(nbest: dict, path: Path, refs: dict | None = None) -> dict:
    """``id<TAB>rank<TAB>score<TAB>text`` per alternative; with ``refs``, the N-best oracle WER
    (each utterance's alternative with the fewest word errors)."""
    from .score import oracle_wer

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{i}\t{r}\t{sc:.4f}\t{t}\n" for i, alts in sorted(nbest.items())
                            for r, (t, sc) in enumerate(alts, 1)), encoding="utf-8")
    return {"nbest_file": str(path), **({"oracle_wer": round(oracle_wer(refs, nbest), 3)} if refs else {})}


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
        report["statistics"].update({"nbest": args.nbest, **_write_nbest(nbest, out, refs)})
    if args.confidence:
        report["confidence"] = _confidence_report(rec, utts, _decoder(args, rec), args.out_dir)
    if args.out_dir:
        write_kaldi_text(hyps, Path(args.out_dir) / "hyp.txt")
        write_kaldi_text(refs, Path(args.out_dir) / "ref.txt")
    report["statistics"]["rtf"] = round(timing["rtf"], 5)
    _print_report(report, args)
    return 0


def _confidence_report(rec, utts, decoder, out_dir) -> dict:
    """ECE, NCE and error-detection AUROC of word confidences, raw and calibrated (when the model
    has a calibration); ``out_dir/words_to_check.txt``: hypothesis words below 0.5, least sure first."""
    from .calibration import metrics
    from .recognizer import word_confidences

    scored = word_confidences(rec, utts, decoder)
    conf = [w.confidence for _, ws, _ in scored for w in ws]
    right = [c for _, _, cs in scored for c in cs]
    out = {"raw": metrics(conf, right)}
    cal = rec.calibration
    if cal is not None:
        conf = [float(cal(c)) for c in conf]
        out["calibrated"] = {**metrics(conf, right), "a": round(cal.a, 4), "b": round(cal.b, 4), "fitted_on": cal.fitted_on}
    if out_dir:
        rows = sorted(((c, i, w) for (i, ws, _), cs in zip(scored, _chunks(conf, scored)) for w, c in zip(ws, cs)
                       if c < 0.5), key=lambda r: r[0])
        path = Path(out_dir) / "words_to_check.txt"
        path.write_text("".join(f"{i}\t{w.start:.2f}\t{w.end:.2f}\t{c:.3f}\t{w.word}\n" for c, i, w in rows))
        out["words_to_check"] = {"file": str(path), "words": len(rows)}
    return out


def _chunks(values: list, scored: list) -> list[list]:
    """``values`` (one per word) cut back into per-utterance lists."""
    out, k = [], 0
    for _, ws, _ in scored:
        out.append(values[k: k + len(ws)])
        k += len(ws)
    return out


def cmd_calibrate(args) -> int:
    from .calibration import CALIBRATION_FILE, fit, metrics
    from .data import read_manifest
    from .recognizer import load, word_confidences

    rec = load(args.model)
    scored = word_confidences(rec, read_manifest(args.manifest), _decoder(args, rec))
    conf = [w.confidence for _, ws, _ in scored for w in ws]
    right = [c for _, _, cs in scored for c in cs]
    cal = fit(conf, right, fitted_on=f"{args.manifest} ({args.method})")
    out = Path(args.out) if args.out else Path(args.model).parent / CALIBRATION_FILE
    cal.save(out)
    print(json.dumps({"calibration": str(out), "a": round(cal.a, 4), "b": round(cal.b, 4),
                      "before": metrics(conf, right), "after": metrics([float(cal(c)) for c in conf], right)}))
    return 0


def _add_scoring(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out-dir", help="write report.txt (with alignments), report.md, report.json")
    p.add_argument("--lowercase", action="store_true", help="lowercase ref and hyp before scoring")
    p.add_argument("--strip-punctuation", action="store_true",
                   help="remove punctuation (keeps word-internal ' and -) from ref and hyp")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (0: off)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def _formats(allowed: tuple[str, ...]):
    """argparse type: a comma-separated subset of ``allowed``."""
    def parse(text: str) -> list[str]:
        chosen = [f for f in text.split(",") if f]
        bad = [f for f in chosen if f not in allowed]
        if bad or not chosen:
            raise argparse.ArgumentTypeError(f"{text!r}: choose from {','.join(allowed)}")
        return chosen
    return parse


def cmd_transcribe(args) -> int:
    from tqdm import tqdm

    from .audio import AudioError
    from .transcribe import SegmentOptions, list_audio_files, transcribe, write_outputs

    if args.stream:
        return _transcribe_stream(args)
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


def _transcribe_stream(args) -> int:
    """``asr transcribe --stream SOURCE``: partial and final results as they happen."""
    from .recognizer import load
    from .stream import Streamer, file_blocks, paced, pcm_blocks, run_stream

    from .lite import is_export

    if is_export(args.model):
        raise ConfigError(f"{args.model}: --stream runs on a checkpoint (an ONNX export streams through "
                          "the library: asr.lite.ChunkRunner)")
    if len(args.paths) != 1:
        raise ConfigError(f"--stream takes one source ('-' for stdin or a file), got {len(args.paths)}")
    rec = load(args.model, int8=args.int8)
    cfg = _stream_config(args)
    streamer = Streamer(rec, cfg, _decoder(args, rec))
    source = args.paths[0]
    blocks = pcm_blocks(sys.stdin.buffer, "<stdin>", args.rate) if source == "-" else file_blocks(source)
    if args.realtime:
        blocks = paced(blocks)
    log.info("streaming: chunk %d + look-ahead %d frames = %.0f ms algorithmic latency",
             cfg.chunk_frames, cfg.right_frames, 1000 * cfg.latency_s(rec.frame_s))
    for event in run_stream(streamer, blocks):
        if args.jsonl:
            print(json.dumps(event.to_dict()), flush=True)
        else:
            print(f"{event.kind:7s} {event.start:7.2f} {event.end:7.2f}  {event.text}", flush=True)
    return 0


def _model_only(args):
    """``--model`` as a recognizer (decoder unused): an export, a package or a checkpoint."""
    from .lite import is_export, load_lite

    if is_export(args.model):
        return load_lite(args.model, int8=args.int8)
    if str(args.model).endswith((".tar.gz", ".tgz")):
        from .package import load_package

        return load_package(args.model, int8=args.int8)
    from .recognizer import load

    return load(args.model, int8=args.int8)


def cmd_align(args) -> int:
    from .alignment import AlignOptions, align_recording, align_utterances, to_ctm, write_alignment

    rec, opts = _model_only(args), AlignOptions(piece_s=args.piece_s, min_confidence=args.min_confidence)
    if args.manifest or args.kaldi:
        if args.audio or not args.output_dir:
            raise ConfigError("--manifest/--kaldi take no audio file and need --output-dir")
        if args.kaldi:
            from .corpora.kaldi import import_kaldi_dir

            utts, bad = import_kaldi_dir(args.kaldi)
        else:
            from .data import read_manifest

            utts, bad = read_manifest(args.manifest), []
        done, problems = align_utterances(rec, utts, args.output_dir, args.formats, opts)
        for p in problems:
            log.error("%s: %s", p.id, p.reason)
        spans = sum(len(a.unaligned) for a in done.values())
        log.info("aligned %d of %d utterances; %d unaligned spans (%s)", len(done), len(utts), spans,
                 Path(args.output_dir) / "unaligned.txt")
        return 1 if problems or spans or bad else 0
    if not args.audio or (args.text is None) == (args.text_file is None):
        raise ConfigError("asr align needs one audio file and --text or --text-file (or --manifest/--kaldi)")
    text = args.text if args.text is not None else Path(args.text_file).read_text(encoding="utf-8")
    al = align_recording(rec, args.audio, text, opts=opts)
    uid = Path(args.audio).stem
    for s in al.unaligned:
        log.warning("unaligned words %d-%d (%.2f-%.2f s, %s): %s", s.first_word, s.end_word, s.start, s.end,
                    s.reason, s.text)
    if args.output_dir:
        for path in write_alignment(al, Path(args.output_dir) / uid, uid, args.formats):
            print(path)
    else:
        print(to_ctm(al, uid), end="")
    return 1 if al.unaligned else 0


def cmd_adapt(args) -> int:
    from .adapt import build_pack
    from .data import read_manifest

    dev = read_manifest(args.dev) if args.dev else None
    pack = build_pack(_model_only(args), args.text, args.out, args.order, dev)
    desc = json.loads((pack / "decoder.json").read_text())
    print(json.dumps({"pack": str(pack), "words": desc["words"], "sentences": desc["sentences"],
                      "tuned": {k: v for k, v in (desc["tuned"] or {}).items() if k != "grid"} or None}))
    return 0


def cmd_export(args) -> int:
    from .export import export_onnx

    print(export_onnx(args.model, args.out, int8=not args.no_int8, chunk=not args.no_chunk).parent)
    return 0


def cmd_package(args) -> int:
    from .config import to_dict
    from .package import build_package

    print(build_package(args.exp_dir, args.out, to_dict(_config(args)) if args.config else None))
    return 0


def cmd_report(args) -> int:
    from .config import to_dict
    from .report import build_report

    print(build_report(args.exp_dir, to_dict(_config(args)) if args.config else None, args.out))
    return 0


def cmd_lm_build(args) -> int:
    from .lm import build_lm, word_counts, write_lexicon
    from .text import CharTokenizer

    out = build_lm(args.text, args.out, args.order, args.prune or (), args.memory, not args.arpa_only)
    print(out)
    if args.lexicon:
        lines = Path(args.text).read_text(encoding="utf-8").splitlines()
        n, skipped = write_lexicon(word_counts(lines), CharTokenizer(), args.lexicon)
        print(f"{args.lexicon}\t{n} words" + (f", {len(skipped)} not spellable: {skipped[:10]}" if skipped else ""))
    return 0


def cmd_average(args) -> int:
    from .checkpoint import average_payloads
    from .files import atomic_save

    atomic_save(average_payloads(args.models), args.out)
    print(f"{args.out}\taverage of {len(args.models)} checkpoints")
    return 0


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
    p = sub.add_parser("calibrate", help="fit word-confidence calibration on a dev manifest "
                       "(written beside the model: used by transcribe, serve, export, package)")
    p.add_argument("--model", required=True)
    p.add_argument("--manifest", required=True, help="dev utterances with reference text")
    p.add_argument("--out", help="default: calibration.json beside the model")
    _add_decoding(p)
    p.set_defaults(func=cmd_calibrate)


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


def _model_tool_parsers(sub) -> None:
    p = sub.add_parser("lm", help="language model tools")
    lm_sub = p.add_subparsers(dest="lm_command", required=True)
    p = lm_sub.add_parser("build", help="train a KenLM word n-gram (ARPA + binary) from a text file")
    p.add_argument("--text", required=True, help="training text, one normalized sentence per line")
    p.add_argument("--out", required=True, help="LM file: *.arpa for ARPA only, else a KenLM binary")
    p.add_argument("--order", type=int, default=3)
    p.add_argument("--prune", type=int, nargs="*", help="lmplz --prune count thresholds per order")
    p.add_argument("--memory", default="20%", help="lmplz sort memory (-S)")
    p.add_argument("--arpa-only", action="store_true", help="skip build_binary")
    p.add_argument("--lexicon", help="also write a spelling lexicon of the text's words here")
    p.set_defaults(func=cmd_lm_build)
    from .alignment import ALIGN_WRITERS

    p = sub.add_parser("align", help="forced alignment of a given transcript: word and unit times "
                       "(JSON, CTM, Praat TextGrid, SRT); unalignable text reported with its span")
    p.add_argument("--model", required=True, help="checkpoint, ONNX export directory or package")
    p.add_argument("audio", nargs="?", help="one recording (any length)")
    p.add_argument("--text", help="its transcript")
    p.add_argument("--text-file", help="its transcript, from a file")
    p.add_argument("--manifest", help="align every utterance of a JSONL manifest to its text")
    p.add_argument("--kaldi", help="align every utterance of a Kaldi data dir (wav.scp, text, segments)")
    p.add_argument("--output-dir", help="write <id>.<format> (default for one file: CTM on stdout)")
    p.add_argument("--formats", default="json,ctm,textgrid,srt", type=_formats(tuple(ALIGN_WRITERS)),
                   help=f"comma-separated, any of: {','.join(ALIGN_WRITERS)}")
    p.add_argument("--piece-s", type=float, default=20.0, help="longest piece of audio aligned at once (s)")
    p.add_argument("--min-confidence", type=float, default=0.02,
                   help="words aligned with a lower posterior are reported as unaligned")
    p.add_argument("--int8", action="store_true")
    p.set_defaults(func=cmd_align)
    p = sub.add_parser("adapt", help="a decoder pack for your vocabulary from text alone: lexicon + n-gram LM "
                       "(+ LM weights tuned on a dev manifest); use it with --decoder PACK")
    p.add_argument("--model", required=True)
    p.add_argument("--text", required=True, help="domain text, one sentence per line")
    p.add_argument("--out", required=True, help="pack directory")
    p.add_argument("--dev", help="a dev manifest to tune the LM weight and word score on")
    p.add_argument("--order", type=int, default=3)
    p.add_argument("--int8", action="store_true")
    p.set_defaults(func=cmd_adapt)
    p = sub.add_parser("export", help="export a model to ONNX for the torch-free runtime (asr transcribe --model DIR)")
    p.add_argument("--model", required=True, help="checkpoint (best.pt, an averaged model, ...)")
    p.add_argument("--format", choices=["onnx"], default="onnx")
    p.add_argument("--out", required=True, help="export directory")
    p.add_argument("--no-int8", action="store_true", help="skip the int8-quantized graphs")
    p.add_argument("--no-chunk", action="store_true", help="skip the streaming chunk graph")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("package", help="pack an experiment (model, config, LM, results, model card, SHA-256 "
                       "of every file) into NAME.tar.gz for asr transcribe --model NAME.tar.gz")
    p.add_argument("exp_dir", help="experiment directory (with best.pt)")
    p.add_argument("--out", required=True, help="NAME.tar.gz")
    _add_config(p, required=False)
    p.set_defaults(func=cmd_package)
    p = sub.add_parser("report", help="one HTML page of an experiment: results, figures, training, commands")
    p.add_argument("exp_dir", help="experiment directory")
    p.add_argument("--out", help="HTML file (default EXP_DIR/report.html)")
    _add_config(p, required=False)
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("average", help="average the weights of checkpoints of one model (e.g. its last epochs)")
    p.add_argument("models", nargs="+", help="model files (epoch<k>.pt, best.pt, last.pt, ...)")
    p.add_argument("--out", required=True, help="the averaged model file")
    p.set_defaults(func=cmd_average)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="asr", description="BiLSTM-CTC speech recognition toolkit")
    _add_verbosity(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_corpus_parsers, _scoring_parsers, _transcribe_parser, _model_tool_parsers):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbosity)
    return _run(lambda: args.func(args), f"asr {args.command}")


def _run(fn, what: str) -> int:
    """Run ``fn``: an :class:`AsrError` (bad input, config or environment) becomes one line and
    exit 2; anything else is a bug and keeps its traceback."""
    try:
        return fn()
    except AsrError as e:
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
