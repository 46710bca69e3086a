"""Requests → index keys, the index of recorded interactions, relaxations and near misses."""
