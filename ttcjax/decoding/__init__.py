"""Jitted sampling: prefill, resumable decode loop, samplers."""

from ttcjax.decoding.decoder import DecodeState, Decoder
from ttcjax.decoding.samplers import Greedy, Sampler, Sampling

__all__ = ["DecodeState", "Decoder", "Greedy", "Sampler", "Sampling"]
