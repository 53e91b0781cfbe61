"""The link stage: which conversation each finished record belongs to.

:mod:`.rules` holds the linking rules (pure); :mod:`.linker` is the stage the pipeline's worker
runs; :mod:`.span_notes` is what a span processor's hooks note on the application thread;
:mod:`.waiting` slims the records that wait; :mod:`.status` reports recent outcomes.
"""
