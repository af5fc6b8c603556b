"""ROS 2 messages without ROS: the types, their CDR, and conversions to and from our data.

``rosbags`` carries the message definitions of ROS 2 Humble as dataclasses and a CDR codec that
is byte-identical to what rmw implementations put on the wire (DESIGN §4.8). vision_msgs is not
among its bundled packages, so its definitions are registered here from the .msg text. The DDS
transport, the rosbag2 reader/writer and the tests all use this one typestore; the rclpy node
converts rclpy messages through the same field names.

Every text field is made valid Unicode on the way in (``text_field``): model output and JSON
queries can carry lone surrogates (``"\\ud800"``), which the CDR encoder's UTF-8 step refuses —
one such answer used to kill the node's answer thread.
"""

from __future__ import annotations

import functools
import json

import numpy as np

from pixelis_ros.cota import valid_text
from pixelis_ros.image_codec import compressed_from_fields, image_from_fields, image_to_fields

VISION_MSGS = {
    "vision_msgs/msg/Point2D": "float64 x\nfloat64 y\n",
    "vision_msgs/msg/Pose2D": "vision_msgs/Point2D position\nfloat64 theta\n",
    "vision_msgs/msg/BoundingBox2D": "vision_msgs/Pose2D center\nfloat64 size_x\nfloat64 size_y\n",
    "vision_msgs/msg/ObjectHypothesis": "string class_id\nfloat64 score\n",
    "vision_msgs/msg/ObjectHypothesisWithPose": "vision_msgs/ObjectHypothesis hypothesis\ngeometry_msgs/PoseWithCovariance pose\n",
    "vision_msgs/msg/Detection2D": "std_msgs/Header header\nvision_msgs/ObjectHypothesisWithPose[] results\n"
                                   "vision_msgs/BoundingBox2D bbox\nstring id\n",
    "vision_msgs/msg/Detection2DArray": "std_msgs/Header header\nvision_msgs/Detection2D[] detections\n",
}


@functools.lru_cache(maxsize=1)
def typestore():
    """ROS 2 Humble's message types plus vision_msgs (Humble's vision_msgs 4.x layout)."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    types = {}
    for name, text in VISION_MSGS.items():
        types.update(get_types_from_msg(text, name))
    store.register(types)
    return store


def msg_type(name: str):
    """The dataclass of a message type, e.g. ``msg_type("sensor_msgs/msg/Image")``."""
    return typestore().types[name]


def serialize(msg) -> bytes:
    return bytes(typestore().serialize_cdr(msg, msg.__msgtype__))


def deserialize(data: bytes, type_name: str):
    return typestore().deserialize_cdr(data, type_name)


NS = 1_000_000_000


def text_field(text) -> str:
    """``text`` as a string field can carry it: lone surrogates become U+FFFD (UTF-8 has no
    encoding for them), non-strings become their ``str``."""
    return valid_text(text if isinstance(text, str) else str(text))


def _jsonable(value):
    """``json.dumps`` fallback: numpy scalars and arrays as numbers and lists, anything else as text."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


def stamp_seconds(header) -> float:
    """Seconds of a Header's stamp (or of a Clock message's ``clock``)."""
    stamp = header.clock if hasattr(header, "clock") else header.stamp
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def stamp_ns(header) -> int:
    """The header's stamp in integer nanoseconds (exact, unlike float seconds of an epoch time)."""
    return int(header.stamp.sec) * NS + int(header.stamp.nanosec)


