"""Chaos soak: the whole system under a fault every few seconds, checked like a total queue.

What runs (all real, on loopback, in a temp dir; ``python -m bench.soak --duration 120``):

* ``fieldgate run`` as a subprocess (kill -9 restarts it, as systemd would), its data
  directory on a small tmpfs (so the disk can really fill; a plain directory and no disk
  fault where mounting is not allowed);
* Debian's mosquitto and VictoriaMetrics (``tests/fixtures/servers.py``; VictoriaMetrics
  *without* dedup, so a sample delivered twice is stored twice and can be counted);
* simulated nodes (``firmware_tools.sim.Simulator``, what ``fieldgate simulate`` runs) in
  this process: serial nodes on ptys, MQTT nodes, and BLE nodes on Bumble virtual
  controllers sharing one ``LocalLink`` (the gateway reaches its controller over HCI/TCP,
  as ``python -m gateway.ble.radio`` serves it). Nodes hold every unacknowledged message
  (their buffer is large enough never to evict during the run) and resend it.

Faults (``bench/soak/faults.py``), one after another with a few seconds between:
kill -9 of the gateway, broker stop/start, store stop/start, a serial pty unplugged and
replugged, a BLE link dropped by the node, the forwarding budget filled (the store down
long enough for the raw backlog to pass its budget, so the oldest raw points are evicted
and counted) and the disk filled (a filler file takes the tmpfs' last byte).

The identity of a reading: ``(node, boot, seq)`` at the node and in the journal; in the
store it is the raw point of channel ``current`` (forwarding's ``raw_channels``), whose
identity is ``(node, timestamp)`` and whose value must equal the journal's. What the checker
(``bench/soak/checker.py``) counts, after the faults stop and everything has drained:

* **emitted**: every sample a node transmitted at least once (the simulator's own record).
* **acknowledged**: samples covered by an ``Ack`` the node received (recorded at the node).
* **lost**: acknowledged but not in the journal (must be 0: invariant *Acknowledged means
  durable*), plus journal readings missing from the store beyond those the gateway
  accounted for (raw points evicted by the forwarding budget, readings that arrived after
  their interval had closed: ``journal_late``). Must be 0.
* **unexpected**: in the journal but never emitted, or in the store but not in the journal
  (or with another value). Must be 0.
* **duplicated**: a store identity holding more than one sample, outside the batch that was
  in flight when the gateway was killed or the store stopped. Must be 0. Doubles *inside*
  such a batch are the at-least-once resend the design allows (docs/forwarding.md: the
  store overwrites them by identity; VictoriaMetrics with ``-dedup.minScrapeInterval``
  keeps one); they are reported as ``redelivered``.
* **recovered**: emitted, never acknowledged to the node (the ack was lost with a killed
  gateway, or the run ended first), yet in the journal.

The gateway's RSS and open fds are sampled every second; ``rss_growth_mb`` is the growth
within the longest-lived gateway process (from 15 s after its start to its end).
"""
