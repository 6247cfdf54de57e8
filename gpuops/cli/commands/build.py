"""``gpuops build``, ``gpuops images`` and ``gpuops lock``: pinned framework images."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gpuops.cli.app import Application, JsonOpt, NoColorOpt, QuietOpt

EnvDirOpt = Annotated[Path, typer.Option("--env-dir", help="Folder of environment specs.")]


def build(
    env: Annotated[str, typer.Argument(help="Environment name (environments/ENV.yaml) or a path to a spec.")],
    print_: Annotated[bool, typer.Option("--print", help="Show the Dockerfile; build nothing.")] = False,
    wheelhouse: Annotated[Path | None, typer.Option(
        "--wheelhouse", envvar="GPUOPS_WHEELHOUSE",
        help="Folder of wheels pip may install from (e.g. a local torch wheel).")] = None,
    ca_cert: Annotated[Path | None, typer.Option(
        "--ca-cert", envvar="GPUOPS_CA_CERT",
        help="CA bundle of a TLS-intercepting proxy, for pip/apt in the build; never stored in a layer.")
    ] = None,
    base_image: Annotated[str | None, typer.Option(
        "--base-image", envvar="GPUOPS_BASE_IMAGE", help="Override the FROM image.")] = None,
    allow_untested: Annotated[bool, typer.Option(
        "--allow-untested", help="Build a combination the knowledge base has no row for (warns).")] = False,
    push: Annotated[str | None, typer.Option(
        "--push", help="After building, tag and push to REGISTRY.")] = None,
    no_selfcheck: Annotated[bool, typer.Option(
        "--no-selfcheck", help="Skip the framework self-check.")] = False,
    env_dir: EnvDirOpt = Path("environments"),
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    no_color: NoColorOpt = False,
) -> None:
    """Build a pinned framework image from environments/ENV.yaml, tagged gpuops/ENV:<content hash>.

    The spec is checked against the compatibility knowledge base first: a known-broken combination
    (TensorFlow 2.17 with CUDA 12.5, Chainer 7.8.1 with CuPy 13, a cu130 torch for a Pascal GPU) is
    refused with the reason and its source. Then the Dockerfile is rendered, built through the Docker
    Engine with streamed progress, labelled (spec hash, gpuops and KB versions, framework, CUDA,
    cuDNN), and a self-check imports the framework inside the image. An unchanged spec is a no-op.

    Build inputs can also come from GPUOPS_BASE_IMAGE, GPUOPS_WHEELHOUSE and GPUOPS_CA_CERT
    (what `gpuops run --target docker` uses to find or build its image).

    \b
    Examples:
      gpuops build pytorch --print
      gpuops build pytorch-cpu --wheelhouse /opt/wheels --ca-cert /etc/ssl/certs/ca-certificates.crt
      gpuops build pytorch --push 123456789012.dkr.ecr.us-east-1.amazonaws.com
    """
    app = Application(json_mode=json_, quiet=quiet, no_color=no_color)
    with app.guard():
        from gpuops.envs import load_environment
        from gpuops.envs.build import BuildOptions, build_image, plan_build, push_image

        spec = load_environment(env, env_dir)
        opts = BuildOptions(base_image=base_image, wheelhouse=wheelhouse, ca_cert=ca_cert,
                            allow_untested=allow_untested, selfcheck=not no_selfcheck)
        if print_:
            plan = plan_build(spec, opts)
            for p in plan.check.untested:
                app.out.warn(p.render())
            if json_:
                app.out.json({"env": spec.name, "tag": plan.tag, "dockerfile": plan.rendered.dockerfile,
                              "labels": plan.labels(), "base_image": plan.rendered.base.image})
            else:
                app.out.console.file.write(plan.rendered.dockerfile)
                app.out.console.file.flush()
            app.exit()
        steps = {"n": 0}

        def on_line(line: str) -> None:
            if quiet:
                return
            if line.startswith("Step "):
                steps["n"] += 1
                head = line.strip()
                app.out.err_console.print(head if len(head) < 160 else head[:157] + "...", style="bold",
                                          markup=False, highlight=False, emoji=False)
            else:
                app.out.err_console.print(line, markup=False, highlight=False, emoji=False)

        built = build_image(spec, opts, on_line=on_line)
        for w in built.warnings:
            app.out.warn(w)
        result = built.as_dict()
        if push:
            result["pushed"] = push_image(built, push)
        if built.cached:
            app.out.info(f"{built.tag} is up to date (spec unchanged); nothing to build")
        sc = built.selfcheck or {}
        lines = [f"[bold]{built.tag}[/bold]  {built.image_id[:19]}  ({'cached' if built.cached else 'built'}"
                 f" in {built.seconds:.1f} s)"]
        if sc:
            state = "[green]ok[/green]" if sc.get("ok") else f"[red]failed[/red]: {sc.get('error')}"
            lines.append(f"self-check: {state}  {sc.get('framework')} {sc.get('version')}  "
                         f"CUDA build {sc.get('cuda_build')}  cuDNN build {sc.get('cudnn_build')}  "
                         f"GPU {'yes: ' + str(sc.get('gpu')) if sc.get('cuda_available') else 'no'}")
        if push:
            lines.append(f"pushed: {result['pushed']['reference']} {result['pushed']['digest']}")
        app.out.result(result, "\n".join(lines))
        if sc and not sc.get("ok"):
            app.exit_code = 1
    app.exit()


def images(
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    no_color: NoColorOpt = False,
) -> None:
    """List the images gpuops built, with their specs and self-check results.

    Reads the Docker Engine's images labelled by gpuops (org.gpuops.*) and the self-check result
    kept for each (in ~/.cache/gpuops/images/).

    \b
    Example:
      gpuops images --json
    """
    app = Application(json_mode=json_, quiet=quiet, no_color=no_color)
    with app.guard():
        from gpuops.envs.build import docker_client
        from gpuops.envs.images import list_images

        rows = list_images(docker_client())
        table = app.out.table(
            ["tag", "framework", "CUDA", "cuDNN", "python", "size MB", "self-check", "created"],
            [[r["tag"], f"{r['framework']} {r['framework_version']}", r["cuda"], r["cudnn"], r["python"],
              r["size_mb"], _selfcheck_cell(r["selfcheck"]), (r["created"] or "")[:19]] for r in rows],
        )
        app.out.result(rows, table if rows else "no gpuops images (build one: gpuops build ENV)")
    app.exit()


def _selfcheck_cell(sc: dict[str, object] | None) -> str:
    if not sc:
        return "not run"
    if not sc.get("ok"):
        return "failed"
    gpu = f", GPU {sc.get('gpu')}" if sc.get("cuda_available") else ""
    return f"ok (CUDA {sc.get('cuda_build')}, cuDNN {sc.get('cudnn_build')}{gpu})"


def lock(
    env: Annotated[str, typer.Argument(help="Environment name or path to a spec.")],
    wheelhouse: Annotated[Path | None, typer.Option("--wheelhouse", help="Extra folder of wheels.")] = None,
    check: Annotated[bool, typer.Option("--check", help="Only check that the lock is up to date.")] = False,
    env_dir: EnvDirOpt = Path("environments"),
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    no_color: NoColorOpt = False,
) -> None:
    """Write environments/ENV.lock.txt: the extra pip packages pinned with sha256 hashes.

    Resolves the spec's pip packages (and gpuops's own runtime requirements, for images that carry
    gpuops) with pip for the image's Python and platform. The build installs them with
    --require-hashes and stops when the lock no longer matches the spec.

    \b
    Examples:
      gpuops lock pytorch
      gpuops lock pytorch --check
    """
    app = Application(json_mode=json_, quiet=quiet, no_color=no_color)
    with app.guard():
        from gpuops.envs import load_environment
        from gpuops.envs.base_image import choose_base_image
        from gpuops.envs.lock import lock_state, require_lock, write_lock

        spec = load_environment(env, env_dir)
        if check:
            st = require_lock(spec)
        else:
            st = write_lock(spec, os_name=choose_base_image(spec).os, find_links=wheelhouse)
        st = lock_state(spec)
        doc = {"env": spec.name, "path": str(st.path) if st.needed else None, "packages": st.packages,
               "fresh": st.fresh}
        msg = (f"{spec.name}: nothing to lock" if not st.needed
               else f"{st.path}: {st.packages} packages, {'up to date' if st.fresh else 'STALE'}")
        app.out.result(doc, msg)
    app.exit()


def register(app: typer.Typer) -> None:
    app.command("build")(build)
    app.command("images")(images)
    app.command("lock")(lock)
