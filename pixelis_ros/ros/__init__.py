"""The ROS side: rclpy nodes (``agent_node``) and the ROS-2-wire DDS transport (``dds``).

Only the ``*_node`` modules import rclpy; importing this package does not.
"""
