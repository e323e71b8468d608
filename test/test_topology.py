"""Fleet topology files: the shipped fleet, routes, and clear errors for bad ones."""

from conftest import run_cli
import copy

import pytest
import yaml

from hybrid_policy.core import topology
from hybrid_policy.core.link import link_profile
from hybrid_policy.core.topology import TopologyError

FLEET = topology.load(topology.Path(__file__).resolve().parents[1] / "config" / "fleet.yaml")
BASE = {
    "nodes": {
        "edge": {"tier": "edge", "max_batch": 8, "parent": "cloud",
                 "link": {"profile": "wifi", "uplink_mbps": 500}},
        "cloud": {"tier": "cloud", "speed": 4.0, "max_batch": 64},
    },
    "robots": [{"name": "r", "count": 3, "task": "fetch_push", "mode": "adahi",
                "access": "edge", "server": "cloud", "link": "5g_embb"}],
}


def test_the_shipped_fleet_loads_and_routes_every_robot_to_its_server():
    assert len(FLEET.robots) >= 4 and FLEET.servers() == ["edge_0"]
    for robot in FLEET.robots:
        assert FLEET.route(robot) == (link_profile("5g_embb"),)


def test_routes_cross_every_hop_up_to_the_server_with_per_hop_overrides():
    topo = topology.parse(copy.deepcopy(BASE))
    assert [r.name for r in topo.robots] == ["r_0", "r_1", "r_2"]
    hops = topo.route(topo.robots[0])
    assert [h.name for h in hops] == ["5g_embb", "wifi"]
    assert hops[1].uplink_mbps == 500  # overridden for this hop; the rest is the profile's
    assert hops[1].downlink_mbps == link_profile("wifi").downlink_mbps
    assert topo.robots_of("cloud") == list(topo.robots) and topo.servers() == ["cloud"]


def _broken(edit):
    doc = copy.deepcopy(BASE)
    edit(doc)
    return doc


@pytest.mark.parametrize("edit,message", [
    (lambda d: d["robots"][0].update(access="edge_9"),
     "robot r: access 'edge_9' is not a node; nodes: edge, cloud"),
    (lambda d: d["nodes"]["edge"].update(parent="attic"),
     "node edge: parent 'attic' is not a node"),
    (lambda d: d["robots"][0].update(link="carrier_pigeon"),
     "robot r: unknown link profile 'carrier_pigeon'; valid: 6g_hrllc"),
    (lambda d: d["nodes"]["edge"].update(max_batch=0), "node edge: max_batch must be a whole "
                                                       "number >= 1, got 0"),
    (lambda d: d["nodes"]["cloud"].update(parent="edge", link="wifi"),
     "its parents form a cycle"),
    (lambda d: d["robots"][0].update(access="cloud", server="edge"),
     "robot r: no path to its server 'edge': requests go up from cloud through cloud"),
    (lambda d: d["nodes"]["edge"].update(tier="basement"), "tier 'basement' is not one of"),
    (lambda d: d["robots"][0].update(mode="telepathy"), "robot r: unknown mode 'telepathy'"),
    (lambda d: d["robots"][0].update(task="juggling"), "robot r: unknown task 'juggling'"),
    (lambda d: d["nodes"]["edge"].pop("link"), "node edge: a node with a parent needs the 'link'"),
    (lambda d: d["robots"].append(dict(d["robots"][0])), "repeated: r_0, r_1, r_2"),
    (lambda d: d["nodes"]["edge"].update(speed=0), "node edge: speed must be > 0"),
    (lambda d: d["robots"][0].update(colour="red"), "robots[0]: unknown key 'colour'"),
    (lambda d: d.update(weather={}), "unknown key 'weather'; valid: nodes, robots, federated"),
])
def test_a_bad_topology_is_refused_naming_the_entry(edit, message):
    """As every command reads one: the core's checks, then the families' (modes, blocks)."""
    from hybrid_policy.families.registry import parse_topology

    with pytest.raises(TopologyError) as err:
        parse_topology(_broken(edit), "fleet.yaml")
    assert message in str(err.value) and str(err.value).startswith("fleet.yaml: ")


def test_topology_show_prints_nodes_and_routes(cli, tmp_path):
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(BASE))
    out = run_cli("topology", "show", str(path))
    assert out.returncode == 0, out.stderr
    assert "r_2" in out.stdout and "r_2 -> edge -> cloud" in out.stdout
    assert "wifi (3 ms, 500/200 Mb/s)" in out.stdout
    path.write_text(yaml.safe_dump(_broken(lambda d: d["nodes"]["edge"].update(max_batch=0))))
    bad = run_cli("topology", "show", str(path))
    assert bad.returncode == 2 and "max_batch must be a whole number >= 1" in bad.stderr
