"""Helpers every test package shares (fakes of AWS, of the nodes, of the workflow engine)."""
