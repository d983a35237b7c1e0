"""XManager launcher for ttcjax entry points (not in the installed package).

Pure argv / sweep / accelerator logic lives in `argv`, `sweeps` and
`accelerators`; `xm_launch` is the command line and the only place that
imports xmanager; `entrypoint` runs inside the job's container.
"""
