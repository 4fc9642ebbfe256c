"""One module per `rt-decoder` sub-command (see rt_decoder/cli.py)."""
