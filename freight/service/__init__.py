"""Freight's service layer: the domain operations every interface (flows, API, CLI, tests) calls.

Session and plain values in, models or small dataclasses out, FreightError raised. Nothing here
imports prefect, fastapi or typer; orchestration is reached through the `Orchestrator` protocol.
"""
