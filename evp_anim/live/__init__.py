"""``evp-anim live``: speech in, an emotional face out, in real time on a CPU.

* :mod:`.sources` — 16 kHz mono blocks from a WAV at real-time pace, raw PCM on stdin, or a
  microphone (PortAudio through ``sounddevice``), each block stamped with the time it entered;
* :mod:`.engine` — EVP run incrementally (MFCC rows, frame encodings and the LSTM state carried
  across blocks; nothing of the past recomputed), lifted to the rig, given the living face;
* :mod:`.outputs` — Live Link Face UDP packets, VMC-protocol OSC blendshapes, JSON lines, the
  recorded take (Track + WAV), and 60 fps interpolation;
* :mod:`.control` — emotion / intensity from the keyboard and from OSC messages;
* :mod:`.commands` — the CLI command.
"""
