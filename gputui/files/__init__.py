"""Leaves for files any layer uses.

`atomic`: writes that are whole or absent, and strict JSON; `tail`: the one reader of files that grow
while we read them; `wakeup`: a poll-based wait on a pipe or a signal.
"""
