"""The export-format registry: one :class:`ExportFormat` row per ``evp-anim export --format`` value.

``evp-anim export`` reads :data:`EXPORT_FORMATS` for its help text, the accepted names, the
output-suffix check and the dispatch, so adding a format is one row here plus its writer.

Writers are named, not imported, so that building the CLI (``evp-anim --help``) imports neither
numpy nor bpy (stdlib only here):

* a numpy-only format names a function of :mod:`evp_anim.export.formats`, called as
  ``writer(track, output)``;
* a Blender format (``needs_bpy``) names a function of the add-on's scene builder
  (:mod:`blender_addon.builder`, loaded by :func:`blender_builder`), called as
  ``writer(track_path, fmt, output, sfm_dir=..., audio=...)`` and returning a result whose
  ``warnings`` are passed on to the user.

Every format writes atomically: the numpy writers through :func:`evp_anim.atomic.atomic_output`,
the Blender ones into a unique hidden folder beside the output (:func:`evp_anim.atomic.atomic_output_files`)
whose files are then renamed into place, so a failed export leaves neither a partial file under
the final name nor a temporary file, and two exports to one path never share a temporary name.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
from pathlib import Path

from ..atomic import atomic_output_files
from ..errors import EvpError


@dataclasses.dataclass(frozen=True)
class ExportFormat:
    """One export format.

    name: the ``--format`` value; suffixes: the output suffixes it accepts (lower case);
    writer: the writer's function name (see the module docstring for where it lives);
    needs_bpy: built through Blender's Python module; solve_weights: a landmark-only track gets
    rig weights solved from its 3D landmarks first; arkit_columns: the format has only the
    ARKit 52 columns, so channels outside them are reported as left out.
    """

    name: str
    suffixes: tuple[str, ...]
    writer: str
    needs_bpy: bool = False
    solve_weights: bool = False
    arkit_columns: bool = False

    def check_output(self, output: Path) -> None:
        """EvpError unless ``output`` ends in one of :attr:`suffixes`."""
        if output.suffix.lower() not in self.suffixes:
            raise EvpError(f"{self.name} output must end in {' or '.join(self.suffixes)}, got {output.name!r}")

    def write(self, track, track_path: Path, output: Path, sfm_dir: Path | None = None,
              audio: Path | None = None) -> list[str]:
        """Write ``track`` (loaded from ``track_path``) to ``output``; returns the writer's warnings."""
        if self.needs_bpy:
            writer = getattr(blender_builder(), self.writer)
            # Blender's exporters write (and glTF names its .bin after) the path they are given:
            # give them the final name inside a private folder, then move the files into place.
            with atomic_output_files(output, companions=output.suffix.lower() == ".gltf") as tmp:
                res = writer(track_path, self.name, tmp, sfm_dir=sfm_dir, audio=audio)
            return list(res.warnings)
        getattr(importlib.import_module(".formats", __package__), self.writer)(track, output)
        return []


EXPORT_FORMATS: dict[str, ExportFormat] = {f.name: f for f in (
    ExportFormat("arkit-csv", (".csv",), "write_arkit_csv", solve_weights=True, arkit_columns=True),
    ExportFormat("livelink-csv", (".csv",), "write_livelink_csv", solve_weights=True, arkit_columns=True),
    ExportFormat("openface-csv", (".csv",), "write_openface_csv"),
    ExportFormat("rhubarb-json", (".json",), "write_rhubarb_json", solve_weights=True),
    ExportFormat("blend", (".blend",), "export_scene", needs_bpy=True),
    ExportFormat("fbx", (".fbx",), "export_scene", needs_bpy=True),
    ExportFormat("gltf", (".glb", ".gltf"), "export_scene", needs_bpy=True),
)}


def export_format(name: str) -> ExportFormat:
    """The row for ``name``; EvpError listing the known formats otherwise."""
    if name not in EXPORT_FORMATS:
        raise EvpError(f"unknown format {name!r}: expected one of {', '.join(EXPORT_FORMATS)}")
    return EXPORT_FORMATS[name]


def formats_help() -> str:
    """``a, b, ... or z`` of the format names, with the suffixes of those that take several."""
    names = [f.name + (f" ({'/'.join(f.suffixes)})" if len(f.suffixes) > 1 else "") for f in EXPORT_FORMATS.values()]
    return f"{', '.join(names[:-1])} or {names[-1]}"


def blender_builder():
    """The add-on's scene builder module (imports bpy; only the Blender formats and retarget need it)."""
    try:
        import bpy  # noqa: F401
    except ImportError:
        raise EvpError("this format needs Blender's Python module: pip install 'evp-anim[blender]' (bpy 5.0.1)") from None
    try:
        from blender_addon import builder
    except ModuleNotFoundError as e:
        if e.name != "blender_addon":
            raise
        # a source checkout whose install does not list blender_addon: use the one beside evp_anim
        root = Path(__file__).resolve().parents[2]
        if not (root / "blender_addon" / "builder.py").is_file():
            raise EvpError("the Blender add-on package (blender_addon) is not installed with evp-anim") from None
        sys.path.insert(0, str(root))
        from blender_addon import builder
    return builder
