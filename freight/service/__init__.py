"""Freight's service layer: what the database says, and the rules that decide it.

A Session and plain values in, models or small dataclasses out, FreightError raised. Nothing
here commits (the caller owns the transaction), reads the environment, talks to the network or
to the engine: making things happen is freight/execution/.
"""
