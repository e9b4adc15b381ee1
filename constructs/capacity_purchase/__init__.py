"""Capacity Block purchase: the construct (construct.py), its Lambda handler (handler/; the
contract is the docstring of handler/capacity_block/__init__.py) and the offering search command
(offerings_cli.py).

Nothing is imported here, so config.py can import the handler's limits without importing the
construct, which imports config.py.
"""
