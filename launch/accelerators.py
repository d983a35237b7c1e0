"""Accelerator flags -> what a job needs: chips, topology, hosts, machine spec.

Pure python (no xmanager, no cloud): `--tpu=v4-8`, `--tpu=v5litepod-16`,
`--gpu_type=h100 --gpu_count=8` become an `Accelerator`, which knows its
chips, hosts, default topology, the XManager resource name and the Vertex AI
`machineSpec` it maps to.

TPU names follow Cloud TPU: v2, v3, v4 and v5p count TensorCores (2 per
chip: v4-8 is 4 chips, topology 2x2x1), v5litepod (v5e) and v6e count chips
(v5litepod-16 is 16 chips, 4x4).
"""

from __future__ import annotations

import dataclasses
import math
import re


class AcceleratorError(ValueError):
  """An accelerator flag that names no valid slice or GPU host; says which."""


@dataclasses.dataclass(frozen=True)
class TpuVersion:
  """One TPU generation.

  Attributes:
    cores_per_chip: TensorCores per chip (what the type's number counts
      for v2/v3/v4/v5p).
    chips_per_host: chips per VM of a multi-host slice.
    single_host_chips: slice sizes (chips) that fit on one VM.
    dims: topology dimensions (2 or 3).
    vertex_accelerator: Vertex AI `acceleratorType`.
    vertex_machine: Vertex AI `machineType` ('{n}' = chips per VM).
    xm_resources: XManager `ResourceType` names to try, newest first.
  """
  cores_per_chip: int
  chips_per_host: int
  single_host_chips: tuple[int, ...]
  dims: int
  vertex_accelerator: str
  vertex_machine: str
  xm_resources: tuple[str, ...]


TPU_VERSIONS = {
    "v2": TpuVersion(2, 4, (4,), 2, "TPU_V2", "cloud-tpu", ("TPU_V2",)),
    "v3": TpuVersion(2, 4, (4,), 2, "TPU_V3", "cloud-tpu", ("TPU_V3",)),
    "v4": TpuVersion(2, 4, (4,), 3, "TPU_V4_POD", "cloud-tpu",
                     ("TPU_V4", "TPU_V4_POD")),
    "v5p": TpuVersion(2, 4, (4,), 3, "TPU_V5P", "cloud-tpu",
                      ("TPU_V5P", "TPU_V5")),
    "v5litepod": TpuVersion(1, 4, (1, 4, 8), 2, "TPU_V5_LITEPOD",
                            "ct5lp-hightpu-{n}t",
                            ("TPU_V5E", "TPU_V5_LITEPOD", "TPU_V5LITEPOD")),
    "v6e": TpuVersion(1, 4, (1, 4, 8), 2, "TPU_V6E", "ct6e-standard-{n}t",
                      ("TPU_V6E",)),
}
TPU_ALIASES = {"v5e": "v5litepod"}


@dataclasses.dataclass(frozen=True)
class GpuType:
  """One GPU model: its Vertex names and the largest host it comes in."""
  vertex_accelerator: str
  machines: dict[int, str]  # GPUs per host -> Vertex machine type
  xm_resources: tuple[str, ...]


GPU_TYPES = {
    "h100": GpuType("NVIDIA_H100_80GB", {8: "a3-highgpu-8g"}, ("H100",)),
    "h200": GpuType("NVIDIA_H200_141GB", {8: "a3-ultragpu-8g"}, ("H200",)),
    "a100": GpuType("NVIDIA_TESLA_A100",
                    {1: "a2-highgpu-1g", 2: "a2-highgpu-2g",
                     4: "a2-highgpu-4g", 8: "a2-highgpu-8g"}, ("A100",)),
    "a100_80gb": GpuType("NVIDIA_A100_80GB",
                         {1: "a2-ultragpu-1g", 2: "a2-ultragpu-2g",
                          4: "a2-ultragpu-4g", 8: "a2-ultragpu-8g"},
                         ("A100_80GIB", "A100_80GB")),
    "l4": GpuType("NVIDIA_L4", {1: "g2-standard-12", 2: "g2-standard-24",
                                4: "g2-standard-48", 8: "g2-standard-96"},
                  ("L4",)),
}


@dataclasses.dataclass(frozen=True)
class Accelerator:
  """The accelerator a job runs on.

  Attributes:
    kind: 'tpu' or 'gpu'.
    name: as given (`v4-8`, `h100`).
    family: TPU version (`v4`) or GPU type (`h100`).
    chips: TPU chips or GPUs in all.
    hosts: VMs (processes of a multi-host run).
    topology: TPU topology (`2x2x1`) or, for GPUs, `<per host>x<hosts>`.
  """
  kind: str
  name: str
  family: str
  chips: int
  hosts: int
  topology: str

  @property
  def per_host(self) -> int:
    return self.chips // self.hosts

  @property
  def image_variant(self) -> str:
    """Which jax the image carries: 'tpu' or 'cuda'."""
    return "tpu" if self.kind == "tpu" else "cuda"

  @property
  def xm_vertex_ok(self) -> bool:
    """Whether XManager's Vertex executor can place this accelerator: its
    machine-spec table knows TPU v2/v3 ('cloud-tpu') and GPUs, not v4+."""
    return self.kind == "gpu" or self.family in ("v2", "v3")

  @property
  def xm_resources(self) -> tuple[str, ...]:
    table = TPU_VERSIONS if self.kind == "tpu" else GPU_TYPES
    return table[self.family].xm_resources

  def describe(self) -> str:
    unit = "chips" if self.kind == "tpu" else "GPUs"
    return (f"{self.kind.upper()} {self.name}: {self.chips} {unit}, topology "
            f"{self.topology}, {self.hosts} host(s)")

  def vertex_machine_spec(self) -> dict:
    """Vertex AI `workerPoolSpecs[0]` fields other than the container."""
    if self.kind == "tpu":
      version = TPU_VERSIONS[self.family]
      spec = {"machineType": version.vertex_machine.format(n=self.per_host),
              "acceleratorType": version.vertex_accelerator}
      if version.vertex_machine == "cloud-tpu":
        spec["acceleratorCount"] = self.chips * version.cores_per_chip
      if self.family not in ("v2", "v3"):  # those take a count only
        spec["tpuTopology"] = self.topology
      return {"machineSpec": spec, "replicaCount": 1}
    gpu = GPU_TYPES[self.family]
    return {"machineSpec": {"machineType": gpu.machines[self.per_host],
                            "acceleratorType": gpu.vertex_accelerator,
                            "acceleratorCount": self.per_host},
            "replicaCount": self.hosts}


