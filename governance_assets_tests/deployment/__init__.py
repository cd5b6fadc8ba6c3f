"""Tests of the team deployment against real servers on loopback."""