def header_ns(stamp: int, frame_id: str):
    Time, Header = msg_type("builtin_interfaces/msg/Time"), msg_type("std_msgs/msg/Header")
    return Header(stamp=Time(sec=stamp // NS, nanosec=stamp % NS), frame_id=text_field(frame_id))


def header(stamp: float, frame_id: str):
    return header_ns(int(round(stamp * NS)), frame_id)


def compressed_image_msg(img: np.ndarray, stamp: float, frame_id: str = "camera", compression: str = "jpeg",
                         quality: int = 90):
    """sensor_msgs/CompressedImage of an RGB or mono array, with image_transport's format string
    (e.g. "rgb8; jpeg compressed bgr8")."""
    from pixelis_ros.image_codec import compress

    colour = img.ndim == 3
    fmt = f"{'rgb8' if colour else 'mono8'}; {compression} compressed {'bgr8' if colour else 'mono8'}"
    return msg_type("sensor_msgs/msg/CompressedImage")(header=header(stamp, frame_id), format=fmt,
                                                       data=np.frombuffer(compress(img, compression, quality), np.uint8))


def image_msg(img: np.ndarray, stamp: float, frame_id: str = "camera", encoding: str = "rgb8"):
    f = image_to_fields(img, encoding)
    return msg_type("sensor_msgs/msg/Image")(header=header(stamp, frame_id), height=f["height"], width=f["width"],
                                             encoding=f["encoding"], is_bigendian=0, step=f["step"],
                                             data=np.frombuffer(f["data"], np.uint8))


def image_from_msg(msg) -> np.ndarray:
    """Image or CompressedImage message -> array (ImageDecodeError for bad fields/payloads).
    Duck-typed on the fields, so rclpy messages work as well as rosbags dataclasses."""
    if hasattr(msg, "format"):
        return compressed_from_fields(msg.format, bytes(msg.data))
    return image_from_fields(msg.height, msg.width, msg.encoding, msg.is_bigendian, msg.step, msg.data)


def string_msg(text: str):
    return msg_type("std_msgs/msg/String")(data=text_field(text))


def answer_msg(record: dict):
    """std_msgs/String carrying the answer JSON (answer, action, trace, timings)."""
    return string_msg(json.dumps(record, ensure_ascii=False, default=_jsonable))


def detections_msg(boxes: list[tuple[str, tuple[float, float, float, float], float]], stamp: float, frame_id: str):
    """vision_msgs/Detection2DArray from (label, box, score) triples in image pixels."""
    D, Array = msg_type("vision_msgs/msg/Detection2D"), msg_type("vision_msgs/msg/Detection2DArray")
    Bbox, Pose2D, Point2D = msg_type("vision_msgs/msg/BoundingBox2D"), msg_type("vision_msgs/msg/Pose2D"), msg_type("vision_msgs/msg/Point2D")
    Hyp, HypPose = msg_type("vision_msgs/msg/ObjectHypothesis"), msg_type("vision_msgs/msg/ObjectHypothesisWithPose")
    PoseCov, Pose = msg_type("geometry_msgs/msg/PoseWithCovariance"), msg_type("geometry_msgs/msg/Pose")
    Point, Quat = msg_type("geometry_msgs/msg/Point"), msg_type("geometry_msgs/msg/Quaternion")
    h = header(stamp, frame_id)
    out = []
    for label, (x1, y1, x2, y2), score in boxes:
        pose = PoseCov(pose=Pose(position=Point(x=0.0, y=0.0, z=0.0), orientation=Quat(x=0.0, y=0.0, z=0.0, w=1.0)),
                       covariance=np.zeros(36, np.float64))
        label = text_field(label)
        out.append(D(header=h, results=[HypPose(hypothesis=Hyp(class_id=label, score=float(score)), pose=pose)],
                     bbox=Bbox(center=Pose2D(position=Point2D(x=(x1 + x2) / 2, y=(y1 + y2) / 2), theta=0.0),
                               size_x=float(x2 - x1), size_y=float(y2 - y1)), id=label))
    return Array(header=h, detections=out)


def point_msg(x: float, y: float, z: float, stamp: float, frame_id: str):
    P, PS = msg_type("geometry_msgs/msg/Point"), msg_type("geometry_msgs/msg/PointStamped")
    return PS(header=header(stamp, frame_id), point=P(x=float(x), y=float(y), z=float(z)))


def diagnostics_msg(name: str, level: int, message: str, values: dict, stamp: float):
    Status, KV, Array = (msg_type("diagnostic_msgs/msg/DiagnosticStatus"), msg_type("diagnostic_msgs/msg/KeyValue"),
                         msg_type("diagnostic_msgs/msg/DiagnosticArray"))
    status = Status(level=int(level), name=text_field(name), message=text_field(message), hardware_id="pixelis",
                    values=[KV(key=text_field(k), value=text_field(v)) for k, v in values.items()])
    return Array(header=header(stamp, ""), status=[status])


def camera_info_msg(width: int, height: int, fovy_deg: float, stamp: float, frame_id: str):
    """sensor_msgs/CameraInfo of an ideal pinhole camera (square pixels, centred, no distortion)."""
    fy = height / 2 / np.tan(np.radians(fovy_deg) / 2)
    cx, cy = width / 2, height / 2
    k = np.array([fy, 0, cx, 0, fy, cy, 0, 0, 1], np.float64)
    p = np.array([fy, 0, cx, 0, 0, fy, cy, 0, 0, 0, 1, 0], np.float64)
    RoI = msg_type("sensor_msgs/msg/RegionOfInterest")
    return msg_type("sensor_msgs/msg/CameraInfo")(
        header=header(stamp, frame_id), height=int(height), width=int(width), distortion_model="plumb_bob",
        d=np.zeros(5, np.float64), k=k, r=np.eye(3).ravel(), p=p, binning_x=0, binning_y=0,
        roi=RoI(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))


def clock_msg(stamp: float):
    """rosgraph_msgs/Clock: the simulation time, for nodes running with use_sim_time."""
    return msg_type("rosgraph_msgs/msg/Clock")(clock=header(stamp, "").stamp)


def vector3_msg(x: float, y: float, z: float):
    return msg_type("geometry_msgs/msg/Vector3")(x=float(x), y=float(y), z=float(z))
