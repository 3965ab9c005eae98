"""Operators: thin adapters that read templated args, get a hook, call core and return small JSON."""
