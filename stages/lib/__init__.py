"""The library the commands in stages/ are built from. It never imports a command."""
