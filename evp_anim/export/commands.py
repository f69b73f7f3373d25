"""CLI: ``evp-anim export`` (tracks → ARKit/Live Link/OpenFace CSV, Rhubarb JSON, .blend/FBX/glTF)
and ``evp-anim retarget`` (a track onto any character's ARKit-named shape keys)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..atomic import atomic_output, check_writable
from ..cli_common import SfmDirOpt, reporter, sfm
from ..errors import EvpError
from .registry import blender_builder, export_format, formats_help


def export_track_file(track_path: Path, fmt: str, output: Path, sfm_dir: Optional[Path] = None,
                      audio: Optional[Path] = None) -> list[str]:
    """Write ``track_path`` as ``fmt`` to ``output``; returns notes for the user (unmapped channels).

    The output folder is checked for writability first (a one-line EvpError before any work);
    the write itself is atomic (see :mod:`evp_anim.export.registry`).
    """
    from ..tracks import load_track
    from .arkit import unmapped_channels
    spec = export_format(fmt)
    spec.check_output(output)
    track = load_track(track_path)
    check_writable(output)
    if audio is not None and not Path(audio).is_file():
        raise EvpError(f"audio file not found: {audio}")
    notes = []
    if spec.solve_weights and not track.expression_names:
        if track.landmarks_3d is None:
            raise EvpError(f"{track_path}: track has neither expression channels nor 3D landmarks to export as {fmt}")
        from ..face.rig import FaceRig
        from ..face.solve import weights_from_landmarks
        rig = FaceRig.cached(sfm(sfm_dir))
        ident = track.identity if track.identity.size == rig.num_identity else None
        track.expression = weights_from_landmarks(rig, track.landmarks_3d, ident)
        track.expression_names = list(rig.channels)
        notes.append("track has no expression channels: rig weights solved from its 3D landmarks")
    if spec.arkit_columns:
        lost = unmapped_channels(track.expression_names)
        if lost:
            notes.append(f"channels with no ARKit column (left out): {', '.join(lost)}")
    notes += spec.write(track, track_path, output, sfm_dir=sfm(sfm_dir) if spec.needs_bpy else None, audio=audio)
    return notes


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export_cmd(
        track: Path = typer.Argument(..., help="Track file (.npz)."),
        fmt: str = typer.Option(..., "-f", "--format", help=f"{formats_help()}."),
        output: Path = typer.Option(..., "-o", "--output", help="File to write; '-' writes a CSV/JSON "
                                    "format to stdout (notes and progress stay on stderr)."),
        audio: Optional[Path] = typer.Option(None, "--audio", help="Speech for the .blend's sound strip "
                                             "(default: the track's own wav, when found)."),
        sfm_dir: Optional[Path] = SfmDirOpt,
    ) -> None:
        """Export a track for other tools; fps and timestamps are always carried.

        CSV/JSON formats are written without Blender (to stdout with -o -); blend/fbx/gltf build
        the add-on's scene (SFM head, one shape key per channel, the animation) through bpy.
        """
        rep = reporter()
        if rep.machine_readable:  # a bar is noise for a sub-second write; programs still get events
            rep.start("export")
        if str(output) != "-":
            notes = export_track_file(track, fmt, output, sfm_dir, audio)
            where = str(output)
        else:
            notes, size = _export_to_stdout(track, fmt, sfm_dir, audio)
            where = f"stdout ({size} bytes)"
        rep.success(output=str(output), notes=notes)
        for n in notes:
            rep.info(f"note: {n}")
        rep.info(f"wrote {where}")

    def _export_to_stdout(track: Path, fmt: str, sfm_dir: Optional[Path], audio: Optional[Path]):
        """``export -o -``: the text format ``fmt`` written to a private temporary file by the
        format's own writer (so stdout gets exactly the bytes a file would), then copied to
        stdout. Returns (notes, bytes written). One-line EvpError for a binary format and for a
        reader that closed the pipe."""
        import os
        import sys
        import tempfile

        from .registry import EXPORT_FORMATS
        text = [f.name for f in EXPORT_FORMATS.values()
                if not f.needs_bpy and set(f.suffixes) <= {".csv", ".json"}]
        spec = export_format(fmt)
        if spec.name not in text:
            raise EvpError(f"{fmt} is a binary format and cannot go to stdout (-o -): give a file name, or "
                           f"use a text format ({', '.join(text)})")
        with tempfile.TemporaryDirectory(prefix="evp-anim-export-") as tmp:
            out = Path(tmp) / f"stdout{spec.suffixes[0]}"
            notes = export_track_file(track, fmt, out, sfm_dir, audio)
            data = out.read_bytes()
        try:
            sys.stdout.flush()
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        except BrokenPipeError:
            # The reader is gone (e.g. `| head -1`). Point stdout at /dev/null so Python's own flush
            # at exit does not complain a second time, and say it once.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise EvpError("cannot write to stdout: the reading program closed the pipe") from None
        return notes, len(data)

    @app.command("export-rig")
    def export_rig_cmd(
        output: Optional[Path] = typer.Option(None, "-o", "--output", help="Rig file (.npz); default: the "
                                              "per-user rig cache the Blender add-on reads."),
        sfm_dir: Optional[Path] = SfmDirOpt,
    ) -> None:
        """Write the evaluated face rig (SFM + articulation channels) as plain arrays for Blender.

        Stock Blender has numpy but not scipy, which building the rig needs; the add-on runs this
        once by itself when evp-anim is on PATH. The file is derived from the SFM files: keep it
        local (non-commercial licence).
        """
        from ..face.rig import FaceRig
        from .rigdata import rig_cache_path, save_rig_data
        d = sfm(sfm_dir)
        out = output or rig_cache_path(d)
        if out.suffix != ".npz":
            raise EvpError(f"rig output must end in .npz, got {out.name!r}")
        check_writable(out)
        save_rig_data(FaceRig(d), out)
        rep = reporter()
        if rep.machine_readable:
            rep.start("export-rig")
            rep.success(output=str(out))
        rep.info(f"wrote {out}")

    @app.command("retarget")
    def retarget_cmd(
        track: Path = typer.Argument(..., help="Track file (.npz)."),
        mesh: Path = typer.Option(..., "--mesh", help="Character with shape keys (.blend, .glb, .gltf, .fbx)."),
        output: Path = typer.Option(..., "-o", "--output", help=".blend to write."),
        preset: str = typer.Option("arkit", "--preset", help="Shape-key naming convention: arkit, metahuman "
                                   "(CTRL_expressions_* curve names), faceit, or none (only --map)."),
        map_file: Optional[Path] = typer.Option(None, "--map", help="Mapping table (.toml: jawOpen = \"Mouth_Open\"; "
                                                ".csv: source_channel,target_shape_key lines); its shape keys "
                                                "get only the channels it sends them."),
    ) -> None:
        """Drive a character's shape keys with a track.

        Names are matched ignoring case, side spelling (_L, Left, L) and prefixes (ARKit., CC_);
        --preset picks the convention, --map sends any channel (sfm_happiness too) to any key.
        Channels that drove nothing and shape keys that matched nothing are listed.
        """
        from ..tracks import load_track
        from .retarget_names import check_preset, read_map, resolve_map_sources, source_curves
        if output.suffix.lower() != ".blend":
            raise EvpError(f"retarget output must end in .blend, got {output.name!r}")
        # every input problem is found before bpy loads or the character is opened
        preset = check_preset(preset)
        loaded = load_track(track)
        mapping = read_map(map_file) if map_file is not None else None
        if mapping is not None:
            mapping = resolve_map_sources(mapping, list(source_curves(loaded.expression, loaded.expression_names)))
        if not mesh.is_file():
            raise EvpError(f"character file not found: {mesh}")
        check_writable(output)
        builder = blender_builder()
        rep = reporter()
        rep.start("retarget")
        meshes = builder.load_character(mesh)
        report = builder.retarget(loaded, meshes, preset=preset, mapping=mapping)
        with atomic_output(output) as tmp:   # a unique temporary name: concurrent runs do not collide
            builder.save_blend(tmp)
        rep.success(output=str(output), matched=sorted(report.matched), missing=report.missing,
                    not_arkit=report.not_arkit, unused_keys=report.unused_keys, preset=preset)
        rep.info(report.summary())
        rep.info(f"wrote {output}")
