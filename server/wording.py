"""Counts in log lines, in words a person reads: "1 connection", "2 connections"."""

from __future__ import annotations


def count_of(number: int, noun: str) -> str:
    """`number` and `noun`, plural unless it is exactly one: ``count_of(1, "worker")``."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def was_were(number: int) -> str:
    """The verb that agrees with `number`: "1 connection was", "2 connections were"."""
    return "was" if number == 1 else "were"
