"""The stages of `sera specialize`, in order (run.STAGES); each module's `run(run)` does one."""
