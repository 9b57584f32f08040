"""alerts — one clear message when a data integration's authentication breaks.

The pipeline, one module (or small package) per stage::

    sources/ -> catalog -> lifecycle -> routing -> render -> outbox -> channels/
                (classify)  (dedup)      (who)      (what)   (durable)  (how)

``models`` and ``config`` sit below everything; ``storage`` holds the tables;
``ingest`` and ``worker`` compose the stages; ``web`` and ``cli`` are the edges.
"""

__version__ = "0.1.0"
