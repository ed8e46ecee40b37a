"""Command line: a thin shell over library functions; heavy imports happen only inside sub-commands."""
