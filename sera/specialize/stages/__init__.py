"""The stages of `sera specialize`, in order (run.PIPELINE); each module's `run(run)` does one."""
