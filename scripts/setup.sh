#!/usr/bin/env bash
# Set up evp-anim on a fresh Debian/Ubuntu machine: system packages, a venv, the package with
# its pinned dependencies, and the Surrey Face Model files. Safe to run again (it skips what is done).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3

# 1. System packages: espeak-ng speaks the synthetic corpus (its library is used in-process);
#    festival and three of its voices from real recordings serve `evp-anim synth --voices espeak,festival`.
if ! ldconfig -p 2>/dev/null | grep -q libespeak-ng.so.1 \
        || ! [ -d /usr/share/festival/voices/us/cmu_us_slt_arctic_hts ] \
        || ! [ -d /usr/share/festival/voices/english/ked_diphone ] \
        || ! [ -d /usr/share/festival/voices/english/kal_diphone ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "[setup] installing espeak-ng and festival (apt)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq espeak-ng libespeak-ng1 \
        festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts >/dev/null
fi

# 1b. Headless OpenGL for the preview renderer (moderngl): libEGL and Mesa's software rasteriser
#     (llvmpipe). Without them previews still render, with the ~10x slower numpy rasteriser.
if ! ldconfig -p 2>/dev/null | grep -q libEGL_mesa.so.0 \
        || ! ldconfig -p 2>/dev/null | grep -q 'libEGL.so.1 '; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "[setup] installing libEGL and Mesa (apt)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libegl1 libegl-mesa0 libgl1-mesa-dri >/dev/null
fi

# 1c. PortAudio for `evp-anim live --mic` (sounddevice loads it when a microphone is used).
if ! ldconfig -p 2>/dev/null | grep -q libportaudio.so.2; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "[setup] installing PortAudio (apt)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libportaudio2 >/dev/null
fi

# 2. Python environment with the pinned dependencies.
if [ ! -x .venv/bin/python ]; then
    echo "[setup] creating .venv with $($PY --version)"
    "$PY" -m venv .venv
fi
# Extras: test (pytest, hypothesis), blender (bpy 5.0.1, for the add-on tests and .blend/FBX/glTF export),
# tracking (dlib + its 68-point model, for target footage).
if ! .venv/bin/python -c "import evp_anim, torch, eos, librosa, av, moderngl, pythonosc, pytest, hypothesis, bpy, dlib, face_recognition_models" >/dev/null 2>&1; then
    echo "[setup] installing evp-anim and its dependencies (pip)"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e ".[test,blender,tracking]"
fi

# 3. Surrey Face Model files into the per-user cache: from ../shared/sfm when this checkout has one
#    beside it (this workplace, CI), else from the pinned eos commit on GitHub. Sums are checked.
if ! .venv/bin/evp-anim assets path >/dev/null 2>&1; then
    if [ -d ../shared/sfm ]; then
        .venv/bin/evp-anim --quiet assets download --base-url "file://$(cd ../shared/sfm && pwd)"
    else
        .venv/bin/evp-anim --quiet assets download
    fi
fi
echo "[setup] ready: $(.venv/bin/evp-anim assets path)"
