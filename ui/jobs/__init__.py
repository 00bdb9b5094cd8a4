"""Background jobs: fits, hypernetwork encodes and trainings, each in its own worker process.

``worker`` runs in the child (no Qt), ``monitor`` turns what the child sends into Qt signals,
``queue`` starts jobs one after another and ``panel`` shows them.
"""
