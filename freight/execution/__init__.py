"""Making deploys happen: the one hand-over path from the queue to the engine, the reconciler
that repairs what a dead process left behind, and the pieces a deploy's run is made of (its
context, steps, monitor, log writer and outcomes). This layer owns transactions and talks to
the network; the rules it applies live in freight/service/.
"""
