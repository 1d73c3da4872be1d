"""Training stages: each is `run_<stage>(config, general, ...) -> result` on plain parameter objects."""
