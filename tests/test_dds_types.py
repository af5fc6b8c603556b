"""The ROS 2 type layer on Cyclone DDS (``pixelis_ros.ros.dds_types``): names, CDR payloads and
topic types, with no DDS traffic (the transport is ``tests/test_dds_transport.py``)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("cyclonedds", reason="the cyclonedds binding (extra 'dds') is not installed")

from pixelis_ros import messages  # noqa: E402
from pixelis_ros.ros import dds_types  # noqa: E402

IMAGE = "sensor_msgs/msg/Image"


def frame(i: int, shape=(480, 640, 3)) -> np.ndarray:
    """A deterministic, distinct test frame."""
    return ((np.arange(int(np.prod(shape)), dtype=np.uint32) * 7 + i * 13) % 251).astype(np.uint8).reshape(shape)


def test_ros2_names_on_the_wire():
    assert dds_types.dds_topic_name("/image") == "rt/image"
    assert dds_types.dds_topic_name("image") == "rt/image"
    assert dds_types.dds_topic_name("/robot1/camera/image_raw") == "rt/robot1/camera/image_raw"
    for bad in ("", "/", "/a//b", "/a/", "~/x"):
        with pytest.raises(ValueError):
            dds_types.dds_topic_name(bad)
    assert dds_types.dds_type_name(IMAGE) == "sensor_msgs::msg::dds_::Image_"
    assert dds_types.dds_type_name("std_msgs/String") == "std_msgs::msg::dds_::String_"
    assert dds_types.dds_type_name("vision_msgs/msg/Detection2DArray") == "vision_msgs::msg::dds_::Detection2DArray_"


def test_padding_is_announced_and_removed():
    for text in ("", "a", "ab", "abc", "abcd", "hello"):
        cdr = messages.serialize(messages.string_msg(text))
        wire = dds_types.pad_payload(cdr)
        assert len(wire) % 4 == 0 and wire[:2] == b"\x00\x01" and wire[3] == len(wire) - len(cdr)
        assert dds_types.unpad_payload(wire) == cdr


def test_serialize_padded_is_rosbags_cdr_for_every_kind_of_message():
    """``publish`` serializes into a reused buffer: its bytes must still be exactly rosbags' CDR
    (rosbags relies on a zeroed buffer for string terminators and alignment gaps)."""
    msgs = [messages.string_msg("hello"), messages.string_msg("abcd"), messages.string_msg(""),
            messages.image_msg(frame(2, (5, 7, 3)), 1.5, "cam"), messages.image_msg(frame(3, (5, 7, 3)), 2.5, "camera"),
            messages.image_msg(frame(4), 3.5, "cam"), messages.image_msg(frame(5), 4.5, "cam"),
            messages.detections_msg([("sign", (1, 2, 30, 40), 0.9), ("cup", (5, 6, 7, 8), 0.25)], 3.0, "cam"),
            messages.detections_msg([("a", (1, 2, 3, 4), 0.5)], 3.0, "c"),
            messages.point_msg(1.0, 2.0, 3.0, 4.0, "map"),
            messages.diagnostics_msg("pixelis", 1, "slow", {"fps": 3.5, "queue": 2}, 5.0),
            messages.answer_msg({"answer": "red", "trace": ["zoom", "ocr"]})]
    buffer = None
    for msg in msgs:
        buffer = dds_types.serialize_padded(msg, msg.__msgtype__, buffer)
        assert bytes(buffer) == dds_types.pad_payload(messages.serialize(msg)), msg.__msgtype__
        assert dds_types.unpad_payload(bytes(buffer)) == messages.serialize(msg)


def test_dds_type_is_the_faithful_ros_layout():
    from cyclonedds.idl import IdlStruct

    cls = dds_types.dds_type(IMAGE)
    assert cls.__idl_typename__ == "sensor_msgs::msg::dds_::Image_"
    assert cls.__base__ is IdlStruct  # no extra IDL base struct in the XTypes description
    assert list(cls.__annotations__) == ["header", "height", "width", "encoding", "is_bigendian", "step", "data"]
    header = cls.__annotations__["header"]
    assert header.__idl_typename__ == "std_msgs::msg::dds_::Header_"
    assert dds_types.dds_type(IMAGE) is cls  # cached: one class per type
    detections = dds_types.dds_type("vision_msgs/msg/Detection2DArray")
    assert detections.__idl_typename__ == "vision_msgs::msg::dds_::Detection2DArray_"
    with pytest.raises(dds_types.DdsError):
        dds_types.dds_type("no_such_pkg/msg/Nothing")


def test_a_dds_type_carries_cdr_bytes_unchanged():
    """The carrier protocol the transport relies on: ``serialize`` gives back the bytes an
    instance was made with, ``deserialize`` wraps the bytes it is given."""
    cls = dds_types.dds_type("std_msgs/msg/String")
    cdr = messages.serialize(messages.string_msg("carried"))
    assert cls(cdr).serialize(use_version_2=False) == cdr
    assert cls.deserialize(cdr).cdr == cdr
