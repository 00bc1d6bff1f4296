"""Plug-ins for other RL frameworks (verl); TRL's plug-in is codescaler.rewards."""
