"""World: MuJoCo pixels (RGB, depth, ground-truth boxes) for a ``SceneSpec``, fast enough to
generate training data on a CPU.

The model is compiled once per World with fixed *slots* (objects, signs, lamp, occluders) added
to ``sim/worlds/room.xml`` through ``MjSpec``; loading a scene only rewrites model fields (geom
type, size, colour, textures) and moves mocap bodies. Compiling a model and creating a GL
context per scene costs ~0.5 s; rewriting fields costs well under a millisecond.

Ground-truth boxes come from MuJoCo's segmentation rendering, so they are the *visible* pixels
(occlusion included), not projected bounding boxes. Rendering is offscreen: ``MUJOCO_GL=egl``
(Mesa's llvmpipe on a CPU), falling back to osmesa.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass

import cv2
import numpy as np

from pixelis_ros.paths import data_dir
from pixelis_ros.sim.scene import COLOURS, FONTS, SHIFT_FONTS, CameraPose, SceneSpec, TABLE_TOP  # sets MUJOCO_GL

import mujoco  # noqa: E402  (after pixelis_ros.sim chose MUJOCO_GL)

def load_triton_first() -> None:
    """Import triton (torch's compiler, shipped with torch) before any GL context exists.

    With Mesa's llvmpipe behind EGL (a CPU machine), loading triton's bundled LLVM *after* a
    context was made segfaults the process; torch imports triton lazily (e.g. when transformers
    builds a model), so a process that renders first and loads a policy second would crash. In
    the other order both work. Costs ~0.6 s once, only where triton is installed."""
    if importlib.util.find_spec("triton") is not None:
        import triton  # noqa: F401


MAX_OBJECTS = 12
MAX_SIGNS = 3
MAX_OCCLUDERS = 2
SIGN_TEX = (256, 64)  # width, height: signs are 4:1
HIDDEN = (0.0, 0.0, -10.0)  # unused slots wait below the floor
LAMP_RADIUS = 0.045
LAMP_LIGHT = 0.35  # the lamp's light intensity: a visible glow that leaves object colours readable
_GEOM_TYPE = {"cube": mujoco.mjtGeom.mjGEOM_BOX, "sphere": mujoco.mjtGeom.mjGEOM_SPHERE,
              "cylinder": mujoco.mjtGeom.mjGEOM_CYLINDER}


@dataclass
class Render:
    rgb: np.ndarray  # HxWx3 uint8
    depth: np.ndarray | None  # HxW float32 metres along the view axis
    boxes: dict[str, tuple[float, float, float, float] | None]  # visible box per object/sign/lamp name
    visible_px: dict[str, int]
    time: float


def _build_model() -> mujoco.MjModel:
    spec = mujoco.MjSpec.from_file(str(data_dir("sim") / "worlds" / "room.xml"))
    world = spec.worldbody
    no_contact = dict(contype=0, conaffinity=0)
    for i in range(MAX_OBJECTS):
        body = world.add_body(name=f"obj{i}", mocap=True, pos=list(HIDDEN))
        body.add_geom(name=f"obj{i}", type=mujoco.mjtGeom.mjGEOM_BOX, size=[0.05, 0.05, 0.05], **no_contact)
    for i in range(MAX_SIGNS):
        spec.add_texture(name=f"sign{i}", type=mujoco.mjtTexture.mjTEXTURE_2D, width=SIGN_TEX[0], height=SIGN_TEX[1],
                         builtin=mujoco.mjtBuiltin.mjBUILTIN_FLAT, rgb1=[1, 1, 1])
        material = spec.add_material(name=f"sign{i}")
        material.textures[mujoco.mjtTextureRole.mjTEXROLE_RGB] = f"sign{i}"
        body = world.add_body(name=f"sign{i}", mocap=True, pos=list(HIDDEN))
        body.add_geom(name=f"sign{i}", type=mujoco.mjtGeom.mjGEOM_BOX, size=[0.2, 0.01, 0.05], material=f"sign{i}", **no_contact)
        body.add_geom(name=f"sign{i}_post", type=mujoco.mjtGeom.mjGEOM_CYLINDER, size=[0.01, 1.0, 0],
                      pos=[0, 0.02, -1.0], rgba=[0.3, 0.3, 0.3, 1], **no_contact)
    lamp_material = spec.add_material(name="lamp", emission=0.9)
    lamp_material.rgba = [0, 1, 0, 1]
    lamp = world.add_body(name="lamp", mocap=True, pos=list(HIDDEN))
    lamp.add_geom(name="lamp", type=mujoco.mjtGeom.mjGEOM_SPHERE, size=[LAMP_RADIUS, 0, 0], material="lamp", **no_contact)
    # The lamp lights its surroundings in its own colour, so its switch is visible around it too.
    lamp.add_light(name="lamp", pos=[0, 0, 0.08], diffuse=[0, 0, 0], specular=[0, 0, 0], castshadow=False,
                   attenuation=[1, 0, 2])
    lamp.add_geom(name="lamp_stand", type=mujoco.mjtGeom.mjGEOM_CYLINDER, size=[0.012, 0.17, 0], pos=[0, 0, -0.2],
                  rgba=[0.2, 0.2, 0.2, 1], **no_contact)
    for i in range(MAX_OCCLUDERS):
        body = world.add_body(name=f"occluder{i}", mocap=True, pos=list(HIDDEN))
        body.add_geom(name=f"occluder{i}", type=mujoco.mjtGeom.mjGEOM_BOX, size=[0.08, 0.01, 0.12],
                      rgba=[0.5, 0.5, 0.55, 1], **no_contact)
    return spec.compile()


def _quat(yaw: float, pitch: float) -> np.ndarray:
    """Camera orientation: yaw about world z (0 looks along +y), pitch about the camera's x."""
    y, p = math.radians(yaw), math.radians(pitch)
    forward = np.array([-math.sin(y) * math.cos(p), math.cos(y) * math.cos(p), math.sin(p)])
    right = np.array([math.cos(y), math.sin(y), 0.0])
    up = np.cross(right, forward)
    mat = np.stack([right, up, -forward], axis=1)  # camera x, y, z axes as columns
    q = np.zeros(4)
    mujoco.mju_mat2Quat(q, mat.reshape(-1))
    return q


def sign_texture(text: str, font: str, board: str = "white") -> np.ndarray:
    """The sign's face: dark text centred on the board colour, filling most of the width."""
    w, h = SIGN_TEX
    face = cv2.FONT_HERSHEY_SIMPLEX if font == "default" else {**FONTS, **SHIFT_FONTS}[font]
    colour = tuple(int(255 * c) for c in COLOURS.get(board, (1, 1, 1)))
    tex = np.full((h, w, 3), colour, np.uint8)
    (tw, th), _ = cv2.getTextSize(text, face, 1.0, 2)
    scale = min(0.85 * w / tw, 0.6 * h / th)
    (tw, th), base = cv2.getTextSize(text, face, scale, 2)
    cv2.putText(tex, text, ((w - tw) // 2, (h + th) // 2), face, scale, (20, 20, 20), 2, cv2.LINE_AA)
    return tex


def surface_texture(style: str, rng: np.random.Generator, base=(140, 128, 115)) -> np.ndarray:
    """Floor/wall texture for a shift style: default checker, stripes or noise."""
    size = 256
    yy, xx = np.mgrid[0:size, 0:size]
    if style == "stripes":
        pattern = ((xx // 16) % 2)[..., None] * np.array([60, 20, -20])
    elif style == "noise":
        pattern = rng.integers(-50, 50, (size, size, 1)) * np.array([1, 1, 1])
    else:
        pattern = (((xx // 128) + (yy // 128)) % 2)[..., None] * np.array([25, 25, 25])
    return np.clip(np.array(base) + pattern, 0, 255).astype(np.uint8)


class World:
    """Renders SceneSpecs. One World holds one GL context: reuse it across scenes."""

    def __init__(self, width: int = 640, height: int = 480):
        self.width, self.height = width, height
        self.model = _build_model()
        self.data = mujoco.MjData(self.model)
        load_triton_first()
        self.renderer = mujoco.Renderer(self.model, height, width)
        m = self.model
        self._geom = {m.geom(i).name: i for i in range(m.ngeom)}
        self._mocap = {m.body(i).name: m.body_mocapid[i] for i in range(m.nbody) if m.body_mocapid[i] >= 0}
        self._cam = m.camera("cam").id
        self._lamp_light = m.light("lamp").id
        self._base_light = m.light_diffuse.copy()
        self.scene: SceneSpec | None = None

    def _upload(self, name: str, pixels: np.ndarray) -> None:
        tex = self.model.texture(name).id
        adr, w, h = self.model.tex_adr[tex], self.model.tex_width[tex], self.model.tex_height[tex]
        self.model.tex_data[adr:adr + w * h * 3] = cv2.resize(pixels, (w, h)).reshape(-1)
        # Renderer keeps its MjrContext private; re-uploading one texture is the cheap path. The
        # upload goes to the *current* GL context, which another World may have taken.
        if self.renderer._gl_context is not None:
            self.renderer._gl_context.make_current()
        mujoco.mjr_uploadTexture(self.model, self.renderer._mjr_context, tex)

    def load(self, scene: SceneSpec) -> None:
        m = self.model
        if len(scene.objects) > MAX_OBJECTS or len(scene.signs) > MAX_SIGNS or len(scene.occluders) > MAX_OCCLUDERS:
            raise ValueError(f"scene {scene.seed} has more than {MAX_OBJECTS} objects, {MAX_SIGNS} signs or {MAX_OCCLUDERS} occluders")
        self.scene = scene
        for i in range(MAX_OBJECTS):
            g = self._geom[f"obj{i}"]
            if i < len(scene.objects):
                o = scene.objects[i]
                m.geom_type[g] = _GEOM_TYPE[o.shape]
                m.geom_size[g] = (o.size, o.size, o.size)
                m.geom_rbound[g] = o.size * math.sqrt(3)
                m.geom_rgba[g] = (*COLOURS[o.colour], 1.0)
        for i, sign in enumerate(scene.signs):
            g = self._geom[f"sign{i}"]
            m.geom_size[g] = (sign.width / 2, 0.01, sign.width / 8)
            m.geom_rbound[g] = sign.width
            post = self._geom[f"sign{i}_post"]
            m.geom_size[post] = (0.012, sign.pos[2] / 2, 0)
            m.geom_pos[post] = (0, 0.02, -sign.pos[2] / 2)
            self._upload(f"sign{i}", sign_texture(sign.text, sign.font, sign.board))
        rng = np.random.default_rng(scene.seed)
        self._upload("floor", surface_texture(scene.shift.texture, rng))
        self._upload("wall", surface_texture(scene.shift.texture, rng, base=(190, 190, 178)))
        m.light_diffuse[:] = self._base_light * scene.shift.lighting * np.array(scene.shift.tint)  # the lamp's own is set per frame
        self.data.mocap_pos[:] = HIDDEN
        for i, spot in enumerate(scene.occluders):
            self.data.mocap_pos[self._mocap[f"occluder{i}"]] = (spot[0], spot[1], TABLE_TOP + spot[3])

    def _pose(self, t: float, camera: CameraPose) -> None:
        scene = self.scene
        for i, o in enumerate(scene.objects):
            self.data.mocap_pos[self._mocap[f"obj{i}"]] = o.position(t)
        for i, sign in enumerate(scene.signs):
            self.data.mocap_pos[self._mocap[f"sign{i}"]] = sign.pos
        self.data.mocap_pos[self._mocap["lamp"]] = scene.lamp.pos
        lamp_colour = COLOURS[scene.lamp.colour(t)]
        self.model.mat_rgba[self.model.material("lamp").id] = (*lamp_colour, 1.0)
        self.model.light_diffuse[self._lamp_light] = np.array(lamp_colour) * LAMP_LIGHT
        self.model.cam_pos[self._cam] = camera.pos
        self.model.cam_quat[self._cam] = _quat(camera.yaw, camera.pitch)
        self.model.cam_fovy[self._cam] = camera.fovy
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_camlight(self.model, self.data)

    def render(self, t: float = 0.0, camera: CameraPose | None = None, depth: bool = True, boxes: bool = True,
               frame_index: int = 0) -> Render:
        if self.scene is None:
            raise RuntimeError("World.render before World.load")
        camera = camera or self.scene.camera
        self._pose(t, camera)
        r = self.renderer
        r.update_scene(self.data, camera=self._cam)
        rgb = r.render().copy()
        depth_map = None
        if depth:
            r.enable_depth_rendering()
            depth_map = r.render().astype(np.float32)
            r.disable_depth_rendering()
        found: dict = {}
        visible: dict = {}
        if boxes:
            r.enable_segmentation_rendering()
            seg = r.render()
            r.disable_segmentation_rendering()
            found, visible = self._boxes(seg[..., 0])
        if self.scene.shift.noise:
            rng = np.random.default_rng((self.scene.seed, frame_index))
            rgb = np.clip(rgb + rng.normal(0, self.scene.shift.noise, rgb.shape), 0, 255).astype(np.uint8)
        return Render(rgb, depth_map, found, visible, t)

    def _boxes(self, ids: np.ndarray) -> tuple[dict, dict]:
        names = [o.name for o in self.scene.objects] + [s.name for s in self.scene.signs] + ["lamp"]
        boxes, visible = {}, {}
        for name in names:
            ys, xs = np.nonzero(ids == self._geom[name])
            visible[name] = int(len(xs))
            boxes[name] = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)) if len(xs) else None
        return boxes, visible

    def clip(self, n_frames: int, fps: float, camera: CameraPose | None = None, depth: bool = False) -> list[Render]:
        """``n_frames`` renders at ``fps`` from t=0 (the scene's motions and lamp switch play out).
        Ground-truth boxes are computed for the first and last frames, which is what questions use."""
        return [self.render(i / fps, camera, depth=depth, boxes=i in (0, n_frames - 1), frame_index=i) for i in range(n_frames)]

    def close(self) -> None:
        self.renderer.close()
