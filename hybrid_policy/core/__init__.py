"""Per-step decision logic of every cooperative-inference mode and the in-process evaluator.

No ROS imports here: the ROS nodes and the evaluator both call this code.
"""
