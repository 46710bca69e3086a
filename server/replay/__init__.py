"""Sending a matched recording: when each part goes out (pacing) and how (send)."""
