"""The simulator (DESIGN §5). Importing this package registers the Gymnasium environment
``PixelisSim-v0`` by its entry-point string, which imports neither ``env`` nor MuJoCo until
``gymnasium.make`` builds one; without the ``sim`` extra's gymnasium nothing is registered and
scene generation still works."""

import ctypes.util
import os

# MuJoCo picks its GL backend when it is imported: offscreen EGL (Mesa's llvmpipe on a CPU, the
# driver on a GPU), else OSMesa. A user's own MUJOCO_GL wins.
os.environ.setdefault("MUJOCO_GL", "egl" if ctypes.util.find_library("EGL") else "osmesa")

ENV_ID = "PixelisSim-v0"

try:
    import gymnasium
except ImportError:  # pragma: no cover - gymnasium comes with the optional "sim" extra
    gymnasium = None

if gymnasium is not None and ENV_ID not in gymnasium.registry:  # a re-import must not re-register
    gymnasium.register(id=ENV_ID, entry_point="pixelis_ros.sim.env:PixelisSimEnv")
