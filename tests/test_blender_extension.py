"""The extension zip: built by scripts/build_extension.py, installed and enabled in headless bpy.

bpy from PyPI has no ``blender`` binary, but its ``bpy.ops.extensions.package_install_files``
is the same code path as Preferences > Install from Disk: it unpacks the zip into the
``user_default`` repository, installs the bundled wheel into the extensions' site-packages and
enables the add-on as ``bl_ext.user_default.evp_anim``. The install runs in a subprocess with
``BLENDER_USER_RESOURCES`` pointing at a temporary folder, so the user's own Blender setup is
never touched.
"""

import json
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from test_blender_support import REPO, make_say_track

INSTALL = r'''
import json, sys
import bpy
zip_path, track, result = sys.argv[1:4]
bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default", enable_on_install=True)
import evp_anim
out = {
    "enabled": "bl_ext.user_default.evp_anim" in bpy.context.preferences.addons,
    "has_operator": hasattr(bpy.types, "EVP_OT_import_track"),
    "evp_anim_from": evp_anim.__file__,
    "prefs": type(bpy.context.preferences.addons["bl_ext.user_default.evp_anim"].preferences).__name__,
}
out["import"] = sorted(bpy.ops.evp.import_track(filepath=track))
out["fps"] = bpy.context.scene.render.fps
out["command"] = bpy.context.preferences.addons["bl_ext.user_default.evp_anim"].preferences.command
bpy.ops.preferences.addon_disable(module="bl_ext.user_default.evp_anim")
out["disabled_cleanly"] = not hasattr(bpy.types.Object, "evp")
json.dump(out, open(result, "w"))
'''


@pytest.fixture(scope="module")
def extension_zip(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "build_extension.py"), "-o", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    return Path(r.stdout.strip().splitlines()[-1])


def test_zip_holds_manifest_code_and_wheel(extension_zip):
    names = zipfile.ZipFile(extension_zip).namelist()
    assert "blender_manifest.toml" in names and "__init__.py" in names and "builder.py" in names
    man = tomllib.loads(zipfile.ZipFile(extension_zip).read("blender_manifest.toml").decode())
    assert man["id"] == "evp_anim" and man["type"] == "add-on" and man["blender_version_min"] == "5.0.0"
    assert all(isinstance(v, str) and v for v in man["permissions"].values())
    assert [w.lstrip("./") for w in man["wheels"]] == [n for n in names if n.startswith("wheels/")]
    wheel = zipfile.ZipFile(zipfile.ZipFile(extension_zip).open(man["wheels"][0].lstrip("./")))
    assert "evp_anim/tracks.py" in wheel.namelist()
    requires = [line for line in wheel.read(next(n for n in wheel.namelist() if n.endswith("METADATA")))
                .decode().splitlines() if line.startswith("Requires-Dist")]
    assert requires  # the wheel declares deps, but Blender installs it alone (pip wheel --no-deps)
    assert not any(n.startswith("wheels/") and "torch" in n for n in names)


def test_zip_installs_and_enables_in_headless_blender(extension_zip, tmp_path, sfm_dir):
    track = make_say_track(tmp_path, sfm_dir)
    script = tmp_path / "install.py"
    script.write_text(INSTALL)
    result = tmp_path / "result.json"
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "blender_user"), EVP_ANIM_SFM_DIR=str(sfm_dir))
    r = subprocess.run([sys.executable, str(script), str(extension_zip), str(track), str(result)],
                       capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    out = json.loads(result.read_text())
    assert out["enabled"] and out["has_operator"] and out["prefs"] == "EVP_AddonPreferences"
    # Track reading inside Blender comes from the bundled wheel, not from this checkout
    assert "/extensions/.local/lib/" in out["evp_anim_from"], out["evp_anim_from"]
    assert out["import"] == ["FINISHED"] and out["fps"] == 25
    assert out["command"].startswith("evp-anim --machine-readable animate")
    assert out["disabled_cleanly"]
    assert (tmp_path / "blender_user" / "extensions" / "user_default" / "evp_anim" / "blender_manifest.toml").is_file()
