"""Parley's Tk desktop client: windows and widgets only. The rules live in parley_client."""
