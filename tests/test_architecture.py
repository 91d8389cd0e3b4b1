"""The package's imports form a layered graph with no cycle, and the model is a leaf.

Layers, bottom up: base (errors, config, files, audio, text, runtime) -> model and data ->
features, LM, TTS -> checkpoint, decoders, training sets, corpora -> recognizer/transcribe ->
training -> recipes -> CLI. A module may import its own layer or lower ones (function-local
imports included; ``if TYPE_CHECKING:`` imports are type hints only and not counted)."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "asr"
LAYERS = [
    {"errors", "config", "files", "audio", "text", "runtime", "align", "decode_config", "grammar", "schedule"},
    {"model", "data", "score", "augment", "batching", "calibration"},
    {"features", "lm", "plots", "monitor", "tts", "tts.base", "tts.espeak", "tts.flite", "tts.festival", "tts.piper", "tts.kokoro", "tts.cache"},
    {"checkpoint", "results", "decode", "dataset", "corpora", "corpora.synth", "corpora.digits", "corpora.commands", "corpora.sentences",
     "corpora.real", "corpora.kaldi", "corpora.download", "corpora.robust"},
    {"transcribe", "recognizer", "lite", "export", "alignment"},
    {"train", "stream", "stream_io", "package", "report", "adapt"},
    {"serve"},
    {"recipe", "recipe_tune", "recipe_calibration", "corpora.stages"},
    {"cli", "cli_common", "cli_tools", "__init__", "__main__"},
]
LAYER = {m: i for i, layer in enumerate(LAYERS) for m in layer}


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" and len(rel.parts) > 1 else rel.parts
    return ".".join(parts)


def _resolve(current: str, is_pkg: bool, level: int, target: str | None) -> str:
    base = current.split(".") if current != "__init__" else []
    if not is_pkg:
        base = base[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join([*base, *(target.split(".") if target else [])])


def imports_of(path: Path) -> set[str]:
    """asr modules ``path`` imports (module-level and function-local), as names in LAYER."""
    tree = ast.parse(path.read_text())
    name, is_pkg = module_name(path), path.name == "__init__.py"
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for child in node.body for n in ast.walk(child)}
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                mod = _resolve(name, is_pkg, node.level, node.module)
            elif node.module and node.module.split(".")[0] == "asr":
                mod = node.module.removeprefix("asr").lstrip(".")
            else:
                continue
            for alias in node.names:             # "from . import x" may name a submodule
                sub = f"{mod}.{alias.name}" if mod else alias.name
                out.add(sub if sub in LAYER else mod)
        elif isinstance(node, ast.Import):
            out |= {a.name.removeprefix("asr.") for a in node.names if a.name.startswith("asr.")}
    return {m or "__init__" for m in out} - {name}


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in PKG.rglob("*.py")}


def test_every_module_has_a_layer():
    assert set(graph()) - set(LAYER) == set(), "add new modules to LAYERS"


def test_imports_only_go_down_or_sideways():
    bad = [f"{m} (layer {LAYER[m]}) imports {d} (layer {LAYER[d]})"
           for m, deps in graph().items() for d in deps if LAYER[d] > LAYER[m]]
    assert not bad, "\n".join(bad)


def test_no_import_cycle():
    g, state, cycles = graph(), {}, []

    def visit(m, stack):
        state[m] = "open"
        for d in sorted(g.get(m, ())):
            if state.get(d) == "open":
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d, stack + [d])
        state[m] = "done"
    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert not cycles, cycles


def test_the_checker_sees_a_cycle_and_an_upward_import(tmp_path, monkeypatch):
    """The checks above can fail: a fake package with model -> recipe and data <-> text."""
    fake = tmp_path / "asr"
    fake.mkdir()
    (fake / "model.py").write_text("from .recipe import x\n")
    (fake / "data.py").write_text("from . import text\n")
    (fake / "text.py").write_text("def f():\n    from .data import y\n")
    (fake / "recipe.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .cli import z\n")
    monkeypatch.setattr(sys.modules[__name__], "PKG", fake)
    with pytest.raises(AssertionError, match="model .layer 1. imports recipe"):
        test_imports_only_go_down_or_sideways()
    with pytest.raises(AssertionError, match="data -> text -> data"):
        test_no_import_cycle()
    assert graph()["recipe"] == set()            # type-checking imports are not dependencies


def test_model_is_a_leaf():
    code = "import asr.model, sys; print(sorted(m for m in sys.modules if m.startswith('asr')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=PKG.parent).stdout
    assert eval(out) == ["asr", "asr.config", "asr.errors", "asr.model"]
