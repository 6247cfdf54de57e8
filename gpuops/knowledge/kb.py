"""Queries over the compiled knowledge files (gpuops/knowledge/*.yaml).

The numbers live in the data files (built by scripts/build_knowledge.py from the shared reference);
this module only holds the rules that combine them: minor-version compatibility, the cubin/PTX rule,
matching of GPU names and of framework versions to release series.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from gpuops.errors import UsageError
from gpuops.knowledge.models import (
    Arch,
    ArchList,
    ChainerInfo,
    CudaRange,
    CudnnCC,
    CupyPairing,
    DriverFloor,
    ErrorSignature,
    GpuMatch,
    SourceRef,
    TFBuild,
    TorchBuild,
    TorchVariantFit,
    Verdict,
)
from gpuops.knowledge.versions import (
    cc_tuple,
    components,
    cuda_variant,
    major_minor,
    parse_cc,
    parse_cuda,
    series,
    version_key,
)

FILES = ("sources", "drivers", "torch", "tensorflow", "cupy_chainer", "cudnn", "gpus", "errors")
PLATFORMS = ("linux_x86_64", "linux_aarch64", "windows")

# Words that vendors put in front of product names and that do not tell GPUs apart.
_VENDOR_WORDS = {"nvidia", "geforce", "tesla"}
_RANK = {"official": 0, "secondary": 1, "inferred": 2}


def _weakest(*statuses: str) -> str:
    return max(statuses, key=_RANK.__getitem__)


def _driver_key(driver: str) -> tuple[int, ...]:
    d = str(driver).strip()
    if not re.fullmatch(r"\d+(?:\.\d+){0,3}", d):
        raise UsageError(f"not a driver version: {driver!r} (expected e.g. 535.104.05)")
    return version_key(d)


def _torch_version(text: str) -> tuple[str, str | None]:
    """'2.13.0+cu130' -> ('2.13.0', 'cu130'); '2.1.0' -> ('2.1.0', None)."""
    t = str(text).strip()
    m = re.fullmatch(r"v?(\d+(?:\.\d+){1,2})(?:\+([\w.]+))?", t)
    if not m:
        raise UsageError(f"not a torch version: {text!r} (expected e.g. 2.13.0 or 2.13.0+cu130)")
    return m.group(1), m.group(2)


def _match_release(query: str, candidates: Iterable[str]) -> tuple[str, bool] | None:
    """The candidate release that ``query`` belongs to, and whether it is an exact match.

    Candidates are release series ('2.13', '1.8.x') or exact versions ('2.7.0', '1.12.1'). An exact
    version wins; else the query's series (major.minor) must equal the candidate's.
    """
    qkey = version_key(query)
    cands = list(candidates)
    for c in cands:
        cc = c.removesuffix(".x")
        if len(components(cc)) >= 3 and version_key(cc) == qkey:
            return c, True
    q_series = series(query)
    for c in cands:
        cc = c.removesuffix(".x")
        if len(components(cc)) == 2 and series(cc) == q_series:
            return c, True
    for c in cands:
        cc = c.removesuffix(".x")
        if series(cc) == q_series:
            return c, len(components(query)) == 2
    return None


class KnowledgeBase:
    """The loaded knowledge files and the queries over them. Get one with ``load_kb()``."""

    def __init__(self, data: dict[str, dict[str, Any]]) -> None:
        self._d = data
        head = data["sources"]
        self.kb_version: str = str(head["kb_version"])
        self.compiled: str = str(head["compiled"])
        self.reference_sha256: str = str(head.get("reference_sha256", ""))
        self._sources: dict[str, dict[str, Any]] = head["sources"]
        self._gpu_rows = [(row, self._name_tokens(row["name"])) for row in data["gpus"]["gpus"]]

    # ------------------------------------------------------------------------------------ sources
    def source(
        self, key: str, status: str | None = None, also: Iterable[str] = (), note: str | None = None
    ) -> SourceRef:
        """The ``SourceRef`` of a key in sources.yaml; ``status`` overrides the source's own type."""
        s = self._sources.get(key)
        if s is None:
            raise KeyError(f"unknown source key {key!r}")
        return SourceRef(key=key, url=s.get("url"), status=status or s["status"], also=list(also), note=note)

    def _ref(self, table: dict[str, Any], status: str | None = None, note: str | None = None) -> SourceRef:
        return self.source(
            table["source"],
            status or table["status"],
            table.get("also", ()),
            note or table.get("status_note"),
        )

    def sources(self) -> dict[str, SourceRef]:
        return {k: self.source(k) for k in self._sources}

    # ------------------------------------------------------------------------------------ drivers
    def _toolkit_rows(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        d = self._d["drivers"]
        rows = [(r, d["toolkit_drivers"]) for r in d["toolkit_drivers"]["entries"]]
        rows += [(r, d["toolkit_drivers_unverified"]) for r in d["toolkit_drivers_unverified"]["entries"]]
        return [(r, t) for r, t in rows if r["linux"]]

    def _family(self, major: int) -> dict[str, Any] | None:
        mvc = self._d["drivers"]["minor_version_compatibility"]
        for f in mvc["families"]:
            if int(f["family"]) == major:
                return f
        return None

    def _toolkit_row(self, cuda: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The table row for a CUDA version: 'X.Y' -> its GA row; 'X.Y Update N' or 'X.Y.Z' -> that update."""
        text = parse_cuda(cuda)
        mm = major_minor(text.split()[0])
        rows = [(r, t) for r, t in self._toolkit_rows() if r["cuda"] == mm and r["kind"] != "rc"]
        if not rows:
            return None
        m = re.search(r"Update\s*(\d+)", text, re.IGNORECASE)
        comps = components(text.split()[0])
        update = int(m.group(1)) if m else None
        if update is None and len(comps) >= 3:
            # An exact patch version named in the table ('11.0.2', '10.2.89', '9.2.148').
            exact = [(r, t) for r, t in rows if r["patch"] and version_key(r["patch"]) == version_key(text)]
            if exact:
                return exact[0]
            # From CUDA 11.1 on, the patch number is the update number (the table's own labels:
            # '11.1.1 Update 1', '11.2.2 Update 2', '11.3.1 Update 1', '11.4.0 GA').
            if version_key(mm) >= (11, 1):
                update = comps[2]
        if update is None:
            ga = [(r, t) for r, t in rows if r["kind"] == "ga"]
            return ga[0] if ga else min(rows, key=lambda rt: _driver_key(rt[0]["linux"]))
        known = [(r, t) for r, t in rows if r["kind"] in ("ga", "update") and r["update"] <= update]
        if not known:
            return None
        return max(known, key=lambda rt: rt[0]["update"])

    def min_driver_for_cuda(self, cuda: str) -> DriverFloor | None:
        """Minimum Linux driver for a CUDA toolkit ('12.1', '12.2 Update 2', '12.6.3', 'cu126');
        None when the toolkit is not in the tables."""
        found = self._toolkit_row(cuda)
        if found is None:
            return None
        row, table = found
        full = row["linux"]
        major = int(row["cuda"].split(".")[0])
        minor_min = None
        fam = self._family(major)
        if fam is not None and fam["linux"] and _driver_key(fam["linux"]) <= _driver_key(full):
            minor_min = fam["linux"]
        return DriverFloor(
            cuda=row["cuda"],
            label=row["label"],
            full_feature_min=full,
            minor_compat_min=minor_min,
            windows_min=row.get("windows"),
            source=self._ref(table),
        )

    def driver_supports_cuda(self, driver: str, cuda: str) -> Verdict:
        """Whether a Linux driver runs code built with a CUDA toolkit.

        From CUDA 11 on: yes if the driver reaches the family's minor-version-compatibility floor
        (limited feature set: no PTX JIT of newer code) or the toolkit's own floor; before 11: only the
        toolkit's own floor counts.
        """
        dkey = _driver_key(driver)
        text = parse_cuda(cuda)
        floor = self.min_driver_for_cuda(text)
        mvc = self._d["drivers"]["minor_version_compatibility"]
        if floor is None:
            major = components(text.split()[0])[0]
            fam = self._family(major)
            if fam is None:
                return Verdict(ok=None, reason=f"CUDA {text} is not in the knowledge base")
            ref = self._ref(mvc, status="inferred")
            if dkey >= _driver_key(fam["linux"]):
                return Verdict(
                    ok=True,
                    source=ref,
                    reason=(
                        f"CUDA {text} is not in the toolkit table; driver {driver} >= {fam['linux']}, "
                        f"the CUDA {major}.x minor-version compatibility floor"
                    ),
                )
            return Verdict(
                ok=False,
                source=ref,
                reason=f"driver {driver} is below {fam['linux']}, the lowest driver of any CUDA {major}.x",
            )
        if dkey >= _driver_key(floor.full_feature_min):
            return Verdict(
                ok=True,
                source=floor.source,
                reason=(
                    f"driver {driver} >= {floor.full_feature_min}, the driver of CUDA {floor.label} "
                    "(full feature set)"
                ),
            )
        if floor.minor_compat_min and dkey >= _driver_key(floor.minor_compat_min):
            return Verdict(
                ok=True,
                source=self._ref(mvc),
                reason=(
                    f"driver {driver} >= {floor.minor_compat_min}, the CUDA {floor.cuda.split('.')[0]}.x "
                    "floor: runs through minor-version compatibility (limited feature set; "
                    f"CUDA {floor.label} ships with "
                    f"{floor.full_feature_min})"
                ),
            )
        need = floor.full_feature_min if not floor.minor_compat_min else floor.minor_compat_min
        return Verdict(
            ok=False,
            source=floor.source if not floor.minor_compat_min else self._ref(mvc),
            reason=(f"driver {driver} is older than {need}, the minimum for CUDA {floor.label}"),
        )

    def newest_cuda_for_driver(self, driver: str) -> str | None:
        """The newest CUDA toolkit (major.minor) whose own driver is <= ``driver`` (full feature set)."""
        label = self.newest_toolkit_for_driver(driver)
        return label[0] if label else None

    def newest_toolkit_for_driver(self, driver: str) -> tuple[str, str, SourceRef] | None:
        """(major.minor, table label, source) of the newest toolkit a driver runs with all features."""
        dkey = _driver_key(driver)
        fits = [
            (r, t) for r, t in self._toolkit_rows() if r["kind"] != "rc" and _driver_key(r["linux"]) <= dkey
        ]
        if not fits:
            return None
        r, t = max(fits, key=lambda rt: (version_key(rt[0]["cuda"]), rt[0]["update"]))
        return r["cuda"], r["label"], self._ref(t)

    def minor_compat_families(self) -> list[dict[str, Any]]:
        """The CUDA families with minor-version compatibility: family, Linux floor, source."""
        mvc = self._d["drivers"]["minor_version_compatibility"]
        return [{"family": f["family"], "floor": f["linux"], "source": self._ref(f)} for f in mvc["families"]]

    def toolkits(self) -> list[str]:
        """Every CUDA toolkit (major.minor) in the driver tables, oldest first."""
        seen = {r["cuda"] for r, _ in self._toolkit_rows()}
        return sorted(seen, key=version_key)

    @staticmethod
    def cuda_from_driver_api_int(v: int) -> str:
        """The CUDA version a driver reports through cuDriverGetVersion: 11040 -> '11.4', 12020 -> '12.2'."""
        v = int(v)
        if v <= 0:
            raise UsageError(f"not a CUDA driver API version: {v}")
        return f"{v // 1000}.{(v % 1000) // 10}"

    # ------------------------------------------------------------------------------------ GPUs
    @staticmethod
    def _name_tokens(name: str) -> list[str]:
        return [t for t in re.findall(r"[a-z0-9]+", name.lower()) if t not in _VENDOR_WORDS]

    @staticmethod
    def _token_match(table_tok: str, query_toks: list[str]) -> str | None:
        """'exact', 'wild' ('20xx' matches '2080') or None."""
        if table_tok in query_toks:
            return "exact"
        m = re.fullmatch(r"(\d+)(x+)", table_tok)
        if m:
            rx = re.compile(rf"{m.group(1)}\d{{{len(m.group(2))}}}")
            if any(rx.fullmatch(q) for q in query_toks):
                return "wild"
        return None

    def gpu_lookup(self, name: str) -> GpuMatch | None:
        """Resolve a GPU: a compute capability ('5.2', 'sm_52') or a product name as nvidia-smi or a
        person writes it ('NVIDIA GeForce GTX 1080 Ti', 'GTX 1080', 'Tesla K80', 'H100 80GB HBM3').

        A table name matches when all its words are in the query (vendor words aside); the match with
        the most words wins, so 'GTX 1080 Ti' beats 'GTX 1080'.
        """
        cc = parse_cc(name)
        if cc is not None:
            arch = self.gpu_arch(cc)
            return GpuMatch(
                query=name,
                name=None,
                cc=cc,
                arch=arch.name if arch else None,
                source=arch.source if arch else None,
            )
        q = self._name_tokens(name)
        if not q:
            return None
        best: tuple[tuple[int, int], dict[str, Any]] | None = None
        for row, toks in self._gpu_rows:
            kinds = [self._token_match(t, q) for t in toks]
            if not toks or None in kinds:
                continue
            score = (kinds.count("exact"), kinds.count("wild"))
            if best is None or score > best[0]:
                best = (score, row)
        if best is None:
            return None
        row = best[1]
        return GpuMatch(
            query=name,
            name=row["name"],
            cc=row["cc"],
            arch=row["arch"],
            source=self.source(row["source"], row["status"]),
        )

    def gpu_cc(self, name: str) -> str | None:
        """Compute capability of a GPU name (or of 'sm_52' / '5.2' as given); None if unknown."""
        m = self.gpu_lookup(name)
        return m.cc if m else None

    def gpu_names(self) -> list[tuple[str, str]]:
        return [(row["name"], row["cc"]) for row, _ in self._gpu_rows]

    def gpu_arch(self, cc: str) -> Arch | None:
        """The architecture of a compute capability ('5.2', 'sm_90a'); None if unknown or not one."""
        if parse_cc(cc) is None:
            return None
        major, minor, _ = cc_tuple(cc)
        key = f"{major}.{minor}"
        for a in self._d["gpus"]["architectures"]:
            if key in a["sms"] or key in a.get("former_sms", []):
                return self._arch(a)
        return None

    def architectures(self) -> list[Arch]:
        return [self._arch(a) for a in self._d["gpus"]["architectures"]]

    def _arch(self, a: dict[str, Any]) -> Arch:
        return Arch(
            name=a["name"],
            family=a["family"],
            sms=a["sms"],
            arch_specific=a.get("arch_specific", []),
            former_sms=a.get("former_sms", []),
            first_cuda=a.get("first_cuda") or {},
            last_cuda=a.get("last_cuda"),
            removed_in=a.get("removed_in"),
            deprecated_in=a.get("deprecated_in"),
            cudnn_last_seen=a.get("cudnn_last_seen"),
            torch_note=a.get("torch_note"),
            note=a.get("note"),
            source=self._ref(a),
        )

    @staticmethod
    def build_runs_on(cc: str, archs: Iterable[str], ptx: Iterable[str] = ()) -> bool:
        """NVIDIA's rule: a cubin for X.y runs on a GPU X.z with z >= y (same major); an arch-specific
        cubin ('9.0a') only on that exact GPU; PTX for a capability <= the GPU's is JIT-compiled."""
        dev = cc_tuple(cc)
        for a in archs:
            major, minor, suffix = cc_tuple(a)
            if major == dev[0] and (minor == dev[1] if suffix else minor <= dev[1]):
                return True
        for p in ptx:
            major, minor, suffix = cc_tuple(p)
            if not suffix and (major, minor) <= dev[:2]:
                return True
        return False

    @staticmethod
    def _runs_via(cc: str, sms: list[str], ptx: list[str]) -> str | None:
        dev = cc_tuple(cc)
        cubins = [s for s in sms if KnowledgeBase.build_runs_on(cc, [s])]
        if cubins:
            best = max(cubins, key=lambda s: cc_tuple(s)[:2])
            return (
                f"sm_{best.replace('.', '')} cubin"
                if cc_tuple(best)[:2] == dev[:2]
                else (f"sm_{best.replace('.', '')} cubin (same major, lower minor)")
            )
        jit = [p for p in ptx if KnowledgeBase.build_runs_on(cc, [], [p])]
        if jit:
            return f"PTX {max(jit, key=lambda s: cc_tuple(s)[:2])} JIT-compiled by the driver"
        return None

    # ------------------------------------------------------------------------------------ torch
    def _torch_release(self, torch_version: str) -> dict[str, Any] | None:
        base, _ = _torch_version(torch_version)
        rows = self._d["torch"]["releases"]["rows"]
        hit = _match_release(base, [r["torch"] for r in rows])
        if hit is None:
            return None
        return next(r for r in rows if r["torch"] == hit[0])

    def torch_releases(self) -> list[str]:
        """Release series in the compatibility matrix, newest first ('2.14', ..., '1.12')."""
        return [r["torch"] for r in self._d["torch"]["releases"]["rows"]]

    def torch_builds(self, torch_version: str) -> list[TorchBuild]:
        rel = self._torch_release(torch_version)
        if rel is None:
            return []
        table = self._d["torch"]["releases"]
        return [
            TorchBuild(
                torch=rel["torch"],
                variant=b["variant"],
                cuda=b["cuda"],
                channel=b["channel"],
                cudnn=b["cudnn"],
                nccl=b.get("nccl"),
                python=rel["python"],
                note=b.get("note"),
                source=self._ref(table),
            )
            for b in rel["builds"]
        ]

    def torch_build(self, torch_version: str, cuda: str) -> TorchBuild | None:
        mm = major_minor(parse_cuda(cuda).split()[0])
        return next((b for b in self.torch_builds(torch_version) if b.cuda == mm), None)

    def torch_cudnn(self, torch_version: str, cuda: str) -> str | None:
        """The cuDNN a torch CUDA build ships: ('2.13.0', '12.6') -> '9.10.2.21'."""
        b = self.torch_build(torch_version, cuda)
        return b.cudnn if b else None

    def _variant_row(self, torch_version: str) -> dict[str, Any] | None:
        base, _ = _torch_version(torch_version)
        rows = self._d["torch"]["wheel_variants"]["rows"]
        names = [v for r in rows for v in r["torch"]]
        hit = _match_release(base, names)
        if hit is None:
            return None
        return next(r for r in rows if hit[0] in r["torch"])

    def torch_variants(self, torch_version: str) -> list[str]:
        """The CUDA wheel variants of a torch release: '2.13.0' -> ['cu126', 'cu130', 'cu132']."""
        row = self._variant_row(torch_version)
        return list(row["variants"]) if row else []

    def torch_planned(self, torch_version: str) -> bool:
        """True when the release is only planned (an RFC), not published."""
        row = self._variant_row(torch_version)
        return bool(row and row.get("planned"))

    def torch_variants_source(self, torch_version: str) -> SourceRef | None:
        row = self._variant_row(torch_version)
        return self._ref(row) if row else None

    def torch_arch_list(
        self, torch_version: str, cuda: str, platform: str = "linux_x86_64"
    ) -> ArchList | None:
        """The compute capabilities a torch wheel variant carries kernels for.

        ``torch_version`` '2.13.0' (or a series '2.13'), ``cuda`` '12.6' or 'cu126'. An exact measured
        build ('2.7.0') stands for its series when asked for another patch release, marked inferred.
        """
        if platform not in PLATFORMS:
            raise UsageError(f"unknown platform {platform!r}; one of {', '.join(PLATFORMS)}")
        base, _ = _torch_version(torch_version)
        mm = major_minor(parse_cuda(cuda).split()[0])
        entries = self._d["torch"]["arch_lists"]["entries"]
        names = [t for e in entries for t in e["torch"] if e.get("platforms")]
        hit = _match_release(base, names)
        if hit is None:
            return None
        name, exact = hit
        entry = next(e for e in entries if name in e["torch"] and e.get("platforms"))
        cell = entry["platforms"].get(platform, {}).get(mm)
        if cell is None:
            return None
        status = entry["status"] if exact else "inferred"
        note = None if exact else f"measured on torch {name}, taken for {base}"
        return ArchList(
            torch=name,
            cuda=mm,
            variant=cuda_variant(mm),
            platform=platform,
            sms=cell["sms"],
            ptx=cell["ptx"],
            matched=name,
            status=status,
            source=self._ref(entry, status=status, note=note),
        )

    def torch_arch_series(self) -> list[str]:
        """Torch releases with arch-list data, newest first (one name per series)."""
        by_series: dict[str, str] = {}
        for e in self._d["torch"]["arch_lists"]["entries"]:
            if not e.get("platforms"):
                continue
            for t in e["torch"]:
                s = series(t.removesuffix(".x"))
                if s not in by_series or version_key(t) > version_key(by_series[s]):
                    by_series[s] = t
        return sorted(by_series.values(), key=version_key, reverse=True)

    def torch_variants_for_gpu(
        self, cc: str, torch_version: str | None = None, platform: str = "linux_x86_64"
    ) -> list[TorchVariantFit]:
        """For each torch wheel variant (of one release, or of every release with arch data, newest
        first): does it carry kernels (SASS or usable PTX) for this compute capability?"""
        norm = parse_cc(cc)
        if norm is None:
            raise UsageError(f"not a compute capability: {cc!r} (expected e.g. 8.6 or sm_86)")
        releases = [torch_version] if torch_version else self.torch_arch_series()
        out: list[TorchVariantFit] = []
        for t in releases:
            row = self._variant_row(t)
            variants = list(row["variants"]) if row else []
            planned = bool(row and row.get("planned"))
            for v in variants:
                cuda = parse_cuda(v)
                al = self.torch_arch_list(t, cuda, platform)
                if al is None:
                    out.append(
                        TorchVariantFit(
                            torch=t,
                            variant=v,
                            cuda=cuda,
                            runs=None,
                            planned=planned,
                            source=self._ref(row) if row else None,
                        )
                    )
                    continue
                via = self._runs_via(norm, al.sms, al.ptx)
                out.append(
                    TorchVariantFit(
                        torch=t,
                        variant=v,
                        cuda=cuda,
                        runs=via is not None,
                        via=via,
                        sms=al.sms,
                        ptx=al.ptx,
                        planned=planned,
                        source=al.source,
                    )
                )
        return out

    # ------------------------------------------------------------------------------------ TensorFlow
    def tensorflow_builds(self, platform: str = "linux") -> list[TFBuild]:
        if platform not in ("linux", "windows"):
            raise UsageError(f"unknown TensorFlow platform {platform!r}; linux or windows")
        table = self._d["tensorflow"]["builds"][platform]
        return [TFBuild(platform=platform, source=self._ref(table), **r) for r in table["rows"]]

    def tensorflow_build(self, tf_version: str, platform: str = "linux") -> TFBuild | None:
        """The tested GPU build of a TensorFlow release: '2.17' -> CUDA 12.3, cuDNN 8.9."""
        builds = self.tensorflow_builds(platform)
        hit = _match_release(str(tf_version).strip(), [b.version for b in builds])
        if hit is None:
            return None
        return next(b for b in builds if b.version == hit[0])

    def tensorflow_cuda_13_note(self) -> str:
        return str(self._d["tensorflow"]["cuda_13"]["note"])

    def tensorflow_pip_requirements(self) -> dict[str, Any]:
        pip = self._d["tensorflow"]["pip_requirements"]
        return {
            **{k: v for k, v in pip.items() if k not in ("source", "also", "status", "status_note")},
            "source": self._ref(pip),
        }

    # ------------------------------------------------------------------------------------ CuPy / Chainer
    def _cupy_rows(self) -> list[dict[str, Any]]:
        return self._d["cupy_chainer"]["cupy_wheels"]["rows"]

    def cupy_rows(self) -> list[dict[str, Any]]:
        """CuPy's documented releases, oldest first: span (from/until), CUDA toolkits, wheel packages."""
        return list(self._cupy_rows())

    def cupy_row(self, cupy_version: str) -> dict[str, Any] | None:
        v = version_key(cupy_version)
        for r in self._cupy_rows():
            if version_key(r["from"]) <= v and (r["until"] is None or v < version_key(r["until"])):
                return r
        return None

    def cupy_package_cuda(self, package: str, cupy_version: str | None = None) -> CudaRange | None:
        """The CUDA versions a CuPy wheel is for: 'cupy-cuda11x' -> 11.2..11.8. With ``cupy_version``,
        None when that CuPy release has no such wheel."""
        pkg = package.strip().lower().replace("_", "-")
        table = self._d["cupy_chainer"]["cupy_wheels"]
        rows = [r for r in self._cupy_rows() if pkg in r["packages"]]
        if not rows:
            return None
        if cupy_version is not None:
            row = self.cupy_row(cupy_version)
            if row is None or pkg not in row["packages"]:
                return None
            since = row["packages"][pkg].get("since")
            if since and version_key(cupy_version) < version_key(since):
                return None
            rows = [row]
        first, last = rows[0], rows[-1]
        p = last["packages"][pkg]
        return CudaRange(
            package=pkg,
            cuda_min=p["cuda_min"],
            cuda_max=p["cuda_max"],
            cupy_from=first["packages"][pkg].get("since") or first["from"],
            cupy_until=last["until"],
            source=self._ref(table),
        )

    def cupy_packages(self) -> list[str]:
        seen: dict[str, None] = {}
        for r in self._cupy_rows():
            for p in r["packages"]:
                seen[p] = None
        return list(seen)

    def chainer(self, chainer_version: str) -> ChainerInfo | None:
        v = version_key(chainer_version)
        for c in self._d["cupy_chainer"]["chainer"]:
            if any(version_key(x) == v for x in c["versions"]) or version_key(c["version"]) == v:
                return ChainerInfo(
                    version=c["version"],
                    cupy_specifier=c["cupy_specifier"],
                    cupy_recommended=c["cupy_recommended"],
                    cupy_packages_checked=c["cupy_packages_checked"],
                    python_requires=c["python_requires"],
                    enforcement=c["enforcement"],
                    pairings=[CupyPairing(**p) for p in c["pairings"]],
                    source=self._ref(c),
                )
        return None

    def chainer_cupy_specifier(self, chainer_version: str) -> str | None:
        """CuPy requirement of a Chainer release: '7.8.1' -> '>=7.7.0,<8.0.0'."""
        info = self.chainer(chainer_version)
        return info.cupy_specifier if info else None

    # ------------------------------------------------------------------------------------ cuDNN
    def _cudnn_entries(self) -> list[dict[str, Any]]:
        return sorted(self._d["cudnn"]["support_matrix"]["entries"], key=lambda e: version_key(e["from"]))

    @staticmethod
    def _cuda_in(cuda_mm: str, listed: Iterable[str]) -> bool:
        for c in listed:
            if c.endswith(".x") and cuda_mm.split(".")[0] == c.split(".")[0]:
                return True
            if c == cuda_mm:
                return True
        return False

    def _cudnn_entry_says(self, e: dict[str, Any], cuda_mm: str) -> tuple[bool | None, str]:
        """What one support matrix says about a CUDA version: listed, not listed, or not read (None)."""
        listed = [c for b in e["builds"] for c in b["cuda"]]
        inferred = [c for b in e["builds"] for c in b.get("cuda_inferred", [])]
        if self._cuda_in(cuda_mm, listed):
            return True, e["status"]
        if self._cuda_in(cuda_mm, inferred):
            return True, "inferred"
        if self._cuda_in(cuda_mm, [c for b in e["builds"] for c in b.get("cuda_unread", [])]):
            return None, e["status"]
        if cuda_mm in e.get("cuda_not_supported", []):
            return False, e["status"]
        return False, e["status"]

    def cudnn_cuda_support(self, cudnn: str, cuda: str) -> Verdict:
        """Whether a cuDNN release has a build for a CUDA version, from the support matrices.

        A release between two matrices read gets an inferred answer when both neighbours agree (or, for
        releases newer than the last matrix read, when that one lists the CUDA version); else unknown.
        """
        v = version_key(cudnn)[:3]
        cuda_mm = major_minor(parse_cuda(cuda).split()[0])
        entries = self._cudnn_entries()
        for e in entries:
            if version_key(e["from"]) <= v <= version_key(e["to"]):
                ok, status = self._cudnn_entry_says(e, cuda_mm)
                if ok is None:
                    return Verdict(
                        ok=None,
                        reason=(
                            f"the CUDA {cuda_mm} row of the cuDNN {e['cudnn']} support matrix was not read"
                        ),
                    )
                word = "lists" if ok else "does not list"
                return Verdict(
                    ok=ok,
                    source=self._ref(e, status=status),
                    reason=f"the cuDNN {e['cudnn']} support matrix {word} CUDA {cuda_mm}",
                )
        same = [e for e in entries if version_key(e["from"])[0] == v[0]]
        lower = [e for e in same if version_key(e["to"]) < v]
        higher = [e for e in same if version_key(e["from"]) > v]
        if not lower:
            return Verdict(ok=None, reason=f"no cuDNN {v[0]}.x support matrix at or below {cudnn} was read")
        lo = lower[-1]
        lo_ok, _ = self._cudnn_entry_says(lo, cuda_mm)
        if higher:
            hi = higher[0]
            hi_ok, _ = self._cudnn_entry_says(hi, cuda_mm)
            if lo_ok == hi_ok:
                word = "list" if lo_ok else "do not list"
                return Verdict(
                    ok=lo_ok,
                    source=self._ref(lo, status="inferred"),
                    reason=(
                        f"cuDNN {lo['cudnn']} and {hi['cudnn']} (the matrices read around {cudnn}) "
                        f"both {word} CUDA {cuda_mm}"
                    ),
                )
            return Verdict(
                ok=None,
                reason=(
                    f"cuDNN {lo['cudnn']} and {hi['cudnn']} disagree on CUDA {cuda_mm}; "
                    f"the matrix of {cudnn} was not read"
                ),
            )
        if lo_ok:
            return Verdict(
                ok=True,
                source=self._ref(lo, status="inferred"),
                reason=(f"cuDNN {lo['cudnn']}, the newest matrix read, lists CUDA {cuda_mm}"),
            )
        return Verdict(
            ok=None,
            reason=(
                f"cuDNN {lo['cudnn']}, the newest matrix read, does not list CUDA {cuda_mm}; {cudnn} not read"
            ),
        )

    def cudnn_supports_cuda(self, cudnn: str, cuda: str) -> bool | None:
        return self.cudnn_cuda_support(cudnn, cuda).ok

    def cudnn_for_cc(self, cc: str) -> CudnnCC:
        """Newest cuDNN matrix read that covers a GPU (cubin rule over its listed capabilities)."""
        norm = parse_cc(cc)
        if norm is None:
            raise UsageError(f"not a compute capability: {cc!r}")
        last: dict[str, Any] | None = None
        first_not: dict[str, Any] | None = None
        for e in self._cudnn_entries():
            verdicts = []
            for b in e["builds"]:
                if b.get("cc"):
                    verdicts.append(self.build_runs_on(norm, b["cc"]))
                elif b.get("cc_min_cuda11"):
                    verdicts.append(cc_tuple(norm)[:2] >= cc_tuple(b["cc_min_cuda11"])[:2])
            if not verdicts:
                continue
            if any(verdicts):
                last, first_not = e, None
            elif last is not None and first_not is None:
                first_not = e
        return CudnnCC(
            cc=norm,
            last_listed=last["cudnn"] if last else None,
            first_unlisted=first_not["cudnn"] if first_not else None,
            source=self._ref(last) if last else None,
        )

    # ------------------------------------------------------------------------------------ errors
    def error_signatures(self) -> list[ErrorSignature]:
        out = []
        for e in self._d["errors"]["error_signatures"]:
            out.append(
                ErrorSignature(
                    id=e["id"],
                    text=e["text"],
                    needles=e["needles"],
                    meaning=e["meaning"],
                    fix=e["fix"],
                    api_code=e.get("api_code"),
                    variants={k: str(v) for k, v in e.get("variants", {}).items()},
                    source=self._ref(e),
                )
            )
        return out

    def match_errors(self, log: str) -> list[ErrorSignature]:
        """The known error messages that occur in ``log``."""
        return [s for s in self.error_signatures() if s.matches(log)]
