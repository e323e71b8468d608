"""ROS 2 adapters over the core library: thin rclpy nodes, one class per file.

``graph`` (the graph description) imports no ROS; every other module here needs rclpy.
"""
