"""ROS-free node logic: what the rclpy nodes, the DDS runner and the rosbag2 player share."""
