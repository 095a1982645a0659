"""Matplotlib drawing for `passk reproduce`: each module turns result numbers into figures."""
