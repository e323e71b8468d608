"""Federated training of the early-exit policy across the fleet's robots (clients), with
each client's exit losses weighted by how its requests are served (arXiv 2405.04249).

``clients`` (torch-free): who the clients are, their data and serving rates, the weights of
the objective. ``local``: a client's training and the served closed-loop evaluation.
``run``: one run's settings, a client's data, the per-round log. ``flower_apps``: Flower's
ClientApp and ServerApp. ``train``: ``hybrid-policy fl-train`` (both Flower engines and the
non-federated baselines). docs/families/federated.md.
"""
