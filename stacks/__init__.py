"""Stacks compose the constructs under constructs/ (imported as trn_constructs)."""
