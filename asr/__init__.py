"""asr: a small, reproducible BiLSTM-CTC speech recognition toolkit."""
__version__ = "0.1.0"


def load_model(path, device: str = "cpu", int8: bool = False):
    """Load a self-describing checkpoint; see :func:`asr.model.load_model`."""
    from .model import load_model as _load

    return _load(path, device, int8)
