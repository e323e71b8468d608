"""Cooperative (draft/target) inference of behavior-cloning robot policies over ROS 2."""

__version__ = "0.1.0"
