"""The machine agent (`freight agent`): light, outbound only; see agent/service.py."""