def _default_topology(chips: int, dims: int) -> str:
  """The most square topology of `chips` (powers of two), as Cloud TPU
  names them: 2D `AxB` with A <= B (4x8), 3D ascending with any 1 last
  (2x2x1, 2x2x4)."""
  if chips & (chips - 1):
    raise AcceleratorError(f"{chips} chips is not a power of two; pass "
                           "--tpu_topology")
  sides = [1] * dims
  for i in range(int(math.log2(chips))):
    sides[(dims - 1 - i) % dims] *= 2
  sides.sort(key=lambda s: (s == 1, s))
  return "x".join(map(str, sides))


def parse_tpu(name: str, topology: str | None = None) -> Accelerator:
  """`--tpu` (and optional `--tpu_topology`) as an `Accelerator`."""
  match = re.fullmatch(r"(v\d+[a-z]*)-(\d+)", name or "")
  family = match and TPU_ALIASES.get(match[1], match[1])
  if not match or family not in TPU_VERSIONS:
    raise AcceleratorError(
        f"--tpu={name!r}: expected <version>-<size> with version one of "
        f"{sorted(TPU_VERSIONS) + sorted(TPU_ALIASES)}, e.g. v4-8, "
        "v5litepod-16")
  version = TPU_VERSIONS[family]
  size = int(match[2])
  if size % version.cores_per_chip:
    raise AcceleratorError(f"--tpu={name}: {family} sizes count "
                           f"TensorCores, {version.cores_per_chip} per chip")
  chips = size // version.cores_per_chip
  if topology is None:
    topology = (_default_topology(chips, version.dims) if chips > 1 else
                "x".join(["1"] * version.dims))
  if not re.fullmatch(r"\d+(x\d+)+", topology):
    raise AcceleratorError(f"--tpu_topology={topology!r}: expected e.g. 2x2x1"
                           " or 4x4")
  sides = [int(s) for s in topology.split("x")]
  if len(sides) != version.dims or math.prod(sides) != chips:
    raise AcceleratorError(
        f"--tpu_topology={topology} does not describe --tpu={name} "
        f"({chips} chips, {version.dims} dimensions)")
  hosts = (1 if chips in version.single_host_chips else
           max(1, chips // version.chips_per_host))
  return Accelerator("tpu", name, family, chips, hosts, topology)


def parse_gpu(gpu_type: str, gpu_count: int | None) -> Accelerator:
  """`--gpu_type` and `--gpu_count` as an `Accelerator` (8 GPUs per host
  at most; larger counts are several hosts of 8)."""
  family = (gpu_type or "").lower()
  if family not in GPU_TYPES:
    raise AcceleratorError(f"--gpu_type={gpu_type!r}: expected one of "
                           f"{sorted(GPU_TYPES)}")
  if gpu_count is None or gpu_count < 1:
    raise AcceleratorError(f"--gpu_count={gpu_count!r}: give a positive "
                           f"number of GPUs with --gpu_type={gpu_type}")
  per_host = max(GPU_TYPES[family].machines)
  if gpu_count <= per_host:
    if gpu_count not in GPU_TYPES[family].machines:
      raise AcceleratorError(
          f"--gpu_count={gpu_count}: {family} hosts come with "
          f"{sorted(GPU_TYPES[family].machines)} GPUs")
    per_host = gpu_count
  elif gpu_count % per_host:
    raise AcceleratorError(f"--gpu_count={gpu_count}: more than {per_host} "
                           f"{family} GPUs must be a multiple of {per_host}")
  hosts = gpu_count // per_host
  return Accelerator("gpu", family, family, gpu_count, hosts,
                     f"{per_host}x{hosts}")


def from_flags(tpu: str | None = None, tpu_topology: str | None = None,
               gpu_type: str | None = None,
               gpu_count: int | None = None) -> Accelerator:
  """Exactly one of `--tpu` and `--gpu_type`, as an `Accelerator`."""
  if tpu and gpu_type:
    raise AcceleratorError(f"give one accelerator: --tpu={tpu} and "
                           f"--gpu_type={gpu_type} were both set")
  if tpu:
    return parse_tpu(tpu, tpu_topology)
  if gpu_type:
    if tpu_topology:
      raise AcceleratorError("--tpu_topology needs --tpu")
    return parse_gpu(gpu_type, gpu_count)
  raise AcceleratorError(
      "an accelerator is required: --tpu=<type> (e.g. v4-8, v5litepod-16) "
      "or --gpu_type=<type> --gpu_count=<n> (e.g. h100, 8)")
