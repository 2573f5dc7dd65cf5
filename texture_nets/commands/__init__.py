"""One module per sub-command; texture_nets.cli discovers them (see its docstring)."""
