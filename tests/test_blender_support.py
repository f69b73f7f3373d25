"""Helpers for the bpy tests (no tests here): run each test body in a forked child process.

bpy keeps global state for the life of a process, so every bpy test runs in its own fork of
the pytest process (which itself never imports bpy). pytest-forked 1.7.5 cannot serialise
pytest 9's reports ("unmarshallable object"), so this small decorator does the fork itself and
turns a failure in the child into a test failure carrying the child's traceback.
"""

import functools
import os
import sys
import traceback
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def isolated(fn):
    """Decorator: run the test function in a forked child; fixtures are set up in the parent."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: run, report the traceback through the pipe, never return to pytest
            os.close(r)
            status, msg = 0, b""
            try:
                fn(*args, **kwargs)
            except BaseException:  # noqa: BLE001 - everything must reach the parent
                status, msg = 1, traceback.format_exc().encode()
            try:
                sys.stdout.flush()
                sys.stderr.flush()
                with os.fdopen(w, "wb") as f:
                    f.write(msg)
            finally:
                os._exit(status)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            data = f.read()
        _, status = os.waitpid(pid, 0)
        if status != 0 or data:
            pytest.fail(f"forked test failed (wait status {status}):\n{data.decode(errors='replace')}",
                        pytrace=False)
    return wrapper


def blender(sfm_dir=None):
    """In a child: a fresh empty bpy session with the add-on registered; returns (bpy, builder)."""
    if sfm_dir is not None:
        os.environ["EVP_ANIM_SFM_DIR"] = str(sfm_dir)
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    import bpy
    bpy.ops.wm.read_factory_settings(use_empty=True)
    import blender_addon
    from blender_addon import builder
    blender_addon.register()
    return bpy, builder


def make_say_track(folder: Path, sfm_dir, text="Bring the map back before lunch.", emotion="happy") -> Path:
    """A real track (42 rig channels, 25 fps) + its wav from `evp-anim speak` (in a subprocess)."""
    import subprocess
    out = Path(folder) / "say.npz"
    subprocess.run([sys.executable, "-m", "evp_anim", "speak", text, "--emotion", emotion, "-o", str(out),
                    "--sfm-dir", str(sfm_dir)], check=True, capture_output=True, cwd=REPO)
    return out
