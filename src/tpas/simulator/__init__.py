"""A simulated ThingPark network server, for demos, end-to-end tests and benchmarks.

It plays both sides of ThingPark's tunnel interface (SPEC.md §7): it posts reports from
virtual devices to an application server (:class:`Simulation`), and it takes downlinks
like the LRC does and confirms them with ``DevEUI_downlink_Sent`` reports
(:class:`NetworkServer`). It talks to tpas over HTTP only, like the real network server:
of tpas it uses the pure protocol layer and :mod:`tpas.testing`, nothing else
(import-linter checks it). docs/simulator.md describes the behaviour.
"""

from tpas.simulator.api_client import TpasApi
from tpas.simulator.devices import Fleet, VirtualDevice
from tpas.simulator.follower import DownlinkFollower
from tpas.simulator.network_server import NetworkServer, NsFaults, NsStats
from tpas.simulator.payload import Reading, decode_reading, encode_reading
from tpas.simulator.progress import Progress, Tally, render_summary
from tpas.simulator.sender import Answer, Receipt, Sender
from tpas.simulator.simulation import Simulation, SimulationConfig
from tpas.simulator.traffic import Expectation, Fault, Faults, Mix, Outcome, Planner, Shot

__all__ = [
    "Answer",
    "DownlinkFollower",
    "Expectation",
    "Fault",
    "Faults",
    "Fleet",
    "Mix",
    "NetworkServer",
    "NsFaults",
    "NsStats",
    "Outcome",
    "Planner",
    "Progress",
    "Reading",
    "Receipt",
    "Sender",
    "Shot",
    "Simulation",
    "SimulationConfig",
    "Tally",
    "TpasApi",
    "VirtualDevice",
    "decode_reading",
    "encode_reading",
    "render_summary",
]
