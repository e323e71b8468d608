"""The ament_python layout that colcon and `ros2 run` rely on."""

import configparser
import xml.etree.ElementTree as ET

from conftest import REPO


def test_package_xml_is_format_3_ament_python():
    root = ET.parse(REPO / "package.xml").getroot()
    assert root.get("format") == "3"
    assert root.findtext("name") == "hybrid_policy"
    assert root.find("export/build_type").text == "ament_python"
    deps = {e.text for e in root.findall("exec_depend")}
    assert {"rclpy", "std_msgs", "sensor_msgs"} <= deps
    assert "python3-pytest" in {e.text for e in root.findall("test_depend")}


def test_scripts_install_where_ros2_run_looks():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    assert cfg["develop"]["script_dir"] == "$base/lib/hybrid_policy"
    assert cfg["install"]["install_scripts"] == "$base/lib/hybrid_policy"
    assert (REPO / "resource" / "hybrid_policy").exists()
