"""Launch the pixelis agent node: `ros2 launch pixelis_ros agent.launch.py image_topic:=/camera/image_raw`."""

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue


def generate_launch_description() -> LaunchDescription:
    share = Path(get_package_share_directory("pixelis_ros"))
    args = [
        DeclareLaunchArgument("params_file", default_value=str(share / "config" / "agent.yaml"),
                              description="YAML parameter file (defaults: config/agent.yaml)"),
        DeclareLaunchArgument("model", default_value=str(share / "models" / "pixelis-small"),
                              description="local model folder for the policy (default: the bundled pixelis-small; "
                                          "its ONNX export is made on first use for backend:=onnx)"),
        DeclareLaunchArgument("backend", default_value="torch", description="policy backend: torch, onnx or tensorrt"),
        DeclareLaunchArgument("trace", default_value="", description="CoTA script replayed instead of the model"),
        DeclareLaunchArgument("image_topic", default_value="/camera/image_raw", description="camera image topic"),
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
        remappings=[("image", LaunchConfiguration("image_topic")),
                    ("image/compressed", [LaunchConfiguration("image_topic"), "/compressed"])],
    )
    return LaunchDescription([*args, node])
