#!/usr/bin/env python3
"""Build the Blender extension zip: what ``blender --command extension build`` makes, without a
Blender binary (bpy from PyPI has none).

    .venv/bin/python scripts/build_extension.py [-o dist/]

Produces ``dist/evp_anim-<version>.zip`` holding, at the zip's root, ``blender_manifest.toml``
and the add-on's Python files from ``blender_addon/``, plus ``wheels/evp_anim-<version>-py3-none-any.whl``:
the project's own wheel built with ``pip wheel --no-deps`` (no torch, opencv, ...), which Blender
installs for the extension so the add-on's bpy-free imports (``evp_anim.tracks``, the scene math
in ``evp_anim.export.blender_math``, the keys file in ``evp_anim.emotion_keys``, ...) work inside
Blender with Blender's numpy.
The manifest's ``wheels`` entry must name that file; the script checks it, the required manifest
keys, and that the zip's paths are exactly the add-on's files.

Install in Blender: Edit > Preferences > Get Extensions > ⌄ > Install from Disk, or
``blender --command extension install-file -r user_default -e dist/evp_anim-0.1.0.zip``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ADDON = REPO / "blender_addon"
REQUIRED = ("schema_version", "id", "version", "name", "tagline", "maintainer", "type",
            "blender_version_min", "license")


def read_manifest() -> dict:
    man = tomllib.loads((ADDON / "blender_manifest.toml").read_text(encoding="utf-8"))
    missing = [k for k in REQUIRED if k not in man]
    if missing:
        sys.exit(f"blender_manifest.toml lacks {missing}")
    if man["type"] != "add-on":
        sys.exit("blender_manifest.toml: type must be 'add-on'")
    return man


def build_wheel(dest: Path) -> Path:
    """The project's wheel without dependencies (pure Python: py3-none-any).

    Built from a copy of the sources in a temporary folder, so setuptools' ``build/`` and
    ``*.egg-info`` scratch never lands in (or changes) the checkout.
    """
    src = dest / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "setup.cfg", "setup.py", "LICENSE"):
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, src / name)
    for pkg in ("evp_anim", "render", "blender_addon", "assets"):
        if (REPO / pkg).is_dir():
            shutil.copytree(REPO / pkg, src / pkg, ignore=ignore)
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dest), str(src)]
    subprocess.run(cmd, check=True)
    wheels = sorted(dest.glob("evp_anim-*.whl"))
    if not wheels:
        sys.exit("pip wheel produced no evp_anim wheel")
    return wheels[-1]


def addon_files() -> list[Path]:
    keep = []
    for p in sorted(ADDON.rglob("*")):
        rel = p.relative_to(ADDON)
        if p.is_dir() or "__pycache__" in rel.parts or p.suffix == ".pyc" or rel.parts[0] in ("wheels",):
            continue
        keep.append(p)
    return keep


def build(out_dir: Path) -> Path:
    man = read_manifest()
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = build_wheel(Path(tmp))
        want = [Path(w).name for w in man.get("wheels", [])]
        if want != [wheel.name]:
            sys.exit(f"manifest wheels {want} do not match the built wheel {wheel.name}: update the manifest")
        target = out_dir / f"{man['id']}-{man['version']}.zip"
        tmp_zip = target.with_suffix(".zip.tmp")
        with zipfile.ZipFile(tmp_zip, "w", zipfile.ZIP_DEFLATED) as z:
            for p in addon_files():
                z.write(p, p.relative_to(ADDON).as_posix())
            z.write(wheel, f"wheels/{wheel.name}")
        shutil.move(tmp_zip, target)
    return target


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", type=Path, default=REPO / "dist", help="folder for the zip (default dist/)")
    args = ap.parse_args()
    print(build(args.output))


if __name__ == "__main__":
    main()
