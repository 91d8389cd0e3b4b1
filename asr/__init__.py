"""asr: a small, reproducible BiLSTM-CTC speech recognition toolkit.

    import asr
    rec = asr.load("exp/digits/best.pt")          # a Recognizer: model, tokenizer, features, decoder
    rec.transcribe("recording.flac").text
"""
__version__ = "0.2.0"


def load(path, device: str = "cpu", int8: bool = False, decode=None, method=None):
    """Load a checkpoint as a :class:`asr.recognizer.Recognizer` (see :func:`asr.recognizer.load`),
    an ONNX export directory as a torch-free :class:`asr.lite.LiteRecognizer`, or a verified
    package (``asr package``)."""
    from .lite import is_export, load_lite

    if is_export(path):
        if (method or getattr(decode, "method", "greedy")) != "greedy":
            from .config import ConfigError

            raise ConfigError(f"{path}: an ONNX export decodes greedily; beam search and grammars need "
                              f"the checkpoint or a package (asked for {method or decode.method!r})")
        return load_lite(path, int8=int8)
    if str(path).endswith((".tar.gz", ".tgz")):
        from .package import load_package

        return load_package(path, int8, decode, method)
    from .recognizer import load as _load

    return _load(path, device, int8, decode, method)


load_model = load          # the name used before the Recognizer existed
