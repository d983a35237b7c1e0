"""Jitted sampling: prefill, resumable decode loop, samplers."""

from ttcjax.decoding.cache import Cache
from ttcjax.decoding.decoder import DecodeState, Decoder, left_pad
from ttcjax.decoding.samplers import Greedy, Sampler, Sampling

__all__ = ["Cache", "DecodeState", "Decoder", "Greedy", "Sampler", "Sampling",
           "left_pad"]
