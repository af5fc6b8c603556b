"""Pixelis as a ROS 2 plugin: a vision-language agent that reasons by acting on pixels."""

__version__ = "0.1.0"
