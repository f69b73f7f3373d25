"""Control while live: emotion and intensity from the terminal's keys and from OSC messages.

Both call :meth:`~evp_anim.live.engine.LiveEngine.set_emotion` / ``set_intensity``, which blend
the change in over 0.3 s; they run in their own threads, so the audio loop never waits on them.

Keys (when stdin is a terminal and not the audio source): ``1``–``8`` the emotions in
:data:`~evp_anim.emotions.EMOTIONS` order (1 neutral, 2 angry, 3 contempt, 4 disgusted, 5 fear,
6 happy, 7 sad, 8 surprised), ``+`` / ``-`` intensity ± 0.1, ``?`` the list. Ctrl-C still stops.

OSC (UDP, ``--control-port``): ``/evp/emotion <name> [<intensity>]``, ``/evp/intensity <0..1>``.
"""

from __future__ import annotations

import sys
import threading
from typing import Callable

from ..emotions import EMOTIONS
from ..errors import EvpError

KEY_HELP = ("keys: " + ", ".join(f"{i + 1} {e}" for i, e in enumerate(EMOTIONS))
            + "; + / - intensity; ? this list; Ctrl-C stop")


class KeyboardControl:
    """Single keys from the terminal on stdin (cbreak mode, restored on :meth:`close`)."""

    def __init__(self, engine, say: Callable[[str], None]):
        import termios
        self.engine, self.say = engine, say
        self.fd = sys.stdin.fileno()
        self._old = termios.tcgetattr(self.fd)
        import tty
        tty.setcbreak(self.fd)           # keys arrive one by one; Ctrl-C still sends SIGINT
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="live-keys", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import os
        import select
        while not self._stop.is_set():
            ready, _, _ = select.select([self.fd], [], [], 0.1)
            if not ready:
                continue
            ch = os.read(self.fd, 1).decode("latin-1")
            self.key(ch)

    def key(self, ch: str) -> None:
        emo, inten = self.engine.emotion
        if ch in "12345678" and ch:
            self.engine.set_emotion(EMOTIONS[int(ch) - 1])
        elif ch in "+=":
            self.engine.set_intensity(min(1.0, round(inten + 0.1, 2)))
        elif ch in "-_":
            self.engine.set_intensity(max(0.0, round(inten - 0.1, 2)))
        elif ch == "?":
            self.say(KEY_HELP)
            return
        else:
            return
        emo, inten = self.engine.emotion
        self.say(f"emotion: {emo} {inten:.1f}")

    def close(self) -> None:
        import termios
        self._stop.set()
        self._thread.join(timeout=1.0)
        termios.tcsetattr(self.fd, termios.TCSADRAIN, self._old)


class OscControl:
    """An OSC server on ``host:port`` (UDP) taking ``/evp/emotion`` and ``/evp/intensity``.
    A port in use (or not allowed) is a one-line EvpError at start."""

    def __init__(self, engine, port: int, host: str = "127.0.0.1", say: Callable[[str], None] = print):
        try:
            from pythonosc.dispatcher import Dispatcher
            from pythonosc.osc_server import ThreadingOSCUDPServer
        except ImportError:
            raise EvpError("--control-port needs python-osc: pip install python-osc") from None
        if not 0 <= int(port) < 65536:
            raise EvpError(f"--control-port {port} is out of range (1-65535; 0: any free port)")
        self.engine, self.say = engine, say
        d = Dispatcher()
        d.map("/evp/emotion", self._emotion)
        d.map("/evp/intensity", self._intensity)
        try:
            self.server = ThreadingOSCUDPServer((host, int(port)), d)
        except OSError as e:
            reason = "in use" if e.errno in (98, 48, 10048) else (e.strerror or type(e).__name__)
            raise EvpError(f"control port {host}:{port} is {reason}: choose another --control-port") from None
        self.port = self.server.server_address[1]
        say(f"control: OSC on {host}:{self.port} (/evp/emotion NAME [INTENSITY], /evp/intensity X)")
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="live-osc-control", daemon=True)
        self._thread.start()

    def _emotion(self, address: str, *args) -> None:
        try:
            if not args:
                raise EvpError("/evp/emotion needs an emotion name")
            inten = float(args[1]) if len(args) > 1 else None
            self.engine.set_emotion(str(args[0]), inten)
            emo, inten = self.engine.emotion
            self.say(f"emotion: {emo} {inten:.1f} (osc)")
        except (EvpError, ValueError, TypeError) as e:
            self.say(f"warning: ignored {address} {list(args)}: {str(e).splitlines()[0]}")

    def _intensity(self, address: str, *args) -> None:
        try:
            self.engine.set_intensity(float(args[0]))
            emo, inten = self.engine.emotion
            self.say(f"emotion: {emo} {inten:.1f} (osc)")
        except (IndexError, ValueError, TypeError) as e:
            self.say(f"warning: ignored {address} {list(args)}: {type(e).__name__}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=1.0)
