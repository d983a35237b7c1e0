"""Thin absl entry points: parse flags, call one library function."""
