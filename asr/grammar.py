"""Grammars and phrase lists that restrict what a decoder may output.

A JSGF grammar (the subset pocketsphinx users write: ``#JSGF`` header, ``grammar name;``,
``public <rule> = ...;`` and private rules, alternatives ``|``, groups ``( )``, optional
``[ ]``, repetition ``*`` and ``+``, rule references ``<name>``; weights ``/w/`` and tags
``{...}`` are read and ignored) or a phrase file (one phrase per line, ``#`` comments) becomes a
finite list of normalised phrases. Repetition is bounded (``max_repeat``), so every grammar is a
finite set, decoded exactly by scoring each phrase (``decode.GrammarDecoder``).

Errors name the file, the line and the item: a syntax error, an undefined or recursive rule, a
grammar with no public rule or too many phrases, a word the model cannot spell.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import AsrError
from .text import normalize_text

MAX_REPEAT = 3             # X* and X+ expand to at most this many repetitions
MAX_PHRASES = 20000
_TOKEN = re.compile(r"\s*(<[^<>\s]+>|/[^/]*/|\{[^}]*\}|[|()\[\]*+]|[^\s|()\[\]*+<>/{}]+)")


class GrammarError(AsrError):
    """A grammar or phrase file that cannot be used; the message names file, line and item."""


@dataclass
class _Rule:
    name: str
    public: bool
    body: str
    line: int


def _strip_comments(text: str) -> str:
    """Comments removed, line breaks kept (so line numbers stay right)."""
    text = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group().count("\n"), text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def parse_rules(text: str, where: str) -> dict[str, _Rule]:
    """The rules of a JSGF text: name -> rule (with the line it starts on)."""
    text = _strip_comments(text)
    text = re.sub(r"\{[^}]*\}", lambda m: re.sub(r"[^\n]", " ", m.group()), text)   # tags may hold ';'
    tail = text.rsplit(";", 1)[-1] if ";" in text else text
    if tail.strip():
        raise GrammarError(f"{where}:{text.count(chr(10), 0, len(text) - len(tail.lstrip())) + 1}: "
                           f"missing ';' after {tail.strip()[:40]!r}")
    rules: dict[str, _Rule] = {}
    pos = 0
    for stmt in text.split(";"):
        line = text.count("\n", 0, pos + len(stmt) - len(stmt.lstrip())) + 1
        pos += len(stmt) + 1
        s = stmt.strip()
        if not s or s.startswith("#JSGF") or re.fullmatch(r"(grammar|import)\s+\S+", s):
            continue
        m = re.fullmatch(r"(public\s+)?<([^<>\s]+)>\s*=\s*(.*)", s, flags=re.S)
        if not m:
            raise GrammarError(f"{where}:{line}: not a rule definition: {s[:60]!r}")
        if m.group(2) in rules:
            raise GrammarError(f"{where}:{line}: rule <{m.group(2)}> is defined twice")
        rules[m.group(2)] = _Rule(m.group(2), bool(m.group(1)), m.group(3), line)
    return rules


class _Expander:
    """Recursive-descent expansion of rule bodies into finite sets of word tuples."""

    def __init__(self, rules: dict[str, _Rule], where: str):
        self.rules, self.where, self.cache, self.active = rules, where, {}, []

    def rule(self, name: str, line: int) -> set[tuple[str, ...]]:
        if name in ("NULL", "VOID"):
            return {()} if name == "NULL" else set()
        if name not in self.rules:
            raise GrammarError(f"{self.where}:{line}: undefined rule <{name}>")
        if name in self.active:
            raise GrammarError(f"{self.where}:{self.rules[name].line}: rule <{name}> is recursive "
                               f"({' -> '.join(self.active + [name])}); use * or + instead")
        if name not in self.cache:
            self.active.append(name)
            r = self.rules[name]
            tokens = [t for t in _TOKEN.findall(r.body) if not t.startswith(("/", "{"))]
            rest = _TOKEN.sub("", r.body).strip()
            if rest:
                raise GrammarError(f"{self.where}:{r.line}: rule <{name}>: cannot read {rest[:30]!r}")
            self.toks, self.i, self.line = tokens, 0, r.line
            out = self.alternatives()
            if self.i != len(self.toks):
                raise GrammarError(f"{self.where}:{r.line}: rule <{name}>: unexpected {self.toks[self.i]!r}")
            self.cache[name] = out
            self.active.pop()
        return self.cache[name]

    def _check(self, phrases: set) -> set:
        if len(phrases) > MAX_PHRASES:
            raise GrammarError(f"{self.where}:{self.line}: the grammar expands to more than {MAX_PHRASES} phrases")
        return phrases

    def alternatives(self) -> set[tuple[str, ...]]:
        out = self.sequence()
        while self.i < len(self.toks) and self.toks[self.i] == "|":
            self.i += 1
            out = self._check(out | self.sequence())
        return out

    def sequence(self) -> set[tuple[str, ...]]:
        out: set[tuple[str, ...]] = {()}
        while self.i < len(self.toks) and self.toks[self.i] not in ("|", ")", "]"):
            item = self.item()
            self._check(range(len(out) * len(item)))          # before building the product
            out = {a + b for a in out for b in item}
        return out

    def item(self) -> set[tuple[str, ...]]:
        tok = self.toks[self.i]
        self.i += 1
        if tok in ("(", "["):
            inner = self.alternatives()
            close = ")" if tok == "(" else "]"
            if self.i >= len(self.toks) or self.toks[self.i] != close:
                raise GrammarError(f"{self.where}:{self.line}: {tok!r} is never closed")
            self.i += 1
            atom = inner | {()} if tok == "[" else inner
        elif tok.startswith("<"):
            toks, i, line = self.toks, self.i, self.line
            atom = self.rule(tok[1:-1], line)
            self.toks, self.i, self.line = toks, i, line
        elif tok in ("*", "+", ")", "]", "|"):
            raise GrammarError(f"{self.where}:{self.line}: unexpected {tok!r}")
        else:
            if not normalize_text(tok) and any(c.isalnum() for c in tok):
                raise GrammarError(f"{self.where}:{self.line}: word {tok!r} has no letters the model can spell")
            atom = {(tok,)}
        if self.i < len(self.toks) and self.toks[self.i] in ("*", "+"):
            low = 0 if self.toks[self.i] == "*" else 1
            self.i += 1
            self._check(range(sum(len(atom) ** n for n in range(low, MAX_REPEAT + 1))))
            atom = self._check({tuple(itertools.chain(*c)) for n in range(low, MAX_REPEAT + 1)
                                for c in itertools.product(atom, repeat=n)})
        return atom


def jsgf_phrases(path: str | Path) -> list[str]:
    """Every phrase the public rules of a JSGF file accept (normalised, sorted)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise GrammarError(f"{path}: cannot read the grammar ({e})") from None
    rules = parse_rules(text, str(path))
    public = [r for r in rules.values() if r.public]
    if not public:
        raise GrammarError(f"{path}: no public rule (mark the top rule 'public <name> = ...;')")
    ex = _Expander(rules, str(path))
    for r in rules.values():            # every rule must expand, used or not (typos surface)
        ex.rule(r.name, r.line)
    phrases = {normalize_text(" ".join(p)) for r in public for p in ex.rule(r.name, r.line)}
    return sorted(p for p in phrases if p)


