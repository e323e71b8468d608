"""ament_python package: installable by colcon on a ROS 2 machine and by pip anywhere else."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "hybrid_policy"

# Simulator versions are pinned: mujoco >= 3.12 breaks every gymnasium-robotics Fetch env.
SIM = ["mujoco==3.3.0", "gymnasium==1.4.0", "gymnasium-robotics==1.4.2", "metaworld==3.1.1"]
# Federated training: Flower's simulation engine runs on Ray; pinned as the message API and
# the deployment engine's CLI still move between minor versions.
FL = ["flwr[simulation]==1.41.0"]
# ROS 2 Kilted from PyPI wheels, for machines without a ROS install. With ROS 2 installed,
# colcon uses the system rclpy and this extra must not be installed.
ROS = [
    "ros-rclpy[fastrtps]==9.1.2",
    "ros-std-msgs",
    "ros-sensor-msgs",
    "ros-trajectory-msgs",
    "ros-diagnostic-msgs",
    "ros-geometry-msgs",
    "ros-lifecycle-msgs",
    "ros-std-srvs",
]

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*", "sim_envs", "sim_envs.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
    ],
    package_data={f"{PACKAGE}.families.federated": ["app/pyproject.toml"]},
    python_requires=">=3.10",
    install_requires=["numpy>=1.26", "pyyaml", "tqdm", "torch>=2.3", "safetensors",
                      "vector-quantize-pytorch==1.32.0", "scipy", "matplotlib", "rosbags==0.11.9",
                      *SIM, *FL],
    extras_require={"ros": ROS,
                    "test": ["pytest", "pytest-xdist", "hypothesis", "colcon-common-extensions"]},
    zip_safe=True,
    maintainer="hybrid_policy developers",
    maintainer_email="hybrid-policy@example.org",
    description="Cooperative draft/target inference of BC robot policies over ROS 2",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "hybrid-policy = hybrid_policy.cli:main",
            "sim_node = hybrid_policy.ros.sim_node:main",
            "draft_node = hybrid_policy.ros.draft_node:main",
            "target_node = hybrid_policy.families.adahi.target_node:main",
            "link_node = hybrid_policy.ros.link_node:main",
            "exit_node = hybrid_policy.families.exits.exit_node:main",
            "student_node = hybrid_policy.families.rocoin.student_node:main",
            "idn_node = hybrid_policy.families.idn.idn_node:main",
            "placement_node = hybrid_policy.families.idn.placement_node:main",
            "recorder_node = hybrid_policy.ros.recorder_node:main",
            "lifecycle_manager = hybrid_policy.ros.lifecycle_manager:main",
        ],
    },
)
