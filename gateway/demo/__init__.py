"""``fieldgate demo``: the gateway with simulated nodes and a live terminal view.

Everything runs on embedded defaults: a journal in SQLite under a temporary (or
given) directory, the node simulator on real pseudo-terminals and MQTT, and a
broker — Debian's mosquitto if installed, else the pure-Python amqtt broker
in-process. No cloud, no hand-installed service.

The demo tells a short story within about a minute: every pump calibrates its
normal baseline for ``calibration_s`` (the gateway model scores nothing before),
then one pump gets a labelled injected fault (by default its discharge valve
closes at 40 s for 30 s). The live view shows each node's gateway anomaly score
(and its own model's score, if nodes run one), and an alerts panel fed by the
gateway's in-process alert stream: a channel-threshold rule on pressure and the
anomaly rule raise alerts in the fault and clear them after it.

One module per job: :mod:`.scenario` (the story and its result), :mod:`.broker`,
:mod:`.view` (the live terminal view), :mod:`.run` (broker, simulator and gateway together)
and :mod:`.command` (the Typer command). This package and ``gateway.cli`` are the only
gateway code that imports the simulator (composition at the top).
"""