def phrase_list(path: str | Path) -> list[tuple[int, str]]:
    """``(line, normalised phrase)`` of a phrase file (blank lines and ``#`` comments skipped)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise GrammarError(f"{path}: cannot read the phrase list ({e})") from None
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        lost = [t for t in line.split() if any(c.isalnum() for c in t) and not normalize_text(t)]
        if lost or not normalize_text(line):
            raise GrammarError(f"{path}:{n}: {'words ' + repr(lost) + ' have' if lost else 'the phrase has'} "
                               "no letters the model can spell")
        out.append((n, normalize_text(line)))
    if not out:
        raise GrammarError(f"{path}: no phrases")
    return out


def load_phrases(path: str | Path, tokenizer) -> list[str]:
    """The phrases of a ``.jsgf`` grammar or a phrase file, each checked against the model's
    units: a word it cannot spell is an error naming file, line and word."""
    path = Path(path)
    if path.suffix.lower() == ".jsgf":
        numbered = [(0, p) for p in jsgf_phrases(path)]
        raw = path.read_text(encoding="utf-8")
    else:
        numbered, raw = phrase_list(path), None
    for n, p in numbered:
        for w in p.split():
            if tokenizer.unknown_chars(w):
                line = n or next((i for i, text in enumerate(raw.splitlines(), 1) if w in normalize_text(text).split()), 0)
                raise GrammarError(f"{path}:{line}: word {w!r} has characters outside the model's units")
    return list(dict.fromkeys(p for _, p in numbered))
