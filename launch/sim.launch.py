"""Simulator in the loop: `ros2 launch pixelis_ros sim.launch.py suite:=smoke oracle:=true`.

Starts sim_node (camera, questions, scoring) and agent_node wired on the same topics in one
namespace. The agent runs on the simulation's /clock (use_sim_time) and its image subscription
is reliable (every frame of a clip counts). The camera, depth, camera_info and query topics are
launch arguments (relative names resolve in the namespace), so the loop can run on the names a
robot's launch uses.
"""

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

TOPICS = ("image", "depth", "camera_info", "query")  # remappable on both nodes, e.g. image:=/camera/image_raw


def generate_launch_description() -> LaunchDescription:
    share = Path(get_package_share_directory("pixelis_ros"))
    args = [
        DeclareLaunchArgument("suite", default_value="smoke", description="task suite: a shipped name or a .yaml path"),
        DeclareLaunchArgument("episodes", default_value="0", description="episodes to play (0: the suite's count)"),
        DeclareLaunchArgument("speed", default_value="1.0", description="camera streaming speed relative to the clip's rate"),
        DeclareLaunchArgument("oracle", default_value="false",
                              description="send each question with its expert trace (no model needed)"),
        DeclareLaunchArgument("model", default_value="", description="local model folder for the agent's policy"),
        DeclareLaunchArgument("backend", default_value="auto",
                              description="policy backend: auto (from the model folder), torch, onnx or tensorrt"),
        DeclareLaunchArgument("namespace", default_value="pixelis", description="namespace of both nodes' topics"),
        DeclareLaunchArgument("params_file", default_value=str(share / "config" / "agent.yaml"),
                              description="agent parameter file"),
        DeclareLaunchArgument("sim_params_file", default_value=str(share / "config" / "sim.yaml"),
                              description="sim parameter file"),
        *(DeclareLaunchArgument(name, default_value=name, description=f"topic of the sim's {name} (both nodes)")
          for name in TOPICS),
    ]
    remappings = [(name, LaunchConfiguration(name)) for name in TOPICS]
    remappings.append(("image/compressed", [LaunchConfiguration("image"), "/compressed"]))
    sim = Node(
        package="pixelis_ros", executable="sim_node", name="pixelis_sim", namespace=LaunchConfiguration("namespace"),
        output="screen",
        parameters=[LaunchConfiguration("sim_params_file"), {
            "suite": ParameterValue(LaunchConfiguration("suite"), value_type=str),
            "episodes": ParameterValue(LaunchConfiguration("episodes"), value_type=int),
            "speed": ParameterValue(LaunchConfiguration("speed"), value_type=float),
            "oracle": ParameterValue(LaunchConfiguration("oracle"), value_type=bool),
        }],
        remappings=remappings,
    )
    agent = Node(
        package="pixelis_ros", executable="agent_node", name="pixelis_agent", namespace=LaunchConfiguration("namespace"),
        output="screen",
        parameters=[LaunchConfiguration("params_file"), {
            "model": ParameterValue(LaunchConfiguration("model"), value_type=str),
            "backend": ParameterValue(LaunchConfiguration("backend"), value_type=str),
            "accept_scripts": ParameterValue(LaunchConfiguration("oracle"), value_type=bool),
            "image_reliability": "reliable", "use_sim_time": True, "buffer_frames": 64,
        }],
        remappings=remappings,
    )
    return LaunchDescription([*args, sim, agent])
