"""``asr`` subcommands that work on a trained model: alignment, decoder packs, calibration,
export, packages, reports, LM building and checkpoint averaging; and the pieces of ``transcribe``
and ``evaluate`` for live input, N-best lists and confidence. Thin wrappers over library
functions, like ``asr.cli`` (which builds the one parser from both modules)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .cli_common import _add_config, _add_decoding, _config, _decoder, _formats, _stream_config, log
from .config import ConfigError


def transcribe_stream(args) -> int:
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
    cfg = _stream_config(args, rec)
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


def write_nbest(nbest: dict, path: Path, refs: dict | None = None) -> dict:
    """``id<TAB>rank<TAB>score<TAB>text`` per alternative; with ``refs``, the N-best oracle WER
    (each utterance's alternative with the fewest word errors)."""
    from .score import oracle_wer

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{i}\t{r}\t{sc:.4f}\t{t}\n" for i, alts in sorted(nbest.items())
                            for r, (t, sc) in enumerate(alts, 1)), encoding="utf-8")
    return {"nbest_file": str(path), **({"oracle_wer": round(oracle_wer(refs, nbest), 3)} if refs else {})}


def confidence_report(rec, utts, decoder, out_dir) -> dict:
    """ECE, NCE and error-detection AUROC of word confidences, raw and calibrated (when the model
    has a calibration); ``out_dir/words_to_check.txt``: hypothesis words below 0.5, least sure first."""
    from .recognizer import calibrated_confidences, confidence_metrics, word_confidences

    scored = word_confidences(rec, utts, decoder)
    out = confidence_metrics(scored, rec.calibration)
    if out_dir:
        conf = iter(calibrated_confidences(scored, rec.calibration) if rec.calibration is not None
                    else [w.confidence for s in scored for w in s.words])
        rows = sorted(((c, s.id, w) for s in scored for w, c in zip(s.words, conf) if c < 0.5), key=lambda r: r[0])
        path = Path(out_dir) / "words_to_check.txt"
        path.write_text("".join(f"{i}\t{w.start:.2f}\t{w.end:.2f}\t{c:.3f}\t{w.word}\n" for c, i, w in rows))
        out["words_to_check"] = {"file": str(path), "words": len(rows)}
    return out


def cmd_calibrate(args) -> int:
    from .calibration import CALIBRATION_FILE, file_sha256
    from .data import read_manifest
    from .recognizer import fit_calibration, load

    rec = load(args.model, calibrated=False)
    sets = {m: read_manifest(m) for m in args.manifest}
    cal, report = fit_calibration(rec, sets, _decoder(args, rec), file_sha256(args.model))
    out = Path(args.out) if args.out else Path(args.model).parent / CALIBRATION_FILE
    cal.save(out)
    print(json.dumps({"calibration": str(out), "weights": [round(w, 4) for w in cal.weights],
                      "bias": round(cal.bias, 4), "before": report["all"]["raw"],
                      "after": report["all"]["calibrated"], "sets": report}))
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


def model_tool_parsers(sub) -> None:
    """Subcommands that work on a trained model: lm, average, align, adapt, calibrate, export,
    package, report."""
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
    _words_parsers(sub)


def _words_parsers(sub) -> None:
    """align, adapt, calibrate: the words a model gets right, when, and how sure it is."""
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
    p = sub.add_parser("calibrate", help="fit word-confidence calibration on dev manifests "
                       "(written beside the model: used by transcribe, serve, export, package)")
    p.add_argument("--model", required=True)
    p.add_argument("--manifest", required=True, action="append",
                   help="dev utterances with reference text; repeat it to pool several (dev through "
                   "rooms and noise as well as clean dev: confidence that holds on such audio)")
    p.add_argument("--out", help="default: calibration.json beside the model")
    _add_decoding(p)
    p.set_defaults(func=cmd_calibrate)
