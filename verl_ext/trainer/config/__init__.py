"""Hydra configs of the self_distill trainer mode (a package so that Hydra finds pkg://verl_ext.trainer.config)."""
