"""What every check shares: the context (facts, knowledge base, error-signature hits) and small
helpers for quoting evidence and asking the knowledge base."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from gpuops.doctor.evidence import join_nvrm
from gpuops.doctor.facts import Facts, gpu_ccs
from gpuops.doctor.history import PackageChange

if TYPE_CHECKING:
    from gpuops.doctor.signatures import Signature

T = TypeVar("T")


@dataclass
class Ctx:
    facts: Facts
    kb: Any | None  # gpuops.knowledge.KnowledgeBase, None when it cannot be loaded
    hits: list[tuple[Signature, str, re.Match[str]]] = field(default_factory=list)
    kb_hits: list[tuple[Any, str]] = field(default_factory=list)  # (ErrorSignature, origin)
    root: str = ""  # prefix for paths written by repair steps
    texts: list[tuple[str, str]] = field(default_factory=list)  # (origin, text) of all evidence

    _resolved: list[Any] | None = None

    @property
    def resolved(self) -> list[Any]:
        """Every catalogue hit over the evidence, resolved (``gpuops.doctor.signatures.Hit``)."""
        if self._resolved is None:
            self._resolved = []
            if self.texts:
                try:
                    from gpuops.doctor import signatures

                    self._resolved = [h for o, t in self.texts for h in signatures.match(t, o)]
                except Exception:  # a catalogue that cannot load (PyYAML broken, cold cache)
                    self._resolved = []
        return self._resolved

    def lines(self) -> list[tuple[str, str]]:
        """(origin, line) of every evidence text, with the kernel's multi-line NVRM messages joined
        into one line each ("NVRM: The NVIDIA GPU ... installed in this system is not supported by
        open\nNVRM: nvidia.ko because ..." reads as one sentence)."""
        return [(o, ln) for o, t in self.texts for ln in join_nvrm(t).splitlines()]

    def resolved_codes(self, *codes: str) -> list[Any]:
        return [h for h in self.resolved if h.code in codes]

    def hit(self, *ids: str) -> tuple[Signature, str, re.Match[str]] | None:
        for h in self.hits:
            if h[0].id in ids:
                return h
        return None

    def kb_hit(self, *ids: str) -> tuple[Any, str] | None:
        for h in self.kb_hits:
            if h[0].id in ids:
                return h
        return None


def make_ctx(facts: Facts, kb: Any | None, root: str = "") -> Ctx:
    ctx = Ctx(facts=facts, kb=kb, root=root)
    texts = list(facts.error_texts)
    texts += [(e.origin, e.text) for e in facts.evidence if e.area != "log" or e.origin == "kernel log"]
    ctx.texts = texts
    ctx.hits = [(h.signature, h.origin, h.match) for h in ctx.resolved]
    if kb is not None:
        try:
            for origin, text in texts:
                for sig in kb.match_errors(text):
                    ctx.kb_hits.append((sig, origin))
        except Exception:  # a broken knowledge base must not stop the diagnosis
            ctx.kb_hits = []
    return ctx


def vkey(v: str | None) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v or "")[:4])


def _quote(origin: str, text: str) -> str:
    text = " ".join(text.split())
    if len(text) > 220:
        text = text[:217] + "..."
    return f"{origin}: {text}"


def _line_around(m: re.Match[str]) -> str:
    s = m.string
    start = s.rfind("\n", 0, m.start()) + 1
    end = s.find("\n", m.end())
    return s[start : end if end != -1 else len(s)]


def _hit_quote(h: tuple[Signature, str, re.Match[str]]) -> str:
    """The log line a built-in signature matched, quoted with its origin."""
    return _quote(h[1], _line_around(h[2]))


def _ask_kb(ctx: Ctx, ask: Callable[[Any], T]) -> T | None:
    """One knowledge-base lookup; None when there is no knowledge base or the lookup fails."""
    if ctx.kb is None:
        return None
    try:
        return ask(ctx.kb)
    except Exception:  # a broken or incomplete knowledge base must not stop the diagnosis
        return None


def _kb_line(hit: tuple[Any, str], texts: list[tuple[str, str]]) -> str:
    """The log line a knowledge-base signature matched, quoted with its origin."""
    sig, origin = hit
    for o, text in texts:
        if o != origin:
            continue
        for line in text.splitlines():
            if any(n.lower() in line.lower() for n in sig.needles):
                return _quote(origin, line)
    return f"{origin}: {sig.text}"


def _stated(f: Facts, key: str, text: str) -> str:
    return f"{text} (stated in the report, not observed)" if key in f.stated_keys else text


def _gpu_names(f: Facts) -> str:
    names = sorted({g.name or "?" for g in f.gpus or []})
    return ", ".join(names) if names else "?"


def _recent(f: Facts, *kinds: str, n: int = 3) -> list[PackageChange]:
    return [c for c in f.history if c.kind in kinds][-n:]


def _gpu_cc(ctx: Ctx) -> list[tuple[str, str]]:
    """(name, cc) of each distinct GPU (``gpuops.doctor.facts.gpu_ccs``)."""
    return gpu_ccs(ctx.facts, ctx.kb)


def _gpu_cc_lines(f: Facts, ccs: list[tuple[str, str]]) -> list[str]:
    return [_stated(f, "gpus", f"GPU: {name} (compute capability {cc})") for name, cc in ccs]


def _driver_works(f: Facts) -> bool:
    return f.smi_status == "ok" or bool(f.gpus and any(g.source == "nvml" for g in f.gpus))


def finding_quote(origin: str, line: str) -> str:
    """An evidence line as findings quote it: ``origin: text`` (whitespace folded, cut to 220)."""
    return _quote(origin, line)


def _gpu_expected(f: Facts) -> bool:
    """A GPU is meant to be here: one is seen or stated, or an NVIDIA driver is installed."""
    if f.gpu_present is False and not f.gpus:
        return False
    driver_pkg = any(
        re.match(r"(nvidia-driver|nvidia-dkms|kmod-nvidia|akmod-nvidia|nvidia-open|nvidia$|nvidia-\d+$|"
                 r"libnvidia-compute|xserver-xorg-video-nvidia)", p)
        for p in f.os_packages or {}
    )
    return (bool(f.gpu_present) or bool(f.gpus) or _driver_works(f) or driver_pkg
            or bool(f.driver_version or f.loaded_module_version or f.module_flavour))


def _driver_cuda_verdict(ctx: Ctx, cuda: str) -> tuple[bool | None, str, str | None]:
    f, kb = ctx.facts, ctx.kb
    if kb is not None and f.driver_version:
        try:
            v = kb.driver_supports_cuda(f.driver_version, cuda)
            return v.ok, v.reason, getattr(v.source, "url", None)
        except Exception:
            pass
    newest = f.cuda_driver_version
    if newest and re.match(r"\d+\.\d+$", cuda) and vkey(cuda)[:1] > vkey(newest)[:1]:
        return False, f"the driver supports CUDA up to {f.cuda_driver_version}", None
    return None, "", None
