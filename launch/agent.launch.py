"""Launch the pixelis agent node on a robot's camera.

    ros2 launch pixelis_ros agent.launch.py image:=/camera/color/image_raw \
        depth:=/camera/aligned_depth_to_color/image_raw camera_info:=/camera/color/camera_info

Every input and output of the node is a launch argument naming the topic it is remapped to
(``REMAPPABLE``); the ask action too (``ask:=/robot/ask``).
"""

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

# The node's own name -> (launch argument, default topic, description).
REMAPPABLE = {
    "image": ("image", LaunchConfiguration("image_topic"), "camera image topic (sensor_msgs/Image)"),
    "image/compressed": ("compressed_image", [LaunchConfiguration("image"), "/compressed"],
                         "compressed camera image topic (sensor_msgs/CompressedImage; default: <image>/compressed)"),
    "depth": ("depth", "/camera/depth/image_raw", "depth image topic registered to the camera (16UC1 mm or 32FC1 m)"),
    "camera_info": ("camera_info", "/camera/camera_info", "camera intrinsics topic (sensor_msgs/CameraInfo)"),
    "query": ("query", "query", "question topic (std_msgs/String)"),
    "answer": ("answer", "answer", "answer topic (std_msgs/String, JSON)"),
    "detections": ("detections", "detections", "detections in the newest frame (vision_msgs/Detection2DArray)"),
    "target": ("target", "target", "action target (geometry_msgs/PointStamped)"),
    "annotated": ("annotated", "annotated", "annotated image (sensor_msgs/Image)"),
    "diagnostics": ("diagnostics", "diagnostics", "node health (diagnostic_msgs/DiagnosticArray)"),
    "ask": ("ask", "ask", "the Ask action (pixelis_interfaces/action/Ask)"),
}


def generate_launch_description() -> LaunchDescription:
    share = Path(get_package_share_directory("pixelis_ros"))
    args = [
        DeclareLaunchArgument("params_file", default_value=str(share / "config" / "agent.yaml"),
                              description="YAML parameter file (defaults: config/agent.yaml)"),
        DeclareLaunchArgument("model", default_value=str(share / "models" / "pixelis-small"),
                              description="local model folder for the policy (default: the bundled pixelis-small; "
                                          "its ONNX export is made on first use for backend:=onnx)"),
        DeclareLaunchArgument("backend", default_value="auto",
                              description="policy backend: auto (from the model folder), torch, onnx or tensorrt"),
        DeclareLaunchArgument("trace", default_value="", description="CoTA script replayed instead of the model"),
        DeclareLaunchArgument("image_topic", default_value="/camera/image_raw", description="camera image topic (same as image:=)"),
        *(DeclareLaunchArgument(arg, default_value=default, description=text) for arg, default, text in REMAPPABLE.values()),
        DeclareLaunchArgument("ttrl", default_value="false", description="test-time RL: adapt a LoRA adapter on the answered queries, label-free"),
    ]
    node = Node(
        package="pixelis_ros",
        executable="agent_node",
        name="pixelis_agent",
        output="screen",
        # Typed explicitly: launch would read an empty string as YAML null.
        parameters=[LaunchConfiguration("params_file"), {
            "model": ParameterValue(LaunchConfiguration("model"), value_type=str),
            "backend": ParameterValue(LaunchConfiguration("backend"), value_type=str),
            "trace": ParameterValue(LaunchConfiguration("trace"), value_type=str),
            "ttrl": ParameterValue(LaunchConfiguration("ttrl"), value_type=bool),
        }],
        remappings=[(name, LaunchConfiguration(arg)) for name, (arg, _, _) in REMAPPABLE.items()],
    )
    return LaunchDescription([*args, node])
