"""``gpuops compat``: what a driver, a GPU or a framework build fits with, from the knowledge base."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from gpuops.cli.app import Application, JsonOpt, NoColorOpt, QuietOpt
from gpuops.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Callable

    from gpuops.doctor.signatures import Hit
    from gpuops.knowledge.models import SourceRef
    from gpuops.knowledge.report import ChainerReport, DriverReport, GpuReport, TFReport, TorchReport
    from gpuops.output import Output


def _e(text: object) -> str:
    from rich.markup import escape

    return escape(str(text))


class _Sources:
    """Collects the sources a rendering cites, to list them once at the end."""

    def __init__(self) -> None:
        self.refs: dict[str, SourceRef] = {}

    def cite(self, ref: SourceRef | None) -> str:
        if ref is None:
            return ""
        self.refs.setdefault(ref.key, ref)
        mark = "" if ref.status == "official" else f", {ref.status}"
        return f" [dim]\\[{_e(ref.key)}{mark}][/dim]"

    def render(self, out: Output) -> None:
        if not self.refs:
            return
        out.print("[bold]Sources[/bold]")
        for key, ref in self.refs.items():
            out.print(f"  {_e(key)} ({ref.status}): {_e(ref.url or 'no URL; see sources.yaml')}")


def _yes(ok: bool | None) -> str:
    return {True: "[green]yes[/green]", False: "[red]no[/red]", None: "[yellow]unknown[/yellow]"}[ok]


def _list(items: list[str]) -> str:
    return ", ".join(items) if items else "-"


# ------------------------------------------------------------------------------------------------
def _render_driver(out: Output, r: DriverReport, src: _Sources) -> None:
    out.print(f"[bold]Driver {_e(r.driver)}[/bold] (Linux x86_64)")
    if r.newest_cuda:
        out.print(
            f"  Newest CUDA with the full feature set: [bold]{_e(r.newest_cuda)}[/bold] "
            f"({_e(r.newest_cuda_label)}){src.cite(r.newest_cuda_source)}"
        )
    else:
        out.print("  Older than every toolkit in the table (CUDA 9.0 needs 384.81).")
    out.print("  Per CUDA family, through minor-version compatibility (limited feature set):")
    for f in r.families:
        extra = f"; full features up to {f.newest_full_feature}" if f.newest_full_feature else ""
        out.print(f"    CUDA {f.family:5} needs >= {f.floor:10} {_yes(f.ok)}{extra}{src.cite(f.source)}")
    rows = [(t.torch, _list(t.fits), _list(t.too_new)) for t in r.torch]
    out.print(
        out.table(["torch", "runs with this driver", "needs a newer driver"], rows, title="PyTorch wheels")
    )
    src.cite(r.torch_source)
    src.cite(r.tensorflow_source)
    ok = [t for t in r.tensorflow if t.verdict.ok]
    bad = [t for t in r.tensorflow if t.verdict.ok is False]
    if ok:
        newest = ok[0]
        out.print(
            f"  TensorFlow: {len(ok)} tested Linux builds fit, newest {_e(newest.version)} "
            f"(CUDA {_e(newest.cuda)}, cuDNN {_e(newest.cudnn)})"
        )
    else:
        out.print("  TensorFlow: no tested Linux build fits this driver")
    unknown = [t.version for t in r.tensorflow if t.verdict.ok is None]
    if unknown:
        out.print(f"  TensorFlow builds for a CUDA older than the driver table: {_e(_list(unknown))}")
    if bad:
        out.print(f"  TensorFlow builds needing a newer driver: {_e(_list([t.version for t in bad]))}")
    if r.chainer_version:
        inside = [c.package for c in r.cupy if c.in_chainer_spec and c.verdict.ok]
        outside = [c.package for c in r.cupy if not c.in_chainer_spec and c.verdict.ok]
        out.print(
            f"  Chainer {_e(r.chainer_version)} (CuPy {_e(r.chainer_cupy_specifier)}): in-spec CuPy wheels "
            f"this driver runs: {_e(_list(inside))}"
        )
        out.print(f"    newer CuPy wheels (outside Chainer's specifier) it runs: {_e(_list(outside))}")


def _render_gpu(out: Output, r: GpuReport, src: _Sources) -> None:
    who = f"{_e(r.query)} -> {_e(r.name)}" if r.name else _e(r.query)
    arch = r.arch.name if r.arch else "unknown architecture"
    out.print(
        f"[bold]GPU {who}[/bold]: compute capability [bold]{_e(r.cc)}[/bold] "
        f"(sm_{_e(r.cc.replace('.', ''))}), {_e(arch)}{src.cite(r.gpu_source)}"
    )
    if r.arch:
        if r.arch.removed_in:
            dep = f"; deprecated since {r.arch.deprecated_in}" if r.arch.deprecated_in else ""
            out.print(
                f"  Last CUDA: {_e(r.arch.last_cuda)} (removed in {_e(r.arch.removed_in)}{_e(dep)})"
                f"{src.cite(r.arch.source)}"
            )
        else:
            first = r.arch.first_cuda.get(r.cc.rstrip("abcdefghijklmnopqrstuvwxyz"))
            since = f" (since CUDA {first})" if first else ""
            out.print(f"  Supported by current CUDA{_e(since)}{src.cite(r.arch.source)}")
    c = r.cudnn
    if c.last_listed:
        tail = f"; not in {c.first_unlisted}" if c.first_unlisted else ""
        out.print(
            f"  cuDNN: newest support matrix read that covers it: {_e(c.last_listed)}{_e(tail)}"
            f"{src.cite(c.source)}"
        )
    rows = [
        (
            t.torch,
            _list(t.with_kernels),
            _list(t.without_kernels) + (f" (unknown: {_list(t.unknown)})" if t.unknown else ""),
        )
        for t in r.torch
    ]
    out.print(
        out.table(
            ["torch", "variants with kernels", "without"],
            rows,
            title=f"PyTorch wheels for sm_{r.cc.replace('.', '')} (Linux x86_64)",
        )
    )
    for t in r.torch:
        for f in t.fits:
            src.cite(f.source)
    if r.recommended_torch:
        out.print(f"  Newest fitting: [bold]{_e(r.recommended_torch)}[/bold]")
    else:
        out.print("  [red]No torch wheel in the knowledge base carries kernels for it.[/red]")
    if r.arch and r.arch.torch_note:
        out.print(f"  Note: {_e(r.arch.torch_note)}")


def _render_torch(out: Output, r: TorchReport, src: _Sources) -> None:
    planned = " [yellow](planned, not released)[/yellow]" if r.planned else ""
    out.print(
        f"[bold]torch {_e(r.query)}[/bold]: series {_e(r.series)}, Python {_e(r.python or '?')}{planned}"
        f"{src.cite(r.source)}"
    )
    if r.cpu_only:
        out.print("  CPU-only build: no CUDA, no GPU kernels. Install a +cuXYZ variant to use the GPU.")
        out.print(f"  CUDA variants: {_e(_list(r.variants))}")
        return
    rows = []
    for b in r.builds:
        archs = b.archs
        sm = " ".join(archs.sms) if archs else "unknown"
        ptx = " ".join(archs.ptx) if archs and archs.ptx else "-"
        if archs:
            src.cite(archs.source)
        floor = b.driver_floor
        drv = "unknown"
        if floor:
            drv = floor.full_feature_min
            if floor.minor_compat_min and floor.minor_compat_min != floor.full_feature_min:
                drv += f" ({floor.minor_compat_min})"
            src.cite(floor.source)
        rows.append((b.variant, b.cuda, b.channel, b.cudnn, sm, ptx, drv))
    out.print(
        out.table(
            [
                "variant",
                "CUDA",
                "channel",
                "cuDNN",
                "SASS (compute capability)",
                "PTX",
                "driver (minor-compat)",
            ],
            rows,
        )
    )
    notes = [f"{b.variant}: {b.note}" for b in r.builds if b.note]
    for n in notes:
        out.print(f"  Note: {_e(n)}")


def _render_tf(out: Output, r: TFReport, src: _Sources) -> None:
    for b in (r.linux, r.windows):
        if b is None:
            continue
        out.print(
            f"[bold]TensorFlow {_e(b.version)}[/bold] ({b.platform}, {_e(b.package)}): "
            f"CUDA [bold]{_e(b.cuda)}[/bold], "
            f"cuDNN [bold]{_e(b.cudnn)}[/bold], Python {_e(b.python)}, {_e(b.compiler)}{src.cite(b.source)}"
        )
    if r.windows is None:
        out.print("  Native Windows: no GPU build (none after TensorFlow 2.10; use WSL2).")
    f = r.driver_floor
    if f:
        minor = f", {f.minor_compat_min} by minor-version compatibility" if f.minor_compat_min else ""
        out.print(
            f"  Driver: >= {_e(f.full_feature_min)} for CUDA {_e(f.label)}{_e(minor)}{src.cite(f.source)}"
        )
    out.print(f"  Loads libcudnn.so.{_e(r.cudnn_major)}; CUDA 13: {_e(r.cuda_13)}")


def _render_chainer(out: Output, r: ChainerReport, src: _Sources) -> None:
    c = r.chainer
    out.print(
        f"[bold]Chainer {_e(c.version)}[/bold]: CuPy [bold]{_e(c.cupy_specifier)}[/bold] "
        f"(recommended {_e(c.cupy_recommended)}), Python {_e(c.python_requires)}{src.cite(c.source)}"
    )
    rows = [(p.package, f"{p.cuda_min} .. {p.cuda_max}", "yes") for p in r.in_spec_packages]
    rows += [(p.package, f"{p.cuda_min} .. {p.cuda_max}", "no (newer CuPy)") for p in r.out_of_spec_packages]
    for p in r.in_spec_packages + r.out_of_spec_packages:
        src.cite(p.source)
    out.print(out.table(["CuPy wheel", "CUDA", "inside Chainer's specifier"], rows))
    out.print(f"  Enforcement: {_e(c.enforcement)}")
    for p in c.pairings:
        out.print(
            f"  CUDA {_e(p.cuda_min)}..{_e(p.cuda_max)}: {_e(p.packages)} (CuPy {_e(p.cupy)})"
            f"{'' if p.in_spec else ' - outside the specifier'} {_e('[' + p.status + ']')}"
            + (f": {_e(p.note)}" if p.note else "")
        )


def _error_text(value: str) -> str:
    """The text of ``--error``: the option's value, or standard input for ``-``."""
    if value != "-":
        return value
    import sys

    return sys.stdin.read()


