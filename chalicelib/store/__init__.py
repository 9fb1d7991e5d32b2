"""The stream store (docs/architecture.md, stream store), split by concern:

* ``records``: table schemas, item shapes, reading records and storing frames;
* ``lifecycle``: creating a stream under the per-user cap, finishing it, ending it
  with an error frame the caller builds;
* ``leases``: the producer's claim (a lease renewed while it runs) and the delivery
  cursor of the WebSocket architecture;
* ``followers``: leased follower slots, bounded per stream and per user;
* ``cancel``: the cancel watch producers ask between model events.

``chalicelib.stream_store.StreamStore`` puts them together.
"""