def _render_hits(out: Output, hits: list[Hit]) -> None:
    from gpuops.doctor.findings import CODES

    if not hits:
        out.print("[bold]No known GPU error signature matches this text.[/bold]")
        out.print(
            "  Gather the machine's state with [bold]gpuops doctor --capture host.yaml[/bold] "
            "(add [bold]--log FILE[/bold] for the full error output) and attach host.yaml to the report."
        )
        return
    for i, h in enumerate(hits):
        if i:
            out.print("")
        out.print(f"[bold]{_e(h.line)}[/bold]")
        out.print(f"  code:    {_e(h.code)}: {_e(CODES.get(h.code, ''))}")
        out.print(f"  meaning: {_e(h.meaning)}")
        out.print(f"  class:   {_e(h.klass)}")
        out.print(f"  action:  {_e(h.action)}")
        out.print(f"  source:  {_e(h.source)}")
        if h.also:
            out.print(f"  [dim]also explained by: {_e(', '.join(h.also))}[/dim]")


# ------------------------------------------------------------------------------------------------
def compat(
    driver: Annotated[
        str | None, typer.Option("--driver", help="NVIDIA driver version, e.g. 535.104.05.")
    ] = None,
    gpu: Annotated[
        str | None, typer.Option("--gpu", help='GPU name ("GTX 980 Ti") or compute capability (5.2, sm_52).')
    ] = None,
    torch: Annotated[
        str | None, typer.Option("--torch", help="torch release or wheel, e.g. 2.13.0+cu130.")
    ] = None,
    tensorflow: Annotated[
        str | None, typer.Option("--tensorflow", help="TensorFlow release, e.g. 2.17.")
    ] = None,
    chainer: Annotated[str | None, typer.Option("--chainer", help="Chainer release, e.g. 7.8.1.")] = None,
    error: Annotated[
        str | None,
        typer.Option(
            "--error",
            metavar="TEXT",
            help="A GPU error text to recognise ('-' reads it from standard input).",
        ),
    ] = None,
    platform: Annotated[
        str,
        typer.Option(
            "--platform", help="Wheel platform for torch arch lists: linux_x86_64, linux_aarch64, windows."
        ),
    ] = "linux_x86_64",
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    no_color: NoColorOpt = False,
) -> None:
    """What a driver, a GPU or a framework build fits with, with the source of every fact.

    Answers from the compatibility knowledge base (NVIDIA release notes and support matrices,
    PyTorch RELEASE.md, TensorFlow tested builds, CuPy/Chainer docs). Give one or more of:

    \b
      --driver   newest CUDA it runs (full features) and per CUDA family through minor-version
                 compatibility; which torch / TensorFlow / Chainer+CuPy builds fit it
      --gpu      compute capability and architecture, last CUDA and cuDNN supporting it, which
                 torch CUDA variants carry kernels for it per torch release
      --torch    a torch wheel's CUDA, cuDNN, compute capabilities and driver floor
      --tensorflow / --chainer   the CUDA, cuDNN and CuPy they need
      --error    which known GPU error an error text is (NVIDIA driver, kernel module, container,
                 CUDA, framework), its meaning, class, recommended action and source; exit 1
                 when no known signature matches

    \b
    Examples:
      gpuops compat --driver 535.104.05
      gpuops compat --gpu "GTX 980 Ti"
      gpuops compat --gpu sm_90 --json
      gpuops compat --torch 2.13.0+cu130
      gpuops compat --tensorflow 2.17 --chainer 7.8.1
      gpuops compat --error "Failed to initialize NVML: Driver/library version mismatch"
      dmesg | gpuops compat --error -
    """
    app = Application(json_mode=json_, quiet=quiet, no_color=no_color)
    with app.guard():
        if not any((driver, gpu, torch, tensorflow, chainer, error)):
            raise UsageError(
                "give at least one of --driver, --gpu, --torch, --tensorflow, --chainer, --error",
                hint="e.g. gpuops compat --driver 535.104.05",
            )
        hits: list[Hit] | None = None
        if error is not None:
            from gpuops.doctor import signatures

            text = _error_text(error)
            if not text.strip():
                raise UsageError(
                    "--error needs a non-empty text", hint='e.g. gpuops compat --error "$(dmesg)"'
                )
            hits = signatures.match(text, "text")
            if not hits:
                app.exit_code = 1
        if not any((driver, gpu, torch, tensorflow, chainer)):
            assert hits is not None
            if app.out.json_mode:
                app.out.json({"error": {"matched": bool(hits), "hits": [h.to_dict() for h in hits]}})
            else:
                _render_hits(app.out, hits)
            app.exit()
        from gpuops.knowledge import load_kb
        from gpuops.knowledge import report as rep

        kb = load_kb()
        result: dict[str, Any] = {"kb_version": kb.kb_version, "compiled": kb.compiled}
        if hits is not None:
            result["error"] = {"matched": bool(hits), "hits": [h.to_dict() for h in hits]}
        parts: list[tuple[Any, Any]] = []
        # (key in the JSON, the option's value, its report, how it renders), in output order
        asked: list[tuple[str, str | None, Callable[[], Any], Any]] = [
            ("driver", driver, lambda: rep.driver_report(kb, driver), _render_driver),
            ("gpu", gpu, lambda: rep.gpu_report(kb, gpu), _render_gpu),
            ("torch", torch, lambda: rep.torch_report(kb, torch, platform), _render_torch),
            ("tensorflow", tensorflow, lambda: rep.tensorflow_report(kb, tensorflow), _render_tf),
            ("chainer", chainer, lambda: rep.chainer_report(kb, chainer), _render_chainer),
        ]
        for key, value, report, render in asked:
            if value:
                r = report()
                result[key] = r.model_dump(mode="json")
                parts.append((render, r))
        if app.out.json_mode:
            app.out.json(result)
        else:
            src = _Sources()
            if hits is not None:
                _render_hits(app.out, hits)
                app.out.print("")
            for i, (render, data) in enumerate(parts):
                if i:
                    app.out.print("")
                render(app.out, data, src)
            app.out.print("")
            src.render(app.out)
            app.out.print(f"[dim]knowledge base {_e(kb.kb_version)} (compiled {_e(kb.compiled)})[/dim]")
    app.exit()


def register(app: typer.Typer) -> None:
    app.command("compat")(compat)
